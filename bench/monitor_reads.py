#!/usr/bin/env python3
"""What the monitor's history-wide reads cost the server's event loop: ``GET /results/latest``
and ``GET /errors`` with a history of N ended jobs.

Writes N jobs (half finished, half failed, over T job types and 50 hosts, ended over the last
3 hours) into a fresh embedded store, starts a server on it, then times from the client:
``/results/latest`` (the first request, then the median of 10), and ``/errors`` over 18 different
queries (hours 1, 2, 3, 6, 12, 24 × the three groupings: each a new key of the view's cache), and
reports the longest stall of the server's loop (``max_stall_ms``, from /summary) during each.
One JSON line per N. Usage: bench/monitor_reads.py [--quick] (10,000 jobs; else 10,000 and 40,000)
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p3s.pilot.client import Client  # noqa: E402

TYPES = 5
HOSTS = 50


def write_history(data_dir: Path, count: int) -> None:
    """``count`` ended jobs in the embedded store of ``data_dir`` (before the server opens it)."""
    from p3s import models
    from p3s.store import Database

    db = Database("", data_dir, "p3s")
    db.open()
    try:
        now = models.utcnow()
        docs = []
        for i in range(count):
            failed = i % 2 == 1
            docs.append({"_id": str(uuid.uuid4()), "payload": "x", "jobtype": f"type{i % TYPES}", "site": "",
                         "priority": 0, "seq": i + 1, "state": "failed" if failed else "finished", "timelimit": 60,
                         "ts_def": now - _dt.timedelta(hours=3), "attempts": 1, "max_attempts": 1,
                         "ts_sto": now - _dt.timedelta(seconds=3 * 3600 * (count - i) / count),
                         "exit_code": 1 + i % 3 if failed else 0, "host": f"wn{i % HOSTS:03d}", "name": f"j{i}",
                         "stderr_tail": f"processing\nERROR: code {1 + i % 3} on the way\n" if failed else ""})
            if len(docs) == 5000:
                models.Job._get_collection().insert_many(docs)
                docs = []
        if docs:
            models.Job._get_collection().insert_many(docs)
        db.checkpoint()
    finally:
        db.close()


def serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    proc = subprocess.Popen([sys.executable, "-m", "p3s.cli.server", "--port", "0", "--no-auth", "--data-dir",
                             str(data_dir), "--log-level", "WARNING"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=REPO, env=env)
    line = proc.stdout.readline()
    return proc, line.strip().rsplit(" ", 1)[-1]


def max_stall(client: Client, start: float) -> float:
    stalls = client.summary()["server"]["loop"]["stalls"]
    return max([s[1] for s in stalls if s[0] >= start - 1] or [0.0])


def ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def case(count: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="p3s-bench-monitor-") as tmp:
        data = Path(tmp) / "data"
        write_history(data, count)
        proc, url = serve(data)
        try:
            client = Client(url, None)
            client.summary()
            out: dict = {"bench": "monitor_reads", "jobs": count, "types": TYPES}
            began = time.time()
            start = time.perf_counter()
            items = client.call("GET", "/results/latest")["items"]
            out["latest_first_ms"] = ms(start)
            assert len(items) == TYPES, items
            times = []
            for _ in range(10):
                start = time.perf_counter()
                client.call("GET", "/results/latest")
                times.append(ms(start))
            out["latest_median_ms"] = statistics.median(times)
            out["latest_max_stall_ms"] = max_stall(client, began)
            time.sleep(1.5)
            began = time.time()
            times = []
            for hours in (1, 2, 3, 6, 12, 24):
                for by in ("exit_code,host", "error_line", "host"):
                    start = time.perf_counter()
                    client.call("GET", f"/errors?hours={hours}&by={by}")
                    times.append(ms(start))
            out["errors_18_keys_total_ms"] = round(sum(times), 1)
            out["errors_max_ms"] = max(times)
            out["errors_max_stall_ms"] = max_stall(client, began)
            return out
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 jobs only")
    args = parser.parse_args()
    for count in (10000,) if args.quick else (10000, 40000):
        print(json.dumps(case(count)), flush=True)


if __name__ == "__main__":
    main()
