#!/usr/bin/env python3
"""Benchmark the control room's reads: the alarm check, the errors view, the hosts view.

Starts a fresh ``p3s-server`` (temporary data dir, no auth), lets N jobs end unsuccessfully (and
some finish) over H hosts and T job types through the pilot protocol, then times, from the client,
``GET /alarms`` (every rule runs), ``GET /errors`` grouped three ways, and ``GET /hosts``; each
request R times, reporting the median and the maximum. One JSON line per case on stdout.

Usage:  .venv/bin/python bench/control.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from p3s.pilot.client import Client  # noqa: E402

FULL = [(2000, 20, 10), (10000, 100, 50)]
QUICK = [(1000, 10, 5)]
REPEAT = 20


def serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    proc = subprocess.Popen([sys.executable, "-m", "p3s.cli.server", "--port", "0", "--no-auth", "--data-dir",
                             str(data_dir), "--log-level", "WARNING"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**env, "P3S_BLACKHOLE_JOBS": "0"})
    line = proc.stdout.readline()
    return proc, line.strip().rsplit(" ", 1)[-1]


def timed(client: Client, path: str) -> dict:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        client.call("GET", path)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def case(jobs: int, hosts: int, types: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="p3s-bench-control-") as tmp:
        proc, url = serve(Path(tmp))
        try:
            client = Client(url, None)
            for start in range(0, jobs, 5000):
                client.create_jobs([{"payload": "x", "jobtype": f"type{i % types}", "name": f"j{i}"}
                                    for i in range(start, min(jobs, start + 5000))])
            pilots = [client.register_pilot(host=f"wn{h:03d}", site="bench", pid=1, extra="", jobtypes=[],
                                            version="bench")["pilot"]["uuid"] for h in range(hosts)]
            made = time.perf_counter()
            for i in range(jobs):
                pilot = pilots[i % hosts]
                job = client.request_job(pilot, 0)["job"]
                code = 0 if i % 4 == 0 else 1 + i % 3
                client.report(pilot, "jobstop", job=job["uuid"], exit_code=code,
                              stderr_tail=f"processing\nERROR: code {code} on the way\n")
            ended_s = time.perf_counter() - made
            out = {"bench": "control", "jobs": jobs, "hosts": hosts, "types": types,
                   "end_jobs_s": round(ended_s, 1)}
            out["alarms"] = timed(client, "/alarms")
            for by in ("exit_code,host", "error_line", "host"):
                out[f"errors_{by.replace(',', '_')}"] = timed(client, f"/errors?hours=1&by={by}")
            out["hosts_view"] = timed(client, "/hosts")
            return out
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    args = parser.parse_args()
    for jobs, hosts, types in QUICK if args.quick else FULL:
        print(json.dumps(case(jobs, hosts, types)), flush=True)


if __name__ == "__main__":
    main()
