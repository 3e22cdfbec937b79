"""The reaper: silent pilots become lost with their jobs; overdue jobs end as timelimit; retries."""
from __future__ import annotations

import time


def test_silent_pilot_is_lost_and_its_job_pilot_lost(server):
    job = server.submit({"payload": "x"})[0]
    pilot = server.register(host="wn09")
    server.claim(pilot)
    server.report(pilot, "jobstart", job=job["uuid"], pid=7)
    lost_after = server.wait_for(lambda: server.job(job["uuid"])["state"] == "pilot_lost", timeout=10)
    assert lost_after
    assert server.ok("GET", f"/pilots/{pilot}")["state"] == "lost"
    ended = server.job(job["uuid"])
    assert "wn09" in ended["error"] and ended["ts_sto"]
    kinds = [e["kind"] for e in server.ok("GET", "/events?limit=50")["items"]]
    assert "pilot.lost" in kinds and "job.pilot_lost" in kinds
    late = server.report(pilot, "jobstop", job=job["uuid"], exit_code=0)
    assert late.status == 409                                       # a lost pilot is told to stop
    assert server.ok("GET", "/summary")["pilots"]["lost"] == 1


def test_pilot_that_keeps_heartbeating_is_not_lost(server):
    pilot = server.register()
    for _ in range(5):
        assert server.report(pilot, "heartbeat").status == 200
        time.sleep(1)
    assert server.ok("GET", f"/pilots/{pilot}")["state"] == "idle"


def test_job_with_attempts_left_goes_back_to_defined(server):
    job = server.submit({"payload": "x", "max_attempts": 2})[0]
    first = server.register()
    server.claim(first)
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "defined", timeout=10)
    again = server.job(job["uuid"])
    assert again["attempts"] == 1 and again["pilot"] is None and "lost" in again["error"]
    second = server.register()
    assert server.claim(second)["job"]["uuid"] == job["uuid"]
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "pilot_lost", timeout=10)
    assert server.job(job["uuid"])["attempts"] == 2                 # out of attempts: stays ended


def test_overdue_running_job_ends_as_timelimit_and_pilot_is_told(server):
    job = server.submit({"payload": "sleep 999", "timelimit": 1})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)

    def overdue():
        server.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 1})   # keep the pilot alive
        return server.job(job["uuid"])["state"] == "timelimit"

    server.wait_for(overdue, timeout=10, interval=0.5)
    reply = server.report(pilot, "heartbeat", job=job["uuid"])
    assert reply.status == 200 and reply.body["kill_job"] == job["uuid"]
    assert "time limit" in server.job(job["uuid"])["error"]
    # the pilot's own timelimit report agrees with the server's verdict: taken, and the pilot is free
    assert server.report(pilot, "timelimit", job=job["uuid"]).status == 200
    assert server.report(pilot, "jobstop", job=job["uuid"], exit_code=0).status == 409
    assert server.ok("GET", f"/pilots/{pilot}")["state"] == "idle"
