"""Workflows over the API: joins, NOOP chains, roots, failures, cancel, all-or-nothing creation."""
from __future__ import annotations

import textwrap

import pytest


def dag(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


DIAMOND = dag("""
    name: diamond
    description: a fans out to b and c, which join in d (two files from b to d)
    jobs:
      a: {jobtype: a, payload: "make-a"}
      b: {jobtype: b, payload: "make-b"}
      c: {jobtype: c, payload: "make-c"}
      d: {jobtype: d, payload: "join"}
    data:
      - {id: ab, source: a, target: b, datatag: AB, datatype: TXT}
      - {id: ac, source: a, target: c, datatag: AC, datatype: TXT}
      - {id: bd1, source: b, target: d, datatag: BD1, datatype: TXT}
      - {id: bd2, source: b, target: d, datatag: BD2, datatype: TXT}
      - {id: cd, source: c, target: d, datatag: CD, datatype: TXT}
""")

NOOPS = dag("""
    name: noops
    jobs:
      IN: {noop: true}
      first: {jobtype: first, payload: "step1"}
      N1: {noop: true}
      N2: {noop: true}
      second: {jobtype: second, payload: "step2"}
      OUT: {noop: true}
    data:
      - {source: IN, target: first, datatag: INPUT}
      - {source: first, target: N1, datatag: MID1}
      - {source: N1, target: N2, datatag: MID2}
      - {source: N2, target: second, datatag: MID3}
      - {source: second, target: OUT, datatag: RESULT}
""")

BRANCHES = dag("""
    name: branches
    jobs:
      r1: {jobtype: r1, payload: "root one"}
      r2: {jobtype: r2, payload: "root two"}
      mid: {jobtype: mid, payload: "middle"}
      after: {jobtype: after, payload: "after middle"}
      side: {jobtype: side, payload: "other branch"}
    data:
      - {source: r1, target: mid, datatag: X1}
      - {source: mid, target: after, datatag: X2}
      - {source: r2, target: side, datatag: X3}
""")


@pytest.fixture
def wf_server(server):
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    for text in (DIAMOND, NOOPS, BRANCHES):
        server.ok("POST", "/templates", {"yaml": text}, 201)
    return server


def start(server, template: str, **body) -> dict:
    return server.ok("POST", "/workflows", {"template": template, **body}, 201)


def states(server, workflow: dict) -> dict[str, str]:
    detail = server.ok("GET", f"/workflows/{workflow['uuid']}")
    return {job["vertex"]: job["state"] for job in detail["jobs"]}


def run(server, workflow: dict, vertex: str, exit_code: int = 0) -> None:
    """A pilot for this vertex's job type claims it and reports its end."""
    pilot = server.register(jobtypes=[vertex])
    job = server.claim(pilot)["job"]
    assert job is not None and job["uuid"] == workflow["vertices"][vertex], (vertex, job)
    server.report(pilot, "jobstop", job=job["uuid"], exit_code=exit_code)


def test_diamond_joins_and_finishes(wf_server):
    s = wf_server
    wf = start(s, "diamond", filenames="derived", inputs={}, name="run42")
    assert wf["state"] == "defined"
    assert states(s, wf) == {"a": "defined", "b": "template", "c": "template", "d": "template"}
    jobs = {j["vertex"]: j for j in s.ok("GET", f"/workflows/{wf['uuid']}")["jobs"]}
    b_env = s.job(jobs["b"]["uuid"])["env"]
    assert set(b_env) == {"AB", "BD1", "BD2"} and b_env["BD1"].endswith(".b.BD1.txt")
    run(s, wf, "a")
    assert states(s, wf) == {"a": "finished", "b": "defined", "c": "defined", "d": "template"}
    run(s, wf, "b")
    assert states(s, wf)["d"] == "template"                 # waits for c too: a join, not "any parent"
    data = {d["edge"]: d["state"] for d in s.ok("GET", f"/workflows/{wf['uuid']}")["data"]}
    assert data == {"ab": "ready", "ac": "ready", "bd1": "ready", "bd2": "ready", "cd": "template"}
    run(s, wf, "c")
    assert states(s, wf)["d"] == "defined"
    run(s, wf, "d")
    done = s.ok("GET", f"/workflows/{wf['uuid']}")
    assert done["state"] == "finished" and done["ndone"] == 4 and done["ts_sto"]


def test_noop_chains_finish_at_once(wf_server):
    s = wf_server
    wf = start(s, "noops", inputs={"INPUT": "/data/in/run7.txt"})
    assert states(s, wf) == {"IN": "finished", "first": "defined", "N1": "template", "N2": "template",
                             "second": "template", "OUT": "template"}
    first = s.job(wf["vertices"]["first"])
    assert first["env"]["INPUT"] == "/data/in/run7.txt" and first["input_file"] == "/data/in/run7.txt"
    run(s, wf, "first")
    assert states(s, wf) == {"IN": "finished", "first": "finished", "N1": "finished", "N2": "finished",
                             "second": "defined", "OUT": "template"}
    run(s, wf, "second")
    assert s.ok("GET", f"/workflows/{wf['uuid']}")["state"] == "finished"
    assert s.ok("GET", "/summary")["jobs"]["finished"] == 6


def test_every_root_starts_and_a_failure_cancels_only_what_depends_on_it(wf_server):
    s = wf_server
    wf = start(s, "branches")
    assert states(s, wf) == {"r1": "defined", "r2": "defined", "mid": "template", "after": "template",
                             "side": "template"}
    run(s, wf, "r1")
    run(s, wf, "r2")
    run(s, wf, "mid", exit_code=1)
    detail = s.ok("GET", f"/workflows/{wf['uuid']}")
    assert detail["state"] == "failed" and "mid" in detail["error"]
    assert states(s, wf) == {"r1": "finished", "r2": "finished", "mid": "failed", "after": "cancelled",
                             "side": "defined"}
    run(s, wf, "side")                                      # the other branch still runs
    assert states(s, wf)["side"] == "finished"
    assert s.ok("GET", f"/workflows/{wf['uuid']}")["state"] == "failed"


def test_cancel_kills_running_and_cancels_waiting_jobs(wf_server):
    s = wf_server
    wf = start(s, "branches")
    pilot = s.register(jobtypes=["r1"])
    job = s.claim(pilot)["job"]
    s.report(pilot, "jobstart", job=job["uuid"], pid=1)
    assert s.ok("GET", f"/workflows/{wf['uuid']}")["state"] == "running"
    assert s.ok("POST", f"/workflows/{wf['uuid']}/cancel", status=202)["state"] == "cancelled"
    assert s.report(pilot, "heartbeat", job=job["uuid"]).body["kill_job"] == job["uuid"]
    s.report(pilot, "killed", job=job["uuid"], exit_code=-15)
    assert states(s, wf) == {"r1": "killed", "r2": "cancelled", "mid": "cancelled", "after": "cancelled",
                             "side": "cancelled"}
    assert s.ok("GET", f"/workflows/{wf['uuid']}")["state"] == "cancelled"
    assert s.ok("DELETE", f"/workflows/{wf['uuid']}")["deleted"] == [wf["uuid"]]
    assert s.ok("GET", f"/jobs?workflow={wf['uuid']}")["total"] == 0


def test_creation_is_all_or_nothing(wf_server):
    s = wf_server
    bad = s.call("POST", "/workflows", {"template": "diamond", "overrides": {"zz": {"payload": "x"}}})
    assert bad.status == 422 and bad.error["field"] == "overrides.zz"
    bad = s.call("POST", "/workflows", {"template": "diamond", "overrides": {"a": {"priority": "high"}}})
    assert bad.status == 422 and bad.error["field"] == "overrides.a.priority"
    assert s.call("POST", "/workflows", {"template": "nope"}).status == 404
    assert s.call("POST", "/workflows", {"template": "noops", "inputs": {"NOTATAG": "/x"}}).status == 422
    assert s.ok("GET", "/workflows")["total"] == 0
    assert s.ok("GET", "/jobs")["total"] == 0 and s.ok("GET", "/data")["total"] == 0
    held = start(s, "diamond", state="template", overrides={"a": {"payload": "other", "priority": 9}})
    assert held["state"] == "template" and states(s, held)["a"] == "template"
    assert s.job(held["vertices"]["a"])["payload"] == "other"
    assert s.ok("POST", f"/workflows/{held['uuid']}/start")["state"] == "defined"
    assert states(s, held)["a"] == "defined"


def test_templates_are_immutable_once_used(wf_server):
    s = wf_server
    assert s.ok("POST", "/templates", {"yaml": DIAMOND}, 201)["version"] == 1      # unused: replaced
    start(s, "diamond")
    again = s.call("POST", "/templates", {"yaml": DIAMOND})
    assert again.status == 409 and "new_version" in again.error["message"]
    assert s.ok("POST", "/templates", {"yaml": DIAMOND, "new_version": True}, 201)["version"] == 2
    assert s.call("DELETE", "/templates/diamond").status == 409
    exported = s.ok("GET", "/templates/diamond?format=yaml")
    assert "name: diamond" in exported["yaml"]
    graphml = s.ok("GET", "/templates/diamond?format=graphml&version=1")["graphml"]
    assert s.ok("POST", "/templates", {"graphml": graphml, "name": "diamond-copy"}, 201)["nedges"] == 5
    bad = s.call("POST", "/templates", {"yaml": "name: loop\njobs:\n  a: {payload: x}\n  b: {payload: y}\n"
                                                "data:\n  - {source: a, target: b}\n  - {source: b, target: a}\n"})
    assert bad.status == 422 and "cycle" in bad.error["message"]
    bad = s.call("POST", "/templates", {"yaml": DIAMOND.replace("TXT", "CSV").replace("name: diamond", "name: d2")})
    assert bad.status == 422 and "CSV" in bad.error["message"]


def test_workflow_runs_for_real_with_pilots(wf_server, tmp_path):
    """A 3-step chain through real pilot processes: files are produced and consumed for real."""
    import os
    import subprocess
    import sys
    s = wf_server
    chain = dag("""
        name: chain
        jobs:
          IN: {noop: true}
          count: {payload: "grep -c TEST $INTXT > $COUNTS", env: {P3S_EXECMODE: "1"}}
          double: {payload: "echo $(( $(cat $COUNTS) * 2 )) > $DOUBLED", env: {P3S_EXECMODE: "1"}}
          report: {payload: "echo result=$(cat $DOUBLED) | tee $REPORT", env: {P3S_EXECMODE: "1"}}
          OUT: {noop: true}
        data:
          - {source: IN, target: count, datatag: INTXT, datatype: TXT}
          - {source: count, target: double, datatag: COUNTS, datatype: TXT}
          - {source: double, target: report, datatag: DOUBLED, datatype: TXT}
          - {source: report, target: OUT, datatag: REPORT, datatype: TXT}
    """)
    s.ok("POST", "/templates", {"yaml": chain}, 201)
    source = tmp_path / "run9.txt"
    source.write_text("TEST one\nnothing\nTEST two\nTEST three\n")
    out = tmp_path / "out"
    out.mkdir()
    wf = start(s, "chain", inputs={"INTXT": str(source)}, dirpath=str(out), filenames="derived")
    pilot = subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", s.url, "-c", "2",
                              "-p", "1", "--logdir", str(tmp_path / "l"), "--joblogdir", str(tmp_path / "j"), "--workdir", str(tmp_path / "w")],
                             stderr=subprocess.DEVNULL, env={**os.environ, "P3S_TOKEN": s.token})
    assert pilot.wait(60) == 0
    assert s.ok("GET", f"/workflows/{wf['uuid']}")["state"] == "finished"
    assert (out / "run9.count.COUNTS.txt").read_text().strip() == "3"
    assert (out / "run9.report.REPORT.txt").read_text().strip() == "result=6"
    assert s.job(wf["vertices"]["report"])["stdout_tail"] == "result=6"


def test_a_retried_instantiation_with_its_own_uuid_is_refused_not_duplicated(wf_server):
    s = wf_server
    chosen = "5b0d7a52-6a8e-4a8c-9f44-0c2a7f1f0d11"
    assert s.ok("POST", "/workflows", {"template": "diamond", "uuid": chosen}, 201)["uuid"] == chosen
    again = s.call("POST", "/workflows", {"template": "diamond", "uuid": chosen})
    assert again.status == 409 and again.error["field"] == "uuid"
    assert s.ok("GET", "/workflows")["total"] == 1 and s.ok("GET", "/jobs")["total"] == 4
