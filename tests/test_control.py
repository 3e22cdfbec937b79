"""Diagnosis and action: the errors view, rerun and bulk kill by filter, a failed workflow's reason."""
from __future__ import annotations

import textwrap


def finish(server, pilot: str, exit_code: int, stderr: str = "") -> str:
    job = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    reply = server.report(pilot, "jobstop", job=job["uuid"], exit_code=exit_code, stderr_tail=stderr or None)
    assert reply.status == 200, reply
    return job["uuid"]


def test_errors_grouped_by_type_exit_code_error_line_and_host(make_server):
    server = make_server(blackhole_jobs=0)
    server.submit(*[{"payload": "x", "jobtype": "reco", "name": f"r{i}", "priority": 10} for i in range(3)])
    server.submit(*[{"payload": "x", "jobtype": "dqm", "name": f"d{i}"} for i in range(2)])
    a, b = server.register(host="wn01"), server.register(host="wn02")
    reco = [finish(server, a, 2, "starting\nERROR: cannot open calib.db\nbye\n") for _ in range(2)]
    finish(server, b, 2, "ERROR: cannot open calib.db\n")
    finish(server, b, 139, "Segmentation fault\n")
    finish(server, b, 0)
    groups = server.ok("GET", "/errors")
    assert groups["total"] == 4 and groups["by"] == ["exit_code", "host"] and groups["since"].endswith("Z")
    top = groups["items"][0]
    assert (top["jobtype"], top["exit_code"], top["host"], top["count"]) == ("reco", 2, "wn01", 2)
    assert {e["uuid"] for e in top["examples"]} == set(reco)
    assert top["examples"][0]["error_line"] == "ERROR: cannot open calib.db"
    by_line = server.ok("GET", "/errors?hours=24&by=error_line")["items"]
    assert by_line[0]["error_line"] == "ERROR: cannot open calib.db" and by_line[0]["count"] == 3
    assert {g["error_line"] for g in by_line} == {"ERROR: cannot open calib.db", "Segmentation fault"}
    bad = server.call("GET", "/errors?by=colour")
    assert bad.status == 422 and bad.error["field"] == "by"
    assert server.call("GET", "/errors?hours=0").status == 422


def test_rerun_one_and_by_filter_and_bulk_kill_with_a_dry_run_count(make_server):
    server = make_server(blackhole_jobs=0)
    failed = server.submit(*[{"payload": "x", "jobtype": "reco", "name": f"f{i}"} for i in range(3)])
    pilot = server.register(host="wn01")
    ended = [finish(server, pilot, 1) for _ in failed]
    assert server.call("POST", f"/jobs/{ended[0]}/rerun").status == 200
    assert server.job(ended[0])["state"] == "defined" and server.job(ended[0])["exit_code"] is None
    again = server.call("POST", f"/jobs/{ended[0]}/rerun")
    assert again.status == 409 and "defined" in again.error["message"]
    count = server.ok("POST", "/jobs/rerun?state=failed&jobtype=reco", {"dry_run": True})
    assert count == {"matched": 2, "done": [], "skipped": []}
    assert all(server.job(u)["state"] == "failed" for u in ended[1:])          # a dry run changes nothing
    done = server.ok("POST", "/jobs/rerun?state=failed&jobtype=reco", {})
    assert sorted(done["done"]) == sorted(ended[1:])
    assert server.ok("GET", "/jobs?state=defined")["total"] == 3
    assert server.call("POST", "/jobs/rerun", {}).status == 422               # no filter: refused
    assert server.call("POST", "/jobs/rerun?state=running", {}).status == 422   # running jobs cannot be rerun
    running = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=running["uuid"], pid=1)
    assert server.ok("POST", "/jobs/kill?jobtype=reco", {"dry_run": True})["matched"] == 3
    killed = server.ok("POST", "/jobs/kill?jobtype=reco", {})
    assert len(killed["done"]) == 3
    states = sorted(server.job(u)["state"] for u in ended)
    assert states == ["cancelled", "cancelled", "running"]                     # the running one is told to stop
    assert server.job(running["uuid"])["kill_requested"] is True
    client_token = "client-token-0123456789"
    other = make_server(tokens=[{"token": client_token, "role": "client", "name": "c"},
                                {"token": "admin-token-0123456789", "role": "admin", "name": "a"}])
    assert other.call("POST", "/jobs/kill?state=defined", {}, token=client_token).status == 403


def test_a_failed_workflow_names_the_job_and_the_reason(server):
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    dag = textwrap.dedent("""
        name: one
        jobs:
          IN: {noop: true}
          filter: {jobtype: filter, payload: "x"}
          OUT: {noop: true}
        data:
          - {source: IN, target: filter, datatag: A}
          - {source: filter, target: OUT, datatag: B}
    """)
    server.ok("POST", "/templates", {"yaml": dag}, 201)
    wf = server.ok("POST", "/workflows", {"template": "one"}, 201)
    pilot = server.register()
    finish(server, pilot, 3, "reading input\nFATAL: input file is empty\n")
    error = server.wait_for(lambda: server.ok("GET", f"/workflows/{wf['uuid']}").get("error"))
    assert "filter" in error and "exit code 3" in error and "FATAL: input file is empty" in error, error


def test_a_cancelled_workflow_says_who_cancelled_it(server):
    dag = textwrap.dedent("""
        name: two
        jobs:
          a: {jobtype: a, payload: "x"}
          b: {jobtype: b, payload: "y"}
        data:
          - {source: a, target: b, datatag: A}
    """)
    server.ok("POST", "/templates", {"yaml": dag}, 201)
    wf = server.ok("POST", "/workflows", {"template": "two"}, 201)
    server.ok("POST", f"/workflows/{wf['uuid']}/cancel", status=202)
    assert server.ok("GET", f"/workflows/{wf['uuid']}")["error"] == "cancelled on request of admin"
