#!/usr/bin/env python3
"""Freshness under overload: two job types sharing local pilots, with the freshness policies on
and off.

- ``evdisp``: priority 10, ETA 30 s, payload ~1 s (sleep 1);
- ``reco``: priority 0, ETA 300 s, payload ~3 s (sleep 3).

Data files arrive (each one job, with its arrival time) for DURATION seconds at about twice what
the pilots can process: RATE × pilots pilot-seconds of work per second, of which EVDISP_SHARE is
evdisp's. With ``--spill S`` they arrive in spills, as a DAQ writes them: every S seconds (from the
start) S seconds' worth of files arrive together, evdisp and reco mixed, so from the second spill on
each spill's evdisp finds the pilots busy with the reco backlog, which they do not give back.

With the policies ``on``, both types drop stale work (past its deadline, or unable to finish by it,
when a pilot would take it) and shed at admission (lowest priority first), first defined first;
``on-newest`` also serves evdisp newest first; ``on-noshed`` does not shed evdisp (drops it only
when a pilot would take it too late). With them off, both types keep their ETA
(so that turnaround is measured against it) and nothing else: first defined first, nothing dropped.

Prints one JSON line per run:
{"policies": "on"|"on-newest"|"on-noshed"|"off", "types": {"evdisp": {"done", "within_eta", "stale", "shed",
"turnaround_p95_s", …}, "reco": {…}}, …}

Each evdisp job dropped is listed by reason (``evdisp_dropped``): how late it was when dropped.

Usage: bench/freshness.py [--quick] [--pilots 8] [--duration 180] [--rate 2] [--evdisp-share 0.6]
                          [--spill 0] [--policies on,off] (also: on-newest, on-noshed)
"""
from __future__ import annotations

import argparse
import datetime
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

from p3s.cli.common import stop_processes  # noqa: E402
from p3s.pilot.client import Client  # noqa: E402

TYPES = {"evdisp": {"priority": 10, "eta": 30, "seconds": 1}, "reco": {"priority": 0, "eta": 300, "seconds": 3}}
POLICIES = {"on": {"evdisp": {"stale": True, "shed": True}, "reco": {"stale": True, "shed": True}},
            "on-newest": {"evdisp": {"order": "newest-first", "stale": True, "shed": True},
                          "reco": {"stale": True, "shed": True}},
            "on-noshed": {"evdisp": {"stale": True}, "reco": {"stale": True, "shed": True}},
            "off": {"evdisp": {}, "reco": {}}}
PENDING = ("defined", "dispatched", "running")


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
            next_spill = start
            while (now := time.monotonic()) < start + args.duration:
                if args.spill and now < next_spill:
                    time.sleep(min(0.1, next_spill - now))
                    continue
                next_spill = now + args.spill
                batch = []
                for name, rate in rates.items():
                    owed[name] += rate * (args.spill or (now - last))
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
            # Let the evdisp arrived so far run out (or be dropped): every one of them is counted.
            drain = time.monotonic() + TYPES["evdisp"]["eta"] * 2
            while time.monotonic() < drain and any(
                    client.summary()["jobs_by_type"].get("evdisp", {}).get(s, 0) for s in PENDING):
                time.sleep(0.5)
            report = client.call("GET", "/freshness")["types"]
            summary = client.summary()
            dropped = dropped_evdisp(client)
        finally:
            stop_processes(pilots)
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
            "rate": args.rate, "evdisp_share": args.evdisp_share, "spill_s": args.spill, "types": out,
            "evdisp_dropped": dropped}


def dropped_evdisp(client: Client) -> dict:
    """The evdisp jobs dropped, by reason: how many, and how far past their deadline (s) at the drop."""
    out: dict[str, dict] = {}
    offset = 0
    while True:
        page = client.call("GET", "/jobs", query={"state": "stale", "jobtype": "evdisp", "limit": 1000,
                                                  "offset": offset})["items"]
        for job in page:
            late = (parse_time(job["ts_sto"]) - parse_time(job["deadline"])) if job.get("deadline") else None
            entry = out.setdefault(job.get("dropped") or "stale", {"n": 0, "late_s": []})
            entry["n"] += 1
            if late is not None:
                entry["late_s"].append(late)
        if len(page) < 1000:
            break
        offset += 1000
    for entry in out.values():
        lates = sorted(entry.pop("late_s"))
        entry["late_at_drop_s"] = ({"min": round(lates[0], 1), "median": round(lates[len(lates) // 2], 1),
                                    "max": round(lates[-1], 1)} if lates else None)
    return out


def parse_time(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 s of arrivals instead of 180")
    parser.add_argument("--pilots", type=int, default=8, help="local pilots [8]")
    parser.add_argument("--duration", type=float, default=None, help="seconds of arrivals [180; --quick 60]")
    parser.add_argument("--rate", type=float, default=2.0, help="arriving work / what the pilots can do [2]")
    parser.add_argument("--evdisp-share", type=float, default=0.6, help="evdisp's share of the arriving work [0.6]")
    parser.add_argument("--spill", type=float, default=0.0,
                        help="seconds between spills of arriving files (0: continuous arrival) [0]")
    parser.add_argument("--policies", default="on,off", help="runs to make, in order [on,off]")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 60.0 if args.quick else 180.0
    for policies in args.policies.split(","):
        print(json.dumps(run(policies.strip(), args)), flush=True)


if __name__ == "__main__":
    main()
