#!/usr/bin/env python3
"""Benchmark the MongoDB path against the suite's wire-protocol server (tests/wire_server.py).

Cases, one JSON line each on stdout:

- ``claims``: S servers on one database, J jobs, P pilots split over the servers claiming
  concurrently until the queue is empty: jobs per second, duplicates (must be 0), and how many
  each server handed out.
- ``stall``: one server, P pilots in long polls, the database paused (SIGSTOP) for D seconds:
  the latency of /status while it is paused (p50, max), how many of the answers said
  ``unreachable``, and how many pilots were declared lost (must be 0).

The wire server keeps one lock per database, so ``claims`` measures p3s's path (HTTP, greenlet,
pool, pymongo) over a serialising store, not what a real MongoDB replica set would give.

Usage:  .venv/bin/python bench/mongo.py [--quick]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import ServerProcess, WireServer  # noqa: E402


def start_servers(tmp: Path, uri: str, count: int, **settings) -> list[ServerProcess]:
    servers = []
    for i in range(count):
        servers.append(ServerProcess(tmp / f"s{i}", {"sync_period": 0.5, "pilot_lost_timeout": 120,
                                                     "log_level": "INFO", **settings}, auth=False, db=uri).start())
    return servers


def claims(tmp: Path, wire: WireServer, servers_n: int, jobs: int, pilots_n: int) -> dict:
    servers = start_servers(tmp / f"claims{servers_n}", f"{wire.uri}/bench_claims_{servers_n}", servers_n)
    try:
        servers[0].submit(*({"payload": str(i)} for i in range(jobs)))
        for server in servers:
            server.wait_for(lambda s=server: s.ok("GET", "/summary")["queue"]["ready"] == jobs, timeout=60)
        pilots = [(servers[i % servers_n], servers[i % servers_n].register(host=f"h{i}")) for i in range(pilots_n)]

        def run(pair) -> list[tuple[int, str]]:
            server, pilot = pair
            got, report = [], None
            while True:
                body = {"wait": 0}
                if report:
                    body["report"] = {"event": "jobstop", "job": report, "exit_code": 0}
                job = server.ok("POST", f"/pilots/{pilot}/request", body)["job"]
                if not job:
                    return got
                got.append((servers.index(server), job["uuid"]))
                report = job["uuid"]

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(pilots_n) as pool:
            handed = [j for part in pool.map(run, pilots) for j in part]
        seconds = time.monotonic() - started
        uuids = [u for _, u in handed]
        return {"case": "claims", "servers": servers_n, "jobs": jobs, "pilots": pilots_n,
                "seconds": round(seconds, 2), "jobs_per_s": round(len(uuids) / seconds, 1),
                "handed_out": len(uuids), "duplicates": len(uuids) - len(set(uuids)),
                "per_server": [sum(1 for s, _ in handed if s == i) for i in range(servers_n)]}
    finally:
        for server in servers:
            server.stop()


def stall(tmp: Path, wire: WireServer, pilots_n: int, pause: float) -> dict:
    server = start_servers(tmp / "stall", f"{wire.uri}/bench_stall", 1, pilot_lost_timeout=3, reaper_period=1)[0]
    stop = threading.Event()
    try:
        pilots = [server.register(host=f"h{i}") for i in range(pilots_n)]

        def loop(uuid: str) -> None:
            while not stop.is_set():
                server.call("POST", f"/pilots/{uuid}/request", {"wait": 2}, timeout=60)

        threads = [threading.Thread(target=loop, args=(p,), daemon=True) for p in pilots]
        for thread in threads:
            thread.start()
        time.sleep(1)
        latencies, unreachable = [], 0
        wire.pause()
        try:
            until = time.monotonic() + pause
            while time.monotonic() < until:
                sent = time.monotonic()
                reply = server.call("GET", "/status", timeout=30)
                latencies.append(time.monotonic() - sent)
                unreachable += reply.body["database_state"]["state"] == "unreachable"
                time.sleep(0.2)
        finally:
            wire.resume()
        time.sleep(3 + 4)                  # the lost timeout and a few reaper rounds after the pause
        stop.set()
        for thread in threads:
            thread.join(60)
        lost = sum(server.ok("GET", f"/pilots/{p}")["state"] == "lost" for p in pilots)
        return {"case": "stall", "pilots": pilots_n, "paused_s": pause, "status_calls": len(latencies),
                "status_p50_ms": round(statistics.median(latencies) * 1000, 1),
                "status_max_ms": round(max(latencies) * 1000, 1), "said_unreachable": unreachable,
                "pilots_lost": lost}
    finally:
        stop.set()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cases only")
    args = parser.parse_args()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="p3s-bench-mongo-"))
    wire = WireServer().start()
    failed = False
    try:
        cases = [(1, 200, 20), (2, 200, 20)] if args.quick else [(1, 1000, 50), (2, 1000, 50), (3, 1000, 60)]
        for servers_n, jobs, pilots_n in cases:
            line = claims(tmp, wire, servers_n, jobs, pilots_n)
            failed |= line["duplicates"] != 0 or line["handed_out"] != jobs
            print(json.dumps(line), flush=True)
        line = stall(tmp, wire, 10 if args.quick else 50, 5.0)
        failed |= line["pilots_lost"] != 0
        print(json.dumps(line), flush=True)
    finally:
        wire.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
