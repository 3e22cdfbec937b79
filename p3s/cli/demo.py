"""`p3s-demo`: the main job on the embedded default — a server, local pilots and sample work.

Starts ``p3s-server`` (embedded store in the data directory), a few pilots on this machine, and
submits a handful of sample jobs; prints where to look, then runs until Ctrl-C, when it stops
the pilots (their payloads are stopped and reported) and the server.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import p3s.conf
from p3s.cli.common import fail
from p3s.pilot.client import Client, P3SError

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="p3s-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.p3s"), help="server data directory [~/.p3s]")
    parser.add_argument("--port", type=int, default=8470, help="server port [8470]")
    parser.add_argument("--pilots", type=int, default=4, help="local pilots to start [4]")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    logs = data_dir / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    server = subprocess.Popen([sys.executable, "-m", "p3s.cli.server", "--port", str(args.port),
                               "--data-dir", str(data_dir), "--log-file", str(logs / "server.log")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                              start_new_session=True)
    line = server.stdout.readline()
    if "listening on" not in line:
        server.wait()
        fail(f"the server did not start (see {logs / 'server.log'})", 1)
    url = line.strip().rsplit(" ", 1)[-1]
    token_file = data_dir / "token"
    client = Client(url, token_file.read_text().strip())
    pilot_env = {**env, "P3S_TOKEN": client.token}
    pilots = [subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", url, "-c", "0", "-p", "20", "-b", "2",
                                "-H", f"demo-{i}", "-l", str(logs / "pilots"), "-L", str(logs / "jobs"),
                                "-w", str(logs / "work"), "-v", "0"],
                               env=pilot_env, stderr=subprocess.DEVNULL, start_new_session=True)
              for i in range(args.pilots)]
    try:
        jobs = client.create_jobs(SAMPLE_JOBS)
        workflow = start_sample_workflow(client, logs)
    except P3SError as exc:
        fail(f"could not submit the sample work: {exc}", 1)
    print(f"""
p3s is running.
  monitor    {url}/   (log in with the token in {token_file})
  workflow   {url}/workflows/{workflow['uuid']}   (3filters, outputs in {logs / 'out'})
  API        {url}/api/v1   (description: {url}/api/v1/openapi.json)
  token      export P3S_TOKEN=$(cat {token_file}) P3S_SERVER_URL={url}
  pilots     {args.pilots} local pilots; job logs in {logs / 'jobs'}
  sample     {len(jobs)} jobs and 1 workflow submitted; also:  p3s-job list, p3s-workflow show {workflow['uuid']}
Press Ctrl-C to stop.""", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"] and server.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("stopping pilots and server …", flush=True)
    for pilot in pilots:
        pilot.send_signal(signal.SIGTERM)
    for pilot in pilots:
        try:
            pilot.wait(20)
        except subprocess.TimeoutExpired:
            pilot.kill()
    server.send_signal(signal.SIGTERM)
    server.wait(20)


if __name__ == "__main__":
    main()
