#!/usr/bin/env python3
"""What a heartbeat of a running job costs the server: CPU time per heartbeat and job writes.

A fresh ``p3s-server`` (temporary data dir, or ``--db mongodb://…``) is started; ``--pilots``
pilots register, each claims a job and reports it started, then each sends heartbeats with a usage
sample (``POST /pilots/{uuid}/events``, event ``heartbeat``, as a pilot does every ``BEAT``
seconds) over a kept-alive connection for ``--seconds``. The server's CPU time (user + system,
from the kernel: the machine may be shared, wall time would not say much) is read before and after
the heartbeats. Prints one JSON line: heartbeats sent, heartbeats/s, server CPU ms per heartbeat,
and the job usage writes counted on /metrics (``null`` on a server that does not count them).

Usage: bench/heartbeats.py [--pilots N] [--seconds S] [--db URI] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from p3s.pilot.client import Client

ADMIN = "bench-admin-token-0123456789"


def start_server(tmp: Path, db: str) -> tuple[subprocess.Popen, str]:
    config = tmp / "p3s.yaml"
    config.write_text(json.dumps({"data_dir": str(tmp / "data"), "db": db, "log_level": "WARNING",
                                  "pilot_lost_timeout": 600,
                                  "tokens": [{"token": ADMIN, "role": "admin", "name": "admin"}]}))
    args = [sys.executable, "-m", "p3s.cli.server", "--config", str(config), "--port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    return proc, proc.stdout.readline().strip().rsplit(" ", 1)[-1]


def usage_writes(url: str) -> float | None:
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("p3s_job_usage_writes_total "):
                return float(line.split()[1])
    return None


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def run(pilots: int, seconds: float, db: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp), db)
        try:
            admin = Client(url, ADMIN, retries=0)
            admin.call("POST", "/jobs", [{"payload": "/bin/true", "jobtype": "bench"} for _ in range(pilots)])
            held = []
            for i in range(pilots):
                uuid = admin.register_pilot(host=f"bench{i}")["pilot"]["uuid"]
                job = admin.request_job(uuid, 0)["job"]
                admin.report(uuid, "jobstart", job=job["uuid"], pid=1000 + i, ts=time.time())
                held.append((uuid, job["uuid"], Client(url, ADMIN, retries=0)))
            counts = [0] * pilots
            server = psutil.Process(proc.pid)
            writes_before, cpu_before = usage_writes(url), cpu_seconds(server)
            deadline = time.monotonic() + seconds

            def beat(i: int) -> None:
                uuid, job, client = held[i]
                while time.monotonic() < deadline:
                    client.report(uuid, "heartbeat", job=job, ts=time.time(),
                                  usage={"cpu_percent": 99.0, "rss": 200_000_000 + counts[i], "nprocs": 1,
                                         "threads": 2, "cpu_time": counts[i] * 0.1})
                    counts[i] += 1

            threads = [threading.Thread(target=beat, args=(i,)) for i in range(pilots)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            cpu = cpu_seconds(server) - cpu_before
            writes_after = usage_writes(url)
            beats = sum(counts)
            writes = None if writes_after is None else writes_after - (writes_before or 0)
            return {"bench": "heartbeats", "store": "mongodb" if db else "embedded", "pilots": pilots,
                    "seconds": seconds, "heartbeats": beats, "heartbeats_per_s": round(beats / seconds, 1),
                    "server_cpu_ms_per_heartbeat": round(cpu * 1000 / beats, 3) if beats else None,
                    "job_usage_writes": writes}
        finally:
            proc.terminate()
            proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pilots", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--db", default="", help="MongoDB URI (default: the embedded store)")
    parser.add_argument("--quick", action="store_true", help="2 seconds")
    args = parser.parse_args()
    print(json.dumps(run(args.pilots, 2.0 if args.quick else args.seconds, args.db)), flush=True)


if __name__ == "__main__":
    main()
