#!/usr/bin/env python3
"""Benchmark what the kept figures cost a start on the embedded store: after a clean stop (the
counters and statistics are read back) and after a kill (the counters are counted in one walk of
the jobs, which also picks out the jobs the statistics recount since their last save).

Fills a temporary embedded store with N ended jobs, then times ``kept.load_counters`` and
``kept.load_stats`` as a start does, R times each way. One JSON line per case on stdout.

Usage:  .venv/bin/python bench/kept.py [--quick] [--jobs N]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from p3s import kept, models  # noqa: E402
from p3s.lifecycle import Lifecycle  # noqa: E402
from p3s.store import Database  # noqa: E402
from p3s.web.stats import Stats  # noqa: E402


def fill(n: int) -> None:
    now = dt.datetime.utcnow()
    for first in range(0, n, 5000):
        models.Job._get_collection().insert_many([
            {"_id": f"j{i}", "jobtype": f"t{i % 10}", "state": "failed" if i % 7 == 0 else "finished",
             "payload": "x" * 200, "ts_def": now - dt.timedelta(seconds=n - i),
             "ts_sta": now - dt.timedelta(seconds=n - i), "ts_sto": now - dt.timedelta(seconds=n - i)}
            for i in range(first, min(n, first + 5000))])


def start(killed: bool) -> tuple[float, str, str]:
    """One start's reading of the kept figures; ``killed``: as after a kill -9 (10 s after a save)."""
    kept.kept_collection().replace_one({"_id": "counters"}, {"_id": "counters", "clean": False}, upsert=True)
    if not killed:
        kept.save_counters(Lifecycle().counters)
    kept.kept_collection().update_one({"_id": "stats"}, {"$set": {"saved": time.time() - 10, "clean": not killed}})
    began = time.perf_counter()
    counters = kept.load_counters(Lifecycle().counters)
    stats = kept.load_stats(Stats())
    return time.perf_counter() - began, counters, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^4 jobs, 3 repeats")
    parser.add_argument("--jobs", type=int, help="jobs in the store [default 10^5, --quick 10^4]")
    args = parser.parse_args()
    n, repeat = args.jobs or (10_000 if args.quick else 100_000), 3 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        db = Database("", Path(tmp), "p3s_bench")
        db.open()
        try:
            fill(n)
            kept.load_stats(Stats())                  # the first start: counted once, then kept
            for killed in (False, True):
                times = [start(killed) for _ in range(repeat)]
                print(json.dumps({"bench": "kept_start", "jobs": n, "after": "kill" if killed else "clean stop",
                                  "counters": times[0][1], "statistics": times[0][2],
                                  "median_s": round(statistics.median(t for t, _, _ in times), 3),
                                  "max_s": round(max(t for t, _, _ in times), 3)}), flush=True)
        finally:
            db.close()


if __name__ == "__main__":
    main()
