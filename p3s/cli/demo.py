"""`p3s-demo`: the main job on the embedded default — a server, local pilots and sample work.

Starts ``p3s-server`` (embedded store in the data directory), a few pilots on this machine, and
submits a handful of sample jobs and a workflow, then a trickle of jobs (some fail); prints a
one-time login link for the monitor, then runs until Ctrl-C, when it stops the pilots (their
payloads are stopped and reported) and the server. ``--reset`` starts from an empty database.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import p3s.conf
from p3s.cli.common import fail, stop_processes
from p3s.pilot.client import Client, P3SError
from p3s.store import DataDirLock, StoreError

SAMPLE_JOBS = [
    {"name": "hello", "jobtype": "demo", "payload": "echo hello from $P3S_JOB_UUID", "env": {"P3S_EXECMODE": "1"}},
    {"name": "count-lines", "jobtype": "demo", "payload": "wc -l /etc/passwd"},
    {"name": "short-sleep", "jobtype": "demo", "payload": "sleep 3", "priority": 5},
    {"name": "fails", "jobtype": "demo", "payload": "sh -c 'echo failing on purpose >&2; exit 2'"},
    {"name": "too-slow", "jobtype": "demo", "payload": "sleep 30", "timelimit": 2},
]


def start_sample_workflow(client: Client, logs: Path) -> dict:
    """The original's 3filters fan-out/fan-in over a small generated input file."""
    if not client.list("datatypes")["items"]:
        client.call("POST", "/datatypes", {"name": "TXT", "ext": ".txt"})
    if not any(t["name"] == "3filters" for t in client.call("GET", "/templates")["items"]):
        text = (Path(p3s.conf.__file__).parent / "dags" / "3filters.yaml").read_text()
        client.call("POST", "/templates", {"yaml": text, "filename": "3filters.yaml"})
    (logs / "out").mkdir(parents=True, exist_ok=True)
    source = logs / "run0001.txt"
    source.write_text("TEST1 a\nTEST2 b\nTEST1 c\nTEST3 d\nnothing\n")
    return client.call("POST", "/workflows", {"template": "3filters", "inputs": {"INPTXT": str(source)},
                                              "dirpath": str(logs / "out"), "filenames": "derived"})


def _port_taken(port: int) -> str | None:
    """Why ``port`` cannot be listened on, or None when it can."""
    if port == 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def reset(data_dir: Path) -> None:
    """Remove the demo's database and files (the token is kept); refused while a server uses them."""
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except StoreError as exc:
        fail(f"cannot reset: {exc}")
    try:
        for name in ("db", "demo"):
            shutil.rmtree(data_dir / name, ignore_errors=True)
    finally:
        lock.release()


class Trickle(threading.Thread):
    """A job every ``every`` seconds, mostly short successes, some failures: the monitor keeps moving."""

    def __init__(self, client: Client, every: float) -> None:
        super().__init__(daemon=True, name="trickle")
        self.client, self.every, self.stopped = client, every, threading.Event()
        self.random = random.Random(7)

    def run(self) -> None:
        n = 0
        while not self.stopped.wait(self.every):
            n += 1
            roll = self.random.random()
            if roll < 0.8:
                job = {"name": f"reco-{n}", "jobtype": "reco", "payload": f"sleep {self.random.randint(1, 6)}"}
            elif roll < 0.95:
                job = {"name": f"dqm-{n}", "jobtype": "dqm", "env": {"P3S_EXECMODE": "1"},
                       "payload": "echo 'ERROR: histogram service unreachable' >&2; exit 3"}
            else:
                job = {"name": f"evdisp-{n}", "jobtype": "evdisp", "payload": "sleep 20", "timelimit": 5}
            try:
                self.client.create_jobs([job])
            except P3SError:
                pass                        # the server is stopping, or busy: try again next time


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-demo`` parser."""
    parser = argparse.ArgumentParser(prog="p3s-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.p3s"), help="server data directory [~/.p3s]")
    parser.add_argument("--port", type=int, default=8470, help="server port [8470]")
    parser.add_argument("--pilots", type=int, default=4, help="local pilots to start [4]")
    parser.add_argument("--trickle", type=float, default=4.0, metavar="S",
                        help="submit a sample job every S seconds (0 = none) [4]")
    parser.add_argument("--reset", action="store_true", help="start afresh: remove the demo's database and files")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir)
    if args.reset and data_dir.exists():
        reset(data_dir)
    taken = _port_taken(args.port)
    if taken:
        fail(f"port {args.port} is not free ({taken}): another server runs there? use --port N", 1)
    logs = data_dir / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    errors = logs / "server.err"
    with open(errors, "w") as err:
        server = subprocess.Popen([sys.executable, "-m", "p3s.cli.server", "--port", str(args.port),
                                   "--data-dir", str(data_dir), "--log-file", str(logs / "server.log")],
                                  stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
    line = server.stdout.readline()
    if "listening on" not in line:
        server.wait()
        lines = [x for x in errors.read_text(errors="replace").splitlines() if x.strip()]
        reason = next((x for x in reversed(lines) if "error" in x.lower()), lines[-1] if lines else "no output")
        fail(f"the server did not start: {reason.split('error: ', 1)[-1]} (all of it in {errors})", 1)
    url = line.strip().rsplit(" ", 1)[-1]
    token_file = data_dir / "token"
    client = Client(url, token_file.read_text().strip())
    pilot_env = {**env, "P3S_TOKEN": client.token}
    pilots = [subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", url, "-c", "0", "-p", "20", "-b", "2",
                                "-H", f"demo-{i}", "--logdir", str(logs / "pilots"), "--joblogdir", str(logs / "jobs"),
                                "--workdir", str(logs / "work"), "-v", "0"],
                               env=pilot_env, stderr=subprocess.DEVNULL, start_new_session=True)
              for i in range(args.pilots)]
    try:
        jobs = client.create_jobs(SAMPLE_JOBS)
        workflow = start_sample_workflow(client, logs)
        link = client.call("POST", "/login-link")
    except P3SError as exc:
        fail(f"could not submit the sample work: {exc}", 1)
    trickle = Trickle(client=Client(url, client.token), every=args.trickle)
    if args.trickle > 0:
        trickle.start()
    print(f"""
p3s is running.
  monitor    {url}{link['path']}
             (logs you in at once; once only, for {link['seconds'] // 60} minutes — later, log in at {url}/
              with the token in {token_file})
  workflow   {url}/workflows/{workflow['uuid']}   (3filters, outputs in {logs / 'out'})
  API        {url}/api/v1   (description: {url}/api/v1/openapi.json)
  token      export P3S_TOKEN=$(cat {token_file}) P3S_SERVER_URL={url}
  pilots     {args.pilots} local pilots; job logs in {logs / 'jobs'}
  sample     {len(jobs)} jobs and 1 workflow submitted{f", then a job every {args.trickle:g} s" if args.trickle > 0 else ""}
             also:  p3s-status, p3s-job list, p3s-workflow show {workflow['uuid']}
Press Ctrl-C to stop.""", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"] and server.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    trickle.stopped.set()
    print("stopping pilots and server …", flush=True)
    stop_processes(pilots, 20)
    server.send_signal(signal.SIGTERM)
    server.wait(20)


if __name__ == "__main__":
    main()
