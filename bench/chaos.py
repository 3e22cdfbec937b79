#!/usr/bin/env python3
"""Chaos: does exactly-once survive kill -9 of the server and of pilots?

A server (embedded store unless --db), 8 real pilots and 2,000 short jobs. The server is killed
with SIGKILL N times (default 10) at random moments while jobs flow, and restarted at once on the
same port and data; two pilots are killed with SIGKILL along the way. Every payload appends its
job's uuid to a file when it completes. When every job has ended (or after --settle seconds of no
progress), prints one JSON line:

- ``run_twice``: jobs whose payload completed more than once;
- ``never_ended``: jobs not in an end state; ``stuck``: of those, the ones dispatched or running;
- ``lost_results``: jobs whose payload completed but which did not end ``finished``;
- ``max_recovery_s``: the longest time from a kill to the next job ended after it.

Usage: bench/chaos.py [--kills N] [--jobs N] [--quick] [--db mongodb://…] [--seed S]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p3s.pilot.client import Client, P3SError  # noqa: E402
from p3s.cli.common import stop_processes  # noqa: E402

ENDED = {"finished", "failed", "timelimit", "pilot_lost", "killed", "nonstarter", "cancelled"}
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, db: str, port: int) -> None:
        self.tmp, self.db, self.port = tmp, db, port
        self.config = tmp / "p3s.yaml"
        self.config.write_text("pilot_lost_timeout: 15\nreaper_period: 1\nheartbeat: 2\ndispatch_timeout: 20\n"
                               "long_poll_max: 5\nlong_poll_wait: 2\ncheckpoint_period: 1\n")
        self.proc: subprocess.Popen | None = None
        self.log = open(tmp / "server.log", "a")

    def start(self) -> None:
        args = [sys.executable, "-m", "p3s.cli.server", "--port", str(self.port), "--data-dir",
                str(self.tmp / "data"), "--no-auth", "--log-level", "WARNING", "--config", str(self.config)]
        if self.db:
            args += ["--db", self.db]
        for _ in range(50):
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO,
                                         env=CLEAN_ENV)
            if "listening on" in (self.proc.stdout.readline() or ""):
                return
            self.proc.wait(10)
            time.sleep(0.2)                  # e.g. the port not yet free
        raise RuntimeError("the server does not start; see server.log")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_pilot(url: str, tmp: Path, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", url, "-c", "0", "-p", "2", "-b", "2",
                             "--outage", "900", "--grace", "1", "--logdir", str(tmp / "log"), "--joblogdir", str(tmp / "jobs"),
                             "--workdir", str(tmp / "work")], env=CLEAN_ENV, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / f"pilot{n}.log", "w"))


def count_ended(client: Client) -> int | None:
    try:
        jobs = client.summary()["jobs"]
    except P3SError:
        return None
    return sum(n for state, n in jobs.items() if state in ENDED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="server kills (default 10)")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--pilots", type=int, default=8)
    parser.add_argument("--settle", type=float, default=120, help="give up after this long without progress")
    parser.add_argument("--quick", action="store_true", help="400 jobs, 4 kills")
    parser.add_argument("--db", default="")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.kills = 400, 4
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="p3s-chaos-") as name:
        tmp = Path(name)
        runs = tmp / "runs.txt"
        server = Server(tmp, args.db, free_port())
        server.start()
        url = f"http://127.0.0.1:{server.port}"
        client = Client(url, timeout=30, retries=0)
        pilots = [start_pilot(url, tmp, n) for n in range(args.pilots)]
        began = time.monotonic()
        try:
            payload = f'sleep 0.{rng.randint(1, 3)}; echo "$P3S_JOB_UUID" >> {runs}'
            jobs = [{"payload": payload, "env": {"P3S_EXECMODE": "1"}, "name": f"chaos{i}"} for i in range(args.jobs)]
            uuids = [j["uuid"] for j in client.create_jobs(jobs)]
            # Kill moments: when this many jobs have ended, plus a random delay (spread over the run).
            targets = sorted(rng.sample(range(int(args.jobs * 0.05), int(args.jobs * 0.9)), args.kills))
            pilot_kills = {targets[len(targets) // 3] if targets else 0, targets[2 * len(targets) // 3] if targets else 0}
            recoveries: list[float] = []
            killed_at: float | None = None
            ended_at_kill = 0
            last_progress, last_ended = time.monotonic(), -1
            pilots_killed = 0
            while True:
                ended = count_ended(client)
                now = time.monotonic()
                if ended is not None:
                    if killed_at is not None and ended > ended_at_kill:
                        recoveries.append(now - killed_at)
                        killed_at = None
                    if ended != last_ended:
                        last_ended, last_progress = ended, now
                    if ended >= args.jobs:
                        break
                    if targets and ended >= targets[0]:
                        target = targets.pop(0)
                        time.sleep(rng.uniform(0, 0.5))
                        if target in pilot_kills and pilots_killed < 2:
                            victim = rng.choice([p for p in pilots if p.poll() is None])
                            victim.send_signal(signal.SIGKILL)
                            pilots_killed += 1
                        ended_at_kill = count_ended(client) or ended
                        server.kill()
                        killed_at = time.monotonic()
                        server.start()
                        continue
                if now - last_progress > args.settle:
                    break
                time.sleep(0.2)
            final = {j["uuid"]: j for j in client.list_all("jobs", name="", page=1000)}
            completed = collections.Counter(runs.read_text().split()) if runs.exists() else collections.Counter()
            states = collections.Counter(final[u]["state"] for u in uuids if u in final)
            never = [u for u in uuids if final.get(u, {}).get("state") not in ENDED]
            print(json.dumps({
                "jobs": args.jobs, "kills": args.kills, "pilot_kills": pilots_killed,
                "run_twice": sum(1 for u in uuids if completed[u] > 1),
                "never_ended": len(never),
                "stuck": sum(1 for u in never if final.get(u, {}).get("state") in ("dispatched", "running")),
                "lost_results": sum(1 for u in uuids if completed[u] and final.get(u, {}).get("state") != "finished"),
                "max_recovery_s": round(max(recoveries, default=0.0), 2),
                "seconds": round(time.monotonic() - began, 1), "states": dict(states)}), flush=True)
        finally:
            stop_processes(pilots)
            server.stop()


if __name__ == "__main__":
    main()
