#!/usr/bin/env python3
"""What authentication costs a pilot's requests: heartbeats per second from 16 pilots, each with
its own credential (the normal case), with the admin token, and on a server with --no-auth.

A fresh ``p3s-server`` (temporary data dir, configured tokens) is started per case; 16 pilots
register, then each sends idle heartbeats (``POST /pilots/{uuid}/events``: no database write, the
pilots' contacts are written in batches) over a kept-alive connection for ``--seconds``. Prints one JSON line per case.

Usage: bench/auth.py [--seconds S] [--quick]
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
from pathlib import Path

from p3s.pilot.client import Client

PILOTS = 16
ADMIN = "bench-admin-token-0123456789"
BOOT = "bench-pilot-token-0123456789"


def start_server(tmp: Path, no_auth: bool) -> tuple[subprocess.Popen, str]:
    config = tmp / "p3s.yaml"
    config.write_text(json.dumps({"data_dir": str(tmp / "data"), "log_level": "WARNING", "tokens": [
        {"token": ADMIN, "role": "admin", "name": "admin"}, {"token": BOOT, "role": "pilot", "name": "pilots"}]}))
    args = [sys.executable, "-m", "p3s.cli.server", "--config", str(config), "--port", "0"]
    if no_auth:
        args.append("--no-auth")
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    return proc, proc.stdout.readline().strip().rsplit(" ", 1)[-1]


def run_case(name: str, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp), no_auth=(name == "no-auth"))
        try:
            boot = Client(url, BOOT, retries=0)
            pilots = []
            for i in range(PILOTS):
                reply = boot.register_pilot(host=f"bench{i}")
                token = ADMIN if name == "admin-token" else reply["credential"]
                pilots.append((reply["pilot"]["uuid"], Client(url, token, retries=0)))
            counts = [0] * PILOTS
            deadline = time.monotonic() + seconds

            def beat(i: int) -> None:
                uuid, client = pilots[i]
                while time.monotonic() < deadline:
                    client.report(uuid, "heartbeat")
                    counts[i] += 1

            threads = [threading.Thread(target=beat, args=(i,)) for i in range(PILOTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return {"bench": "auth", "case": name, "pilots": PILOTS, "seconds": seconds,
                    "requests_per_s": round(sum(counts) / seconds, 1)}
        finally:
            proc.terminate()
            proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="2 seconds per case")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    for case in ("pilot-credential", "admin-token", "no-auth"):
        print(json.dumps(run_case(case, seconds)), flush=True)


if __name__ == "__main__":
    main()
