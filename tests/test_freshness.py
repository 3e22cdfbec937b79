"""Freshness: arrival, ETA and deadline; newest-first order, stale jobs (and the workflows they
drop), stopping running jobs past their deadline, and shedding at admission — with real pilots."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pilot_support import pilot_starter

SHELL = {"P3S_EXECMODE": "SHELL"}


def parse(moment: str) -> dt.datetime:
    return dt.datetime.fromisoformat(moment.replace("Z", "+00:00"))


@pytest.fixture
def pilots(tmp_path):
    with pilot_starter(tmp_path, defaults=("-b", "1"), results=True, terminate=True) as start:
        yield start


def events(server, kind: str) -> list[dict]:
    return server.ok("GET", f"/events?kind={kind}&limit=1000")["items"]


# --- arrival, ETA, deadline --------------------------------------------------------------------
def test_deadline_is_arrival_plus_the_types_eta(server):
    assert server.ok("PUT", "/jobtypes/evdisp", {"limit": 4})["eta"] is None
    settings = server.ok("PATCH", "/jobtypes/evdisp", {"eta": 30, "order": "newest-first"})
    assert settings["limit"] == 4 and settings["eta"] == 30 and settings["order"] == "newest-first"
    arrived = time.time() - 100
    given, plain, own, other = server.submit(
        {"payload": "true", "jobtype": "evdisp", "arrived": arrived},
        {"payload": "true", "jobtype": "evdisp"},
        {"payload": "true", "jobtype": "evdisp", "eta": 5, "arrived": "2026-01-01T10:00:00Z"},
        {"payload": "true", "jobtype": "reco"})
    assert abs(parse(given["arrived"]).timestamp() - arrived) < 0.01
    assert (parse(given["deadline"]) - parse(given["arrived"])).total_seconds() == 30
    assert plain["arrived"] == plain["ts_def"] and plain["eta"] == 30            # no arrival: its definition
    assert own["deadline"] == "2026-01-01T10:00:05.000Z"
    assert other["eta"] is None and other["deadline"] is None                     # no ETA: today's behaviour
    # the ETA of jobs already defined stays; PUT replaces every setting
    assert server.ok("PUT", "/jobtypes/evdisp", {"limit": 2})["eta"] is None
    for bad, field in (({"arrived": "yesterday"}, "arrived"), ({"arrived": -5}, "arrived"), ({"eta": 0}, "eta")):
        reply = server.call("POST", "/jobs", {"payload": "true", **bad})
        assert reply.status == 422 and reply.error["field"] == field, reply
    reply = server.call("PATCH", "/jobtypes/evdisp", {"order": "random"})
    assert reply.status == 422 and reply.error["field"] == "order"
    assert server.ok("GET", "/jobs?jobtype=evdisp")["total"] == 3                  # nothing half-written


def test_configured_defaults_and_the_types_own_setting(make_server):
    server = make_server(jobtype_defaults={"*": {"eta": 600}, "evdisp": {"eta": 30, "stale": True}})
    evdisp, reco = server.submit({"payload": "true", "jobtype": "evdisp"}, {"payload": "true", "jobtype": "reco"})
    assert evdisp["eta"] == 30 and reco["eta"] == 600
    assert server.ok("GET", "/jobtypes/evdisp")["stale"] is True
    assert server.ok("PATCH", "/jobtypes/reco", {"eta": 60})["eta"] == 60
    assert server.submit({"payload": "true", "jobtype": "reco"})[0]["eta"] == 60
    assert server.ok("PATCH", "/jobtypes/reco", {"eta": None})["eta"] == 600      # unset: the default again


def test_bad_jobtype_defaults_are_refused_at_start(tmp_path):
    config = tmp_path / "p3s.yaml"
    config.write_text(f"data_dir: {tmp_path}\njobtype_defaults: {{evdisp: {{eta: soon}}}}\n")
    result = subprocess.run([sys.executable, "-m", "p3s.cli.server", "--config", str(config), "--port", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "jobtype_defaults" in result.stderr and "eta" in result.stderr


FILTER = textwrap.dedent("""
    name: fresh
    jobs:
      IN: {noop: true}
      first: {jobtype: first, payload: "true"}
      second: {jobtype: second, payload: "true", eta: 45}
    data:
      - {id: raw, source: IN, target: first, datatag: RAW}
      - {source: first, target: second, datatag: MID}
""")


def test_workflow_inherits_the_earliest_arrival_of_its_inputs(server):
    server.ok("PATCH", "/jobtypes/first", {"eta": 20})
    early = time.time() - 300
    server.ok("POST", "/data", {"name": "run7.raw", "dirpath": "/daq", "arrived": early}, 201)
    registered = server.ok("POST", "/data", {"name": "run8.raw", "dirpath": "/daq"}, 201)["items"][0]
    assert registered["arrived"] == registered["ts_reg"]
    server.ok("POST", "/templates", {"yaml": FILTER}, 201)
    wf = server.ok("POST", "/workflows", {"template": "fresh", "inputs": {"RAW": "/daq/run7.raw"},
                                          "state": "template", "overrides": {"first": {"eta": 25}}}, 201)
    assert abs(parse(wf["arrived"]).timestamp() - early) < 0.01
    jobs = {j["vertex"]: server.job(j["uuid"]) for j in server.ok("GET", f"/workflows/{wf['uuid']}")["jobs"]}
    assert {j["arrived"] for j in jobs.values()} == {wf["arrived"]}
    assert jobs["first"]["eta"] == 25 and jobs["second"]["eta"] == 45             # override; vertex's own
    assert (parse(jobs["second"]["deadline"]) - parse(wf["arrived"])).total_seconds() == 45
    given = server.ok("POST", "/workflows", {"template": "fresh", "state": "template", "arrived": 1_700_000_000}, 201)
    assert given["arrived"] == "2023-11-14T22:13:20.000Z"


def test_p3s_job_types_sets_and_lists_policies(server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}

    def p3s_job(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "p3s.cli.job", *args, "-S", server.url, "--token", server.token],
                              capture_output=True, text=True, env=env, timeout=60)

    done = p3s_job("types", "-T", "evdisp", "--eta", "30", "--order", "newest-first", "--stale", "on", "-L", "8")
    assert done.returncode == 0, done.stderr
    assert "newest-first" in done.stdout and "30" in done.stdout
    assert p3s_job("limits", "-T", "evdisp", "-L", "3").returncode == 0          # keeps the policies
    settings = server.ok("GET", "/jobtypes/evdisp")
    assert (settings["limit"], settings["eta"], settings["stale"]) == (3, 30, True)
    bad = p3s_job("types", "-T", "evdisp", "--stale", "maybe")
    assert bad.returncode == 2 and "on, off or none" in bad.stderr
    assert server.ok("GET", "/jobtypes/evdisp")["stale"] is True


def test_p3s_dataset_registers_files_with_their_arrival(server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    raw = tmp_path / "run9.raw"
    raw.write_text("data")
    os.utime(raw, (1_700_000_000, 1_700_000_000))

    def p3s_dataset(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "p3s.cli.dataset", *args, "-S", server.url, "--token", server.token],
                              capture_output=True, text=True, env=env, timeout=60)

    assert p3s_dataset("register", str(raw), "--arrived", "mtime").returncode == 0
    assert server.ok("GET", "/data?name=run9.raw")["items"][0]["arrived"] == "2023-11-14T22:13:20.000Z"
    bad = p3s_dataset("register", str(tmp_path / "other.raw"), "--arrived", "soon")
    assert bad.returncode == 1 and "arrived" in bad.stderr
    assert server.ok("GET", "/data?name=other.raw")["total"] == 0


# --- policies, with real pilots ------------------------------------------------------------------
def test_newest_first_serves_the_freshest_data_first(server, pilots):
    server.ok("PATCH", "/jobtypes/mon", {"order": "newest-first"})
    jobs = server.submit(*({"name": f"n{i}", "payload": "true", "jobtype": "mon"} for i in range(4)))
    fifo = server.submit(*({"name": f"f{i}", "payload": "true", "jobtype": "plain"} for i in range(3)))
    pilot = pilots(server, "-c", "2", "-p", "1")
    assert pilot.proc.wait(60) == 0, pilot.log()
    started = {j["name"]: server.job(j["uuid"])["ts_sta"] for j in jobs + fifo}
    assert sorted(["n0", "n1", "n2", "n3"], key=started.get) == ["n3", "n2", "n1", "n0"]
    assert sorted(["f0", "f1", "f2"], key=started.get) == ["f0", "f1", "f2"]


def test_a_stale_job_is_not_run_and_says_why(server, pilots):
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 30, "stale": True})
    late, fresh = server.submit({"payload": "touch ran", "env": SHELL, "jobtype": "evdisp", "arrived": time.time() - 60},
                                {"payload": "true", "jobtype": "evdisp"})
    unchecked = server.submit({"payload": "true", "jobtype": "evdisp-off", "eta": 1, "arrived": time.time() - 60})[0]
    pilot = pilots(server, "-c", "2", "-p", "1")
    assert pilot.proc.wait(60) == 0, pilot.log()
    job = server.job(late["uuid"])
    assert job["state"] == "stale" and job["dropped"] == "stale" and job["pilot"] is None
    assert job["error"].startswith("stale: its deadline passed")
    assert server.job(fresh["uuid"])["state"] == "finished"
    assert server.job(unchecked["uuid"])["state"] == "finished"                   # its type has no stale policy
    assert late["uuid"] in {e["job"] for e in events(server, "job.stale")}
    summary = server.ok("GET", "/summary")
    assert summary["jobs"]["stale"] == 1
    assert summary["freshness"]["types"]["evdisp"]["windows"]["10m"]["dropped"]["stale"] == 1


def test_a_job_that_could_no_longer_finish_in_time_is_dropped_at_the_claim(server, pilots):
    _measure(server, pilots, "evdisp", "sleep 4", n=1)
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 60, "stale": True})
    # its deadline is 3 s away, a run of its type takes 4 s: run now, it would end late
    hopeless, fine = server.submit({"payload": "true", "jobtype": "evdisp", "arrived": time.time() - 57},
                                   {"payload": "true", "jobtype": "evdisp"})
    pilot = server.register()
    assert server.claim(pilot)["job"]["uuid"] == fine["uuid"]
    job = server.job(hopeless["uuid"])
    assert job["state"] == "stale" and job["pilot"] is None
    assert job["error"].startswith("stale: it could no longer finish by its deadline")
    assert parse(job["ts_sto"]) < parse(job["deadline"])


def test_a_job_waiting_past_its_deadline_is_swept_stale_without_a_pilot(server):
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 1, "stale": True})
    job = server.submit({"payload": "true", "jobtype": "evdisp"})[0]
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "stale", timeout=20)
    assert server.ok("GET", "/summary")["queue"]["ready"] == 0


CHAIN = textwrap.dedent("""
    name: chain
    jobs:
      raw: {jobtype: unpack, payload: "sleep 3"}
      evdisp: {jobtype: evdisp, payload: "true"}
      plots: {jobtype: plots, payload: "true"}
      side: {jobtype: side, payload: "true"}
    data:
      - {source: raw, target: evdisp, datatag: A}
      - {source: evdisp, target: plots, datatag: B}
      - {source: raw, target: side, datatag: C}
""")


def test_a_workflow_is_dropped_part_way_when_a_job_goes_stale(server, pilots):
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 2, "stale": True})
    server.ok("POST", "/templates", {"yaml": CHAIN}, 201)
    wf = server.ok("POST", "/workflows", {"template": "chain"}, 201)
    pilot = pilots(server, "-c", "3", "-p", "1")
    server.wait_for(lambda: server.ok("GET", f"/workflows/{wf['uuid']}")["state"] == "dropped", timeout=60)
    assert pilot.proc.wait(60) == 0, pilot.log()
    detail = server.ok("GET", f"/workflows/{wf['uuid']}")
    jobs = {j["vertex"]: j for j in detail["jobs"]}
    assert jobs["raw"]["state"] == "finished" and jobs["side"]["state"] == "finished"
    assert jobs["evdisp"]["state"] == "stale" and jobs["plots"]["state"] == "cancelled"
    assert "stale" in jobs["plots"]["error"] and "evdisp" in jobs["plots"]["error"]
    assert "stale" in detail["error"]
    assert events(server, "workflow.dropped") and not events(server, "workflow.failed")


def test_a_running_job_past_its_deadline_is_stopped_when_the_type_says_so(server, pilots):
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 8, "stale": True, "stop_running": True})
    server.ok("PATCH", "/jobtypes/reco", {"eta": 8, "stale": True})
    # Its payload would outlast every guard of the test: ending at all, it was stopped.
    stopped = server.submit({"payload": "sleep 3600", "jobtype": "evdisp", "timelimit": 7200})[0]
    kept = server.submit({"payload": "sleep 12", "jobtype": "reco"})[0]
    first, second = pilots(server, "-c", "1", "-p", "1"), pilots(server, "-c", "1", "-p", "1")
    server.wait_for(lambda: server.job(stopped["uuid"])["state"] == "stale", timeout=30)
    assert first.proc.wait(60) == 0 and second.proc.wait(60) == 0
    job = server.job(stopped["uuid"])
    assert job["state"] == "stale" and job["ts_sta"] and "before it finished" in job["error"]
    assert server.job(kept["uuid"])["state"] == "finished"                       # running: not stopped


def _measure(server, pilots, jobtype: str, payload: str, n: int = 2) -> None:
    """Run n jobs of a type with a real pilot so that the server has measured its run time."""
    jobs = server.submit(*({"payload": payload, "jobtype": jobtype} for _ in range(n)))
    pilot = pilots(server, "-c", "1", "-p", "1")
    assert pilot.proc.wait(60) == 0, pilot.log()
    assert {server.job(j["uuid"])["state"] for j in jobs} == {"finished"}


def test_shedding_drops_what_cannot_meet_its_deadline(server, pilots):
    _measure(server, pilots, "evdisp", "sleep 1")
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 30, "shed": True})
    idle = pilots(server, "-c", "0", "-p", "2")
    server.wait_for(lambda: server.ok("GET", "/summary")["pilots"]["idle"] == 1, timeout=20)
    hopeless, fine = server.submit({"payload": "true", "jobtype": "evdisp", "arrived": time.time() - 29.5},
                                   {"payload": "sleep 1", "jobtype": "evdisp"})
    assert hopeless["state"] == "stale" and hopeless["dropped"] == "shed" and hopeless["error"].startswith("shed:")
    server.wait_for(lambda: server.job(fine["uuid"])["state"] == "finished", timeout=30)
    assert hopeless["uuid"] in {e["job"] for e in events(server, "job.shed")}
    assert server.ok("GET", "/summary")["freshness"]["types"]["evdisp"]["windows"]["10m"]["dropped"]["shed"] == 1
    answer = server.ok("GET", f"/freshness/admission?jobtype=evdisp&arrived={time.time() - 29.5}")
    assert answer["admit"] is False and "deadline" in answer["reason"]
    assert server.ok("GET", "/freshness/admission?jobtype=evdisp")["admit"] is True
    # in one request, each job admitted is ahead of the next: one pilot and ~1 s jobs meet an ETA of
    # 5 s for the first few, the rest are shed
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 5})
    batch = server.submit(*({"payload": "true", "jobtype": "evdisp"} for _ in range(10)))
    admitted = [j["state"] == "defined" for j in batch]
    assert 2 <= sum(admitted) <= 5 and admitted == sorted(admitted, reverse=True), admitted
    assert all(j["error"].startswith("shed: predicted wait") for j in batch if j["state"] == "stale")
    idle.close()


def test_the_prediction_counts_only_the_pilots_of_the_site_a_job_is_restricted_to(server, pilots):
    _measure(server, pilots, "evdisp", "sleep 1")
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 5, "shed": True})
    small = server.register(site="small", host="wn00")
    for i in range(4):
        server.register(site="big", host=f"wn1{i}")
    # one pilot at the small site: ~1 s jobs meet an ETA of 5 s for the first few only
    there = server.submit(*({"payload": "true", "jobtype": "evdisp", "site": "small"} for _ in range(10)))
    admitted = [j["state"] == "defined" for j in there]
    assert 2 <= sum(admitted) <= 5 and admitted == sorted(admitted, reverse=True), admitted
    answer = server.ok("GET", "/freshness/admission?jobtype=evdisp&site=small")
    assert answer["admit"] is False and "deadline" in answer["reason"]
    # the big site's four pilots are not held up by the small site's queue
    assert server.ok("GET", "/freshness/admission?jobtype=evdisp&site=big")["admit"] is True
    assert all(j["state"] == "defined" for j in server.submit(
        *({"payload": "true", "jobtype": "evdisp", "site": "big"} for _ in range(10))))
    assert server.ok("GET", f"/pilots/{small}")["site"] == "small"


def test_lower_priority_work_is_shed_to_keep_a_critical_type_within_its_eta(server, pilots):
    _measure(server, pilots, "evdisp", "sleep 1")
    _measure(server, pilots, "reco", "sleep 3")
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 4})
    server.ok("PATCH", "/jobtypes/reco", {"shed": True})
    server.submit({"payload": "true", "jobtype": "evdisp", "priority": 10, "state": "template"})   # its priority
    pilots(server, "-c", "0", "-p", "2")
    server.wait_for(lambda: server.ok("GET", "/summary")["pilots"]["idle"] == 1, timeout=20)
    # one pilot: a 3 s reco job holding it would leave a new evdisp job 1 s of its 4 s ETA (80 % margin)
    reco = server.submit({"payload": "true", "jobtype": "reco"})[0]
    assert reco["state"] == "stale" and reco["dropped"] == "shed"
    assert "push evdisp" in reco["error"]
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 60})
    assert server.submit({"payload": "sleep 3", "jobtype": "reco"})[0]["state"] == "defined"
    # the same judgement protects a workflow's roots; the workflow is dropped, not failed
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 4})
    server.ok("POST", "/templates", {"yaml": "name: r\njobs:\n  r: {jobtype: reco, payload: 'true'}\n"}, 201)
    assert server.ok("GET", "/freshness/admission?template=r")["admit"] is False
    wf = server.ok("POST", "/workflows", {"template": "r"}, 201)
    assert wf["state"] == "dropped" and "shed" in wf["error"]


INJECTED = textwrap.dedent("""
    name: monitor
    jobs:
      IN: {noop: true}
      display: {jobtype: evdisp, payload: "true"}
    data:
      - {id: raw, source: IN, target: display, datatag: RAW, datatype: TXT}
""")


def test_the_injector_asks_the_server_and_skips_what_would_be_shed(server, pilots, tmp_path):
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    server.ok("POST", "/templates", {"yaml": INJECTED}, 201)
    _measure(server, pilots, "evdisp", "sleep 1")
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 1, "shed": True})
    pilots(server, "-c", "0", "-p", "2")
    server.wait_for(lambda: server.ok("GET", "/summary")["pilots"]["idle"] == 1, timeout=20)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "run1.txt").write_text("TEST\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    command = [sys.executable, "-m", "p3s.cli.injector", "-S", server.url, "--token", server.token, "--template", "monitor",
               "--datatype", "TXT", "--once", "-d", str(inbox), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["skipped"] == {"shed": 1}
    record = server.ok("GET", "/data?name=run1.txt")["items"][0]
    assert record["state"] == "skipped" and "shed: predicted wait" in record["comment"]
    assert server.ok("GET", "/workflows")["total"] == 0
    server.wait_for(lambda: server.ok("GET", "/freshness")["injector_dropped"]["10m"] == {"shed": 1})  # 1 s cache
    # with an ETA it can meet, the next file goes through and its jobs carry the file's arrival
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 60})
    (inbox / "run2.txt").write_text("TEST\n")
    seen = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(done.stdout)["accepted"] == 1, done.stderr
    record = server.ok("GET", "/data?name=run2.txt")["items"][0]
    assert abs(parse(record["arrived"]).timestamp() - seen) < 10
    wf = server.ok("GET", "/workflows")["items"][0]
    assert wf["arrived"] == record["arrived"]
    server.wait_for(lambda: server.ok("GET", f"/workflows/{wf['uuid']}")["state"] == "finished", timeout=30)
    server.wait_for(lambda: (server.ok("GET", "/freshness")["workflows"].get("monitor") or {}).get("10m", {}).get("done") == 1)
    assert server.ok("GET", "/freshness")["workflows"]["monitor"]["10m"]["turnaround_p95_s"] >= 0


def test_deadlines_policies_and_figures_survive_a_server_kill(server, pilots):
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 4, "stale": True, "order": "newest-first"})
    done = server.submit({"payload": "true", "jobtype": "evdisp", "arrived": time.time() - 1})[0]
    pilot = pilots(server, "-c", "1", "-p", "1")
    assert pilot.proc.wait(60) == 0, pilot.log()
    waiting = server.submit({"payload": "true", "jobtype": "evdisp", "name": "old"},
                            {"payload": "true", "jobtype": "evdisp", "name": "new", "eta": 600})
    server.restart(signal.SIGKILL)
    server.wait_for(lambda: server.job(waiting[0]["uuid"])["state"] == "stale", timeout=20)
    assert server.job(waiting[1]["uuid"])["state"] == "defined"
    row = server.ok("GET", "/freshness")["types"]["evdisp"]
    assert row["order"] == "newest-first" and row["windows"]["24h"]["done"] == 1
    assert row["windows"]["24h"]["dropped"]["stale"] == 1 and server.job(done["uuid"])["state"] == "finished"
