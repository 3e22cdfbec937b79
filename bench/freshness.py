#!/usr/bin/env python3
"""Freshness under overload: two job types sharing local pilots, with the freshness policies on
and off.

- ``evdisp``: priority 10, ETA 30 s, payload ~1 s (sleep 1);
- ``reco``: priority 0, ETA 300 s, payload ~3 s (sleep 3).

Data files arrive (each one job, with its arrival time) for DURATION seconds at about twice what
the pilots can process: RATE × pilots pilot-seconds of work per second, of which EVDISP_SHARE is
evdisp's. With the policies on, evdisp is served newest first, drops stale work and sheds; reco
drops stale work and sheds (lowest priority first). With them off, both types keep their ETA
(so that turnaround is measured against it) and nothing else: first defined first, nothing dropped.

Prints one JSON line per run:
{"policies": "on"|"off", "types": {"evdisp": {"done", "within_eta", "stale", "shed",
"turnaround_p95_s", …}, "reco": {…}}, …}

Usage: bench/freshness.py [--quick] [--pilots 8] [--duration 180] [--rate 2] [--evdisp-share 0.6]
                          [--policies on,off]
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

TYPES = {"evdisp": {"priority": 10, "eta": 30, "seconds": 1}, "reco": {"priority": 0, "eta": 300, "seconds": 3}}
POLICIES = {"on": {"evdisp": {"order": "newest-first", "stale": True, "shed": True},
                   "reco": {"stale": True, "shed": True}},
            "off": {"evdisp": {}, "reco": {}}}


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "p3s.cli.server", "--port", "0", "--data-dir", str(tmp / "data"), "--no-auth",
            "--log-level", "WARNING"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(tmp / "server.log", "w"), text=True, cwd=REPO)
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def start_pilots(url: str, count: int, tmp: Path) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    return [subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", url, "-c", "0", "-p", "10", "-b", "5",
                              "-v", "0", "--logdir", str(tmp / "log"), "--joblogdir", str(tmp / "jobs"), "--workdir", str(tmp / "work"),
                              "-R", str(tmp / "results"), "-H", f"wn{i:02d}"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(count)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(policies: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="p3s-fresh-") as tmpdir:
        tmp = Path(tmpdir)
        server, url = start_server(tmp)
        pilots: list[subprocess.Popen] = []
        try:
            client = Client(url, None, timeout=30, retries=2)
            for name, spec in TYPES.items():
                client.set_jobtype(name, eta=spec["eta"], **POLICIES[policies][name])
            pilots = start_pilots(url, args.pilots, tmp)
            deadline = time.monotonic() + 60
            while client.summary()["pilots"]["idle"] < args.pilots:
                if time.monotonic() > deadline:
                    raise RuntimeError("the pilots did not register")
                time.sleep(0.2)
            # jobs per second of each type: RATE x pilots pilot-seconds of work per second, split by share
            work = args.rate * args.pilots
            rates = {"evdisp": work * args.evdisp_share / TYPES["evdisp"]["seconds"],
                     "reco": work * (1 - args.evdisp_share) / TYPES["reco"]["seconds"]}
            owed = {name: 0.0 for name in TYPES}
            submitted = {name: 0 for name in TYPES}
            shed_at_submit = {name: 0 for name in TYPES}
            start = last = time.monotonic()
            while (now := time.monotonic()) < start + args.duration:
                batch = []
                for name, rate in rates.items():
                    owed[name] += rate * (now - last)
                    while owed[name] >= 1:
                        owed[name] -= 1
                        batch.append({"jobtype": name, "priority": TYPES[name]["priority"], "arrived": time.time(),
                                      "payload": f"sleep {TYPES[name]['seconds']}", "name": f"{name}-{submitted[name]}"})
                        submitted[name] += 1
                last = now
                if batch:
                    for job in client.call("POST", "/jobs", batch)["items"]:
                        shed_at_submit[job["jobtype"]] += job["state"] == "stale"
                time.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
            report = client.call("GET", "/freshness")["types"]
            summary = client.summary()
        finally:
            stop(pilots)
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    out = {}
    for name in TYPES:
        window = report[name]["windows"]["10m"]
        states = summary["jobs_by_type"].get(name, {})
        out[name] = {"submitted": submitted[name], "done": window["done"], "within_eta": window["within_eta"],
                     "share_within_eta": window["share_within_eta"], "stale": window["dropped"]["stale"],
                     "shed": window["dropped"]["shed"], "turnaround_p50_s": window["turnaround_p50_s"],
                     "turnaround_p95_s": window["turnaround_p95_s"],
                     "pending": states.get("defined", 0) + states.get("dispatched", 0) + states.get("running", 0)}
    return {"bench": "freshness", "policies": policies, "pilots": args.pilots, "duration_s": args.duration,
            "rate": args.rate, "evdisp_share": args.evdisp_share, "types": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 s of arrivals instead of 180")
    parser.add_argument("--pilots", type=int, default=8, help="local pilots [8]")
    parser.add_argument("--duration", type=float, default=None, help="seconds of arrivals [180; --quick 60]")
    parser.add_argument("--rate", type=float, default=2.0, help="arriving work / what the pilots can do [2]")
    parser.add_argument("--evdisp-share", type=float, default=0.6, help="evdisp's share of the arriving work [0.6]")
    parser.add_argument("--policies", default="on,off", help="runs to make, in order [on,off]")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 60.0 if args.quick else 180.0
    for policies in args.policies.split(","):
        print(json.dumps(run(policies.strip(), args)), flush=True)


if __name__ == "__main__":
    main()
