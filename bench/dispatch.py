#!/usr/bin/env python3
"""Dispatch latency and throughput with real pilot processes.

1. Latency: with P idle pilots waiting (P = 1, 16, 160), define jobs one at a time and measure
   job defined (server clock) -> payload started (pilot clock; same machine): p50, p99.
2. Throughput: 16 pilots run N no-op jobs (/bin/true); jobs finished per second, and the CPU
   milliseconds per job of the server, of the pilot processes themselves (their own user+system
   time, without the payloads: ``pilots_cpu_ms_per_job``) and of the pilots with their reaped
   payloads (``pilots_with_payloads_cpu_ms_per_job``). bench/floor.py prints what this machine
   could reach with no p3s work at all.
3. Bulk creation: N jobs in one POST to an idle server (no pilots), repeated; per job, the CPU time
   of the server's event-loop thread (``loop_cpu_ms_per_job``: what holds every other request up),
   of the whole server process (with work handed to other threads) and the wall time; with
   ``--large`` also once the store holds 10^5 jobs (insert cost grows with the collection).

Prints one JSON line per case. Usage: bench/dispatch.py [--quick] [--db mongodb://…] [--case bulk --large --profile FILE]
"""
from __future__ import annotations

import argparse
import datetime as dt
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

import psutil  # noqa: E402

from p3s.cli.common import stop_processes  # noqa: E402
from p3s.pilot.client import Client  # noqa: E402


def start_server(tmp: Path, db: str, profile: str = "") -> tuple[subprocess.Popen, str]:
    """A server on a free port; with ``profile``, its loop thread's CPU time is profiled (cProfile
    timed by ``time.thread_time``), the statistics written to that file when it stops."""
    python = [sys.executable, "-c", _PROFILED, profile] if profile else [sys.executable, "-m", "p3s.cli.server"]
    args = [*python, "--port", "0", "--data-dir", str(tmp / "data"), "--no-auth",
            "--log-level", "WARNING"]
    if db:
        args += ["--db", db]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    return proc, line.strip().rsplit(" ", 1)[-1]


_PROFILED = """
import cProfile, runpy, sys, time
out = sys.argv.pop(1)
profiler = cProfile.Profile(time.thread_time)
sys.argv[0] = "p3s.cli.server"
profiler.enable()
try:
    runpy.run_module("p3s.cli.server", run_name="__main__", alter_sys=True)
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def start_pilots(url: str, count: int, tmp: Path) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    return [subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", url, "-c", "0", "-p", "30", "-b", "5",
                              "-v", "0", "--logdir", str(tmp / "log"), "--joblogdir", str(tmp / "jobs"), "--workdir", str(tmp / "work")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.rstrip("Z"))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def latency_case(pilots: int, jobs: int, db: str) -> dict:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        server, url = start_server(tmp, db)
        client = Client(url)
        procs = start_pilots(url, pilots, tmp)
        try:
            wait_until(lambda: client.summary()["queue"]["waiting_pilots"] == pilots, 120)
            uuids = []
            for _ in range(jobs):
                uuids.append(client.create_jobs([{"payload": "/bin/true", "jobtype": "bench"}])[0]["uuid"])
                time.sleep(0.05)       # one at a time, each meeting waiting pilots
            wait_until(lambda: client.summary()["jobs"]["finished"] == jobs, 120)
            waits = []
            for job_id in uuids:
                job = client.get("jobs", job_id)
                waits.append((parse(job["ts_sta"]) - parse(job["ts_def"])).total_seconds() * 1000)
        finally:
            stop_processes(procs)
            stop_processes([server])
    return {"case": "latency", "pilots": pilots, "jobs": jobs, "p50_ms": round(pct(waits, 0.5), 1),
            "p99_ms": round(pct(waits, 0.99), 1), "max_ms": round(max(waits), 1),
            "mean_ms": round(statistics.mean(waits), 1)}


def throughput_case(pilots: int, jobs: int, db: str) -> dict:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        server, url = start_server(tmp, db)
        client = Client(url, timeout=120)
        procs = start_pilots(url, pilots, tmp)
        try:
            wait_until(lambda: client.summary()["queue"]["waiting_pilots"] == pilots, 120)
            server_cpu, pilots_cpu, with_payloads = _cpu([server]), _cpu(procs, False), _cpu(procs)
            started = time.monotonic()
            for first in range(0, jobs, 5000):
                client.create_jobs([{"payload": "/bin/true", "jobtype": "noop"}
                                    for _ in range(min(5000, jobs - first))])
            wait_until(lambda: client.summary()["jobs"]["finished"] == jobs, 600)
            seconds = time.monotonic() - started
            server_cpu, pilots_cpu, with_payloads = (_cpu([server]) - server_cpu, _cpu(procs, False) - pilots_cpu,
                                                     _cpu(procs) - with_payloads)
        finally:
            stop_processes(procs)
            stop_processes([server])
    return {"case": "throughput", "pilots": pilots, "jobs": jobs, "seconds": round(seconds, 2),
            "jobs_per_s": round(jobs / seconds, 1), "server_cpu_ms_per_job": round(server_cpu * 1000 / jobs, 2),
            "pilots_cpu_ms_per_job": round(pilots_cpu * 1000 / jobs, 2),
            "pilots_with_payloads_cpu_ms_per_job": round(with_payloads * 1000 / jobs, 2)}


def bulk_case(jobs: int, rounds: int, db: str, existing: tuple[int, ...] = (0,), profile: str = "",
              random_ids: bool = False) -> list[dict]:
    """One line per collection size in ``existing``: the server is filled to that many jobs, then
    ``rounds`` requests of ``jobs`` jobs each are timed. ``loop_cpu_ms_per_job`` is the CPU time of
    the event-loop thread (the main thread) per job, ``server_cpu_ms_per_job`` the whole process's
    (the loop, and any work handed to other threads); medians of the rounds. ``random_ids``: the
    measured jobs get random (version 4) uuids of the client's choosing instead of the client
    library's time-ordered ones."""
    lines = []
    with tempfile.TemporaryDirectory() as tmpdir:
        server, url = start_server(Path(tmpdir), db, profile)
        client = Client(url, timeout=600)
        try:
            client.summary()
            made = 0
            for size in existing:
                while made < size:
                    count = min(10000, size - made)
                    client.create_jobs([{"payload": "/bin/true", "jobtype": "fill"} for _ in range(count)])
                    made += count
                cpu, loop, wall = [], [], []
                since = time.time()
                for _ in range(rounds):
                    body = [{"payload": "/bin/true", "jobtype": "bulk",
                             **({"uuid": str(uuid.uuid4())} if random_ids else {})} for _ in range(jobs)]
                    before, before_loop, started = _cpu([server], False), _loop_cpu(server), time.monotonic()
                    client.create_jobs(body)
                    wall.append((time.monotonic() - started) * 1000 / jobs)
                    cpu.append((_cpu([server], False) - before) * 1000 / jobs)
                    loop.append((_loop_cpu(server) - before_loop) * 1000 / jobs)
                    made += jobs
                lines.append({"case": "bulk", "jobs": jobs, "rounds": rounds, "existing": size,
                              **({"ids": "random"} if random_ids else {}),
                              "loop_cpu_ms_per_job": round(statistics.median(loop), 4),
                              "server_cpu_ms_per_job": round(statistics.median(cpu), 4),
                              "wall_ms_per_job": round(statistics.median(wall), 4),
                              "loop_stall_max_ms": _longest_stall(client, since)})
        finally:
            stop_processes([server])
    return lines


def _longest_stall(client: Client, since: float) -> float:
    """The longest time the server's loop answered nobody since ``since`` (its own p3s.loopwatch,
    which notes stalls of 20 ms or more): how long a claim may have waited behind the creation."""
    stalls = client.summary()["server"]["loop"]["stalls"]
    return max((late for at, late, _cpu in stalls if at >= since), default=0.0)


def _loop_cpu(proc: subprocess.Popen) -> float:
    """CPU seconds used so far by the server's event-loop thread (its main thread: thread id = pid)."""
    for thread in psutil.Process(proc.pid).threads():
        if thread.id == proc.pid:
            return thread.user_time + thread.system_time
    raise RuntimeError("the server's main thread is gone")


def _cpu(procs: list[subprocess.Popen], children: bool = True) -> float:
    """CPU seconds used so far by these processes, with their reaped children (payloads) or not."""
    total = 0.0
    for proc in procs:
        times = psutil.Process(proc.pid).cpu_times()
        total += times.user + times.system
        if children:
            total += times.children_user + times.children_system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer pilots and jobs")
    parser.add_argument("--db", default="", help="MongoDB URI (default: the embedded store)")
    parser.add_argument("--case", choices=("all", "latency", "throughput", "bulk"), default="all")
    parser.add_argument("--large", action="store_true",
                        help="bulk: also measure after filling the store with 10^5 jobs (--quick: 2x10^4)")
    parser.add_argument("--random-ids", action="store_true",
                        help="bulk: the measured jobs carry random uuids of their own (not time-ordered)")
    parser.add_argument("--profile", default="", metavar="FILE",
                        help="bulk: run the server under cProfile, its statistics written to FILE")
    args = parser.parse_args()
    if args.case in ("all", "latency"):
        for pilots in (1, 16) if args.quick else (1, 16, 160):
            print(json.dumps(latency_case(pilots, 50 if args.quick else 200, args.db)), flush=True)
    if args.case in ("all", "throughput"):
        print(json.dumps(throughput_case(16, 1000 if args.quick else 5000, args.db)), flush=True)
    if args.case in ("all", "bulk"):
        sizes = (0, 20000) if args.quick else (0, 100000)
        for line in bulk_case(2000, 3 if args.quick else 5, args.db, sizes if args.large else (0,), args.profile,
                              args.random_ids):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
