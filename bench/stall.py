#!/usr/bin/env python3
"""Does the server's event loop stall during bulk operations?

Starts a server (embedded store unless --db), four pilots kept busy with long jobs and a short
pilot_lost_timeout, then: submits N jobs in one POST (default 10,000), and deletes M jobs with
one DELETE (default 40,000, created beforehand in POSTs of 10,000). For each, prints one JSON line:
the wall time, the longest lateness of the server's loop watch during it (``max_stall_ms``, from
/summary), the most CPU time the loop used within one stall (``max_stall_cpu_ms``: a stall much
longer than its CPU time is the machine's load, not the server's work) and the pilots declared
lost. Usage: bench/stall.py [--quick] [--db mongodb://…]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p3s.pilot.client import Client  # noqa: E402
from p3s.cli.common import stop_processes  # noqa: E402


def start_server(tmp: Path, db: str, lost_timeout: int) -> tuple[subprocess.Popen, str]:
    config = tmp / "p3s.yaml"
    config.write_text(f"pilot_lost_timeout: {lost_timeout}\nreaper_period: 1\nheartbeat: 1\n")
    args = [sys.executable, "-m", "p3s.cli.server", "--port", "0", "--data-dir", str(tmp / "data"), "--no-auth",
            "--log-level", "WARNING", "--config", str(config)]
    if db:
        args += ["--db", db]
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    line = proc.stdout.readline()
    return proc, line.strip().rsplit(" ", 1)[-1]


def start_pilots(url: str, count: int, tmp: Path) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    return [subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", url, "-c", "0", "-p", "5", "-b", "1",
                              "--jobtypes", "busy", "--logdir", str(tmp / "log"), "--joblogdir", str(tmp / "jobs"),
                              "--workdir", str(tmp / "work")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(count)]


def stalls_between(client: Client, start: float, end: float) -> dict:
    """The longest stall between ``start`` and ``end``, and the most CPU the loop used in a stall
    (a stall with little CPU is the machine's: the server was not scheduled)."""
    loop = client.summary()["server"]["loop"]
    stalls = [s for s in loop["stalls"] if start - 1 <= s[0] <= end]
    return {"max_stall_ms": max([s[1] for s in stalls] or [0.0]),
            "max_stall_cpu_ms": max([s[2] for s in stalls] or [0.0])}


def jobs(n: int, jobtype: str = "bulk") -> list[dict]:
    return [{"payload": "true", "jobtype": jobtype, "state": "template", "name": f"j{i}"} for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 and 8,000 jobs")
    parser.add_argument("--submit", type=int, default=10000)
    parser.add_argument("--delete", type=int, default=40000)
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    if args.quick:
        args.submit, args.delete = 2000, 8000
    with tempfile.TemporaryDirectory(prefix="p3s-stall-") as tmp:
        server, url = start_server(Path(tmp), args.db, lost_timeout=5)
        client = Client(url, timeout=600, retries=0)
        pilots = start_pilots(url, 4, Path(tmp))
        try:
            client.call("POST", "/jobs", [{"payload": "sleep 3600", "jobtype": "busy"} for _ in range(4)])
            deadline = time.time() + 60
            while client.summary()["jobs"]["running"] < 4 and time.time() < deadline:
                time.sleep(0.5)
            started = time.time()
            client.call("POST", "/jobs", jobs(args.submit))
            ended = time.time()
            lost = client.summary()["pilots"]["lost"]
            print(json.dumps({"case": "submit", "jobs": args.submit, "seconds": round(ended - started, 2),
                              **stalls_between(client, started, ended), "pilots_lost": lost}),
                  flush=True)
            for offset in range(0, args.delete - args.submit, 10000):
                client.call("POST", "/jobs", jobs(min(10000, args.delete - args.submit - offset)))
            time.sleep(2)
            started = time.time()
            deleted = client.call("DELETE", "/jobs", query={"jobtype": "bulk"})["deleted"]
            ended = time.time()
            time.sleep(2)
            lost = client.summary()["pilots"]["lost"]
            print(json.dumps({"case": "delete", "jobs": len(deleted), "seconds": round(ended - started, 2),
                              **stalls_between(client, started, ended), "pilots_lost": lost}),
                  flush=True)
        finally:
            stop_processes(pilots)
            server.send_signal(signal.SIGTERM)
            server.wait(60)


if __name__ == "__main__":
    main()
