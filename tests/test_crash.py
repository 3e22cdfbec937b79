"""Exactly-once survives crashes: the server killed at its worst moments strands no job.

The crash hook (``P3STEST_CRASH_AT``, see p3s.faults) makes the server exit like kill -9 right
after a write and before its reply; the server is then restarted on the same data.
"""
from __future__ import annotations

from p3s.faults import VARIABLE
from pilot_support import pilots  # noqa: F401  (fixture)


def crash_at(server, point: str) -> None:
    """Restart ``server`` with the crash hook set at ``point``."""
    server.extra_env = {VARIABLE: point}
    server.restart()


def recover(server) -> None:
    """Wait for the hooked server to die, then start it again on the same port, hook unset."""
    port = server.port
    assert server.proc.wait(60) == 70              # it died at the hook, not otherwise
    server.stop()
    server.extra_env = {}
    server.start(port)


def events_of(server, kind: str, job: str) -> list[dict]:
    return server.ok("GET", f"/events?kind={kind}&job={job}")["items"]


def test_crash_between_claim_and_reply_strands_no_job(make_server, pilots):
    server = make_server()
    crash_at(server, "claim")
    job = server.submit({"payload": "true"})[0]
    pilot = pilots(server)
    recover(server)
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "finished", timeout=30)
    done = server.job(job["uuid"])
    assert done["attempts"] == 1                     # offered again to the same pilot, run once
    assert server.ok("GET", f"/pilots/{done['pilot']}")["state"] in ("idle", "running")
    assert pilot.proc.poll() is None


def test_crash_after_jobstart_write_does_not_kill_the_payload(make_server, pilots):
    server = make_server()
    crash_at(server, "jobstart")
    job = server.submit({"payload": "sleep 3"})[0]
    pilot = pilots(server)
    recover(server)
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "finished", timeout=30)
    assert server.job(job["uuid"])["attempts"] == 1
    assert pilot.proc.poll() is None, pilot.log()    # the repeated jobstart was taken as applied


def test_crash_after_pilot_declared_lost_ends_its_job_at_start(make_server):
    server = make_server()
    crash_at(server, "pilot_lost")
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstart", job=job["uuid"], pid=7)
    recover(server)                                   # the pilot fell silent; the reaper died mid-way
    assert server.ok("GET", f"/pilots/{pilot}")["state"] == "lost"
    assert server.job(job["uuid"])["state"] == "pilot_lost"
    assert server.ok("GET", "/summary")["jobs"]["running"] == 0


def test_dispatched_job_not_started_in_time_goes_back_uncounted(make_server):
    server = make_server(dispatch_timeout=2)
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    offer = server.claim(pilot)["job"]
    assert offer["uuid"] == job["uuid"] and offer["attempt"] == 1

    def released():
        server.report(pilot, "heartbeat")              # the pilot stays alive, it just never starts it
        return server.job(job["uuid"])["state"] == "defined"

    server.wait_for(released, timeout=15, interval=0.5)
    back = server.job(job["uuid"])
    assert back["attempts"] == 0 and back["pilot"] is None
    assert events_of(server, "job.released", job["uuid"])
    # the pilot had started it after all: it is its again, not killed
    reply = server.report(pilot, "jobstart", job=job["uuid"], attempt=1, pid=9)
    assert reply.status == 200 and reply.body["kill_job"] is None
    again = server.job(job["uuid"])
    assert again["state"] == "running" and again["pilot"] == pilot and again["attempts"] == 1
    assert events_of(server, "job.adopted", job["uuid"])


def test_a_pilot_asking_for_work_does_not_hold_a_running_job(server):
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstart", job=job["uuid"], pid=7)
    offer = server.claim(pilot)["job"]                 # asks for work: it does not run the job
    assert events_of(server, "job.released", job["uuid"])
    assert offer["uuid"] == job["uuid"] and offer["attempt"] == 1     # released uncounted, claimed anew


def test_a_claim_reply_lost_is_offered_again(server):
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    first = server.claim(pilot)["job"]
    again = server.claim(pilot)["job"]                 # the same request again: its reply was lost
    assert first == again and server.job(job["uuid"])["attempts"] == 1


def test_heartbeat_for_a_job_held_elsewhere_is_an_order_to_stop_it(server):
    job = server.submit({"payload": "x"})[0]
    owner, other = server.register(), server.register()
    server.claim(owner)
    reply = server.report(other, "heartbeat", job=job["uuid"], usage={})
    assert reply.status == 200 and reply.body["kill_job"] == job["uuid"]
    assert server.job(job["uuid"])["pilot"] == owner


PAIR = """
name: pair
jobs:
  first: {jobtype: quick, payload: "true"}
  second: {jobtype: later, payload: "true"}
data:
  - {source: first, target: second, datatag: A}
"""


def _workflow(server) -> tuple[str, dict]:
    server.ok("POST", "/templates", {"yaml": PAIR}, 201)
    wf = server.ok("POST", "/workflows", {"template": "pair"}, 201)
    return wf["uuid"], {j["vertex"]: j["uuid"] for j in server.ok("GET", f"/workflows/{wf['uuid']}")["jobs"]}


def test_crash_after_a_workflow_job_went_stale_drops_the_workflow_at_start(make_server):
    server = make_server()
    crash_at(server, "workflow_end")
    server.ok("PATCH", "/jobtypes/quick", {"eta": 1, "stale": True})
    wf, jobs = _workflow(server)
    recover(server)                      # the sweep made `first` stale, then died before the workflow moved
    assert server.job(jobs["first"])["state"] == "stale"
    detail = server.ok("GET", f"/workflows/{wf}")
    assert detail["state"] == "dropped" and "stale" in detail["error"]
    second = server.job(jobs["second"])
    assert second["state"] == "cancelled" and "stale" in second["error"]


def test_crash_after_a_workflow_job_failed_fails_the_workflow_at_start(make_server):
    server = make_server()
    crash_at(server, "workflow_end")
    wf, jobs = _workflow(server)
    pilot = server.register()
    assert server.claim(pilot)["job"]["uuid"] == jobs["first"]
    server.report(pilot, "jobstart", job=jobs["first"], pid=7)
    try:
        server.report(pilot, "jobstop", job=jobs["first"], exit_code=3)
    except ConnectionError:
        pass                             # the server died before its reply
    recover(server)                      # the job's failure was written, the workflow's was not
    assert server.job(jobs["first"])["state"] == "failed"
    assert server.ok("GET", f"/workflows/{wf}")["state"] == "failed"
    assert server.job(jobs["second"])["state"] == "cancelled"


def _fail_once(server, **job: object) -> str:
    """Submit a job and report it failed (exit 3) through a pilot, the server dying at the hook."""
    uuid = server.submit({"payload": "false", **job})[0]["uuid"]
    pilot = server.register()
    assert server.claim(pilot)["job"]["uuid"] == uuid
    server.report(pilot, "jobstart", job=uuid, pid=7)
    try:
        server.report(pilot, "jobstop", job=uuid, exit_code=3)
    except ConnectionError:
        pass                             # the server died before its reply
    return uuid


def test_crash_as_a_job_fails_with_attempts_left_still_retries_it(make_server):
    # The issue: the failure and the return to `defined` were two writes; a kill between them left
    # the job failed for good although its user had asked for retries.
    server = make_server()
    crash_at(server, "job_ended")
    uuid = _fail_once(server, max_attempts=2)
    recover(server)
    job = server.job(uuid)
    assert (job["state"], job["attempts"], job["exit_code"]) == ("defined", 1, None), job
    pilot = server.register()
    offer = server.claim(pilot)["job"]
    assert offer["uuid"] == uuid and offer["attempt"] == 2


def test_crash_as_a_job_fails_without_retries_leaves_it_failed(make_server):
    server = make_server()
    crash_at(server, "job_ended")
    uuid = _fail_once(server)            # retries are off by default: nobody asked for one
    recover(server)
    job = server.job(uuid)
    assert (job["state"], job["attempts"], job["exit_code"]) == ("failed", 1, 3), job
    assert server.ok("GET", "/summary")["jobs"].get("defined", 0) == 0



def _left_failed_by_an_older_server(server, ended: dict[str, float]) -> None:
    """Stop ``server`` and write its jobs (uuid: hours since they ended) as an older p3s killed
    between a job's failure and its retry (two writes then) left them: failed, one attempt used;
    the database is then one an older p3s wrote (no marker of the one-time repair)."""
    import datetime as dt

    from p3s import models
    from p3s.kept import kept_collection
    from p3s.reconcile import RETRY_GAP_CLOSED
    from p3s.store import Database

    server.stop()
    database = Database(server.db, server.data_dir, "p3s")
    database.open()
    try:
        for uuid, hours in ended.items():
            stopped = models.utcnow() - dt.timedelta(hours=hours)
            written = models.Job._get_collection().update_one({"_id": uuid}, {"$set": {
                "state": "failed", "attempts": 1, "exit_code": 3, "error": "exit code 3", "ts_sto": stopped}})
            assert written.matched_count == 1
        kept_collection().delete_one({"_id": RETRY_GAP_CLOSED})
    finally:
        database.close()


def test_a_job_an_older_server_left_failed_with_attempts_left_is_retried_at_start(make_server):
    server = make_server()
    retried = server.submit({"payload": "false", "max_attempts": 2})[0]["uuid"]
    no_attempts_left = server.submit({"payload": "false"})[0]["uuid"]
    days_old = server.submit({"payload": "false", "max_attempts": 2})[0]["uuid"]
    _left_failed_by_an_older_server(server, {retried: 1, no_attempts_left: 1, days_old: 48})
    server.start()
    job = server.job(retried)
    assert (job["state"], job["attempts"], job["exit_code"]) == ("defined", 1, None), job
    assert server.job(no_attempts_left)["state"] == "failed"       # nobody asked to retry it
    assert server.job(days_old)["state"] == "failed"               # its results would come days late
    assert len(events_of(server, "job.retry", retried)) == 1
    assert server.claim(server.register())["job"]["uuid"] == retried
