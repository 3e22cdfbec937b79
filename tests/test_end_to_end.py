"""The whole chain: a file dropped into a watched directory is picked up by the injector, and real
pilots run it through a 3-step DAG; the outputs exist and the monitor's counters saw it all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHAIN = textwrap.dedent("""
    name: dqm-chain
    description: count the TEST lines, double the count, write a report
    jobs:
      IN: {noop: true}
      count: {jobtype: count, payload: "grep -c TEST $RAW > $COUNTS", env: {P3S_EXECMODE: "1"}}
      double: {jobtype: double, payload: "echo $(( $(cat $COUNTS) * 2 )) > $DOUBLED", env: {P3S_EXECMODE: "1"}}
      report: {jobtype: report, payload: "echo run=$(basename $P3S_INPUT_FILE) result=$(cat $DOUBLED) > $REPORT",
               env: {P3S_EXECMODE: "1"}}
      OUT: {noop: true}
    data:
      - {source: IN, target: count, datatag: RAW, datatype: TXT}
      - {source: count, target: double, datatag: COUNTS, datatype: TXT}
      - {source: double, target: report, datatag: DOUBLED, datatype: TXT}
      - {source: report, target: OUT, datatag: REPORT, datatype: TXT}
""")


def test_dropped_file_runs_through_a_three_step_dag(server, tmp_path):
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    server.ok("POST", "/templates", {"yaml": CHAIN}, 201)
    inbox, outputs = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    outputs.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    common = ["-S", server.url]
    injector = subprocess.Popen([sys.executable, "-m", "p3s.cli.injector", *common, "-d", str(inbox),
                                 "--pattern", "*.txt", "--template", "dqm-chain", "--datatype", "TXT",
                                 "--outdir", str(outputs)],
                                stderr=open(tmp_path / "injector.log", "w"), env=env, cwd=REPO)
    pilots = [subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", *common, "-c", "0", "-p", "5",
                                "-H", f"wn0{i}", "--logdir", str(tmp_path / "logs"), "--joblogdir", str(tmp_path / "jobs"),
                                "--workdir", str(tmp_path / "work")], stderr=subprocess.DEVNULL, env=env)
              for i in (1, 2)]
    try:
        server.wait_for(lambda: server.ok("GET", "/summary")["queue"]["waiting_pilots"] == 2, timeout=20)
        server.wait_for(lambda: "injector.started" in {e["kind"] for e in server.ok("GET", "/events")["items"]})
        raw = inbox / "run0042.txt"
        with open(raw, "w") as handle:          # written, then closed: complete
            handle.write("TEST 1\nnoise\nTEST 2\nTEST 3\n")
        server.wait_for(lambda: server.ok("GET", "/workflows?state=finished")["total"] == 1, timeout=60)
        report = outputs / "run0042.report.REPORT.txt"
        assert report.read_text().strip() == "run=run0042.txt result=6"
        assert (outputs / "run0042.count.COUNTS.txt").read_text().strip() == "3"
        workflow = server.ok("GET", "/workflows")["items"][0]
        detail = server.ok("GET", f"/workflows/{workflow['uuid']}")
        assert {j["vertex"]: j["state"] for j in detail["jobs"]} == {
            "IN": "finished", "count": "finished", "double": "finished", "report": "finished", "OUT": "finished"}
        assert {d["state"] for d in detail["data"]} == {"ready"}
        assert server.ok("GET", "/stats")["windows"]["10m"]["total"]["finished"] == 3
    finally:
        injector.send_signal(signal.SIGTERM)
        for pilot in pilots:
            pilot.send_signal(signal.SIGTERM)
        assert injector.wait(15) == 0
        for pilot in pilots:
            assert pilot.wait(15) == 0
