"""Brokerage over HTTP: ordering, matching, limits, exactly-once, long poll, kills."""
from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest


def test_priority_then_fifo_with_any_integer(server):
    jobs = server.submit({"payload": "a", "priority": 0}, {"payload": "b", "priority": -5},
                         {"payload": "c", "priority": 1000}, {"payload": "d", "priority": 11},
                         {"payload": "e", "priority": 11}, {"payload": "f", "priority": "0"})
    pilot = server.register()
    order = []
    for _ in jobs:
        job = server.claim(pilot)["job"]
        order.append(job["payload"])
        server.report(pilot, "jobstop", job=job["uuid"], exit_code=0)
    assert order == ["c", "d", "e", "a", "f", "b"]
    assert server.claim(pilot)["job"] is None


def test_jobtype_and_site_matching(server):
    server.submit({"payload": "reco", "jobtype": "reco"}, {"payload": "cern", "jobtype": "dqm", "site": "cern"})
    only_dqm = server.register(jobtypes=["dqm"], site="fnal")
    assert server.claim(only_dqm)["job"] is None          # dqm job wants site cern; reco is not dqm
    at_cern = server.register(jobtypes=["dqm"], site="cern")
    assert server.claim(at_cern)["job"]["payload"] == "cern"
    anything = server.register(site="fnal")
    assert server.claim(anything)["job"]["payload"] == "reco"


def test_jobtype_limit_applies_at_dispatch_and_jobs_wait(server):
    server.ok("PUT", "/jobtypes/evdisp", {"limit": 1})
    first, second = server.submit({"payload": "1", "jobtype": "evdisp"}, {"payload": "2", "jobtype": "evdisp"})
    assert [j["state"] for j in (first, second)] == ["defined", "defined"]     # accepted, not rejected
    p1, p2 = server.register(), server.register()
    got = server.claim(p1)["job"]
    assert got["uuid"] == first["uuid"]
    assert server.claim(p2)["job"] is None                                        # type at its limit
    types = {t["name"]: t for t in server.ok("GET", "/jobtypes")["items"]}
    assert types["evdisp"]["limit"] == 1 and types["evdisp"]["active"] == 1 and types["evdisp"]["defined"] == 1
    # a waiting pilot gets the held-back job as soon as the first one ends
    result = {}
    waiter = threading.Thread(target=lambda: result.update(server.claim(p2, wait=5)))
    waiter.start()
    time.sleep(0.3)
    server.report(p1, "jobstart", job=first["uuid"], pid=1)
    server.report(p1, "jobstop", job=first["uuid"], exit_code=0)
    waiter.join(10)
    assert result["job"]["uuid"] == second["uuid"]
    server.ok("PUT", "/jobtypes/evdisp", {"limit": 0})                            # 0 pauses the type
    server.submit({"payload": "3", "jobtype": "evdisp"})
    server.report(p2, "jobstop", job=second["uuid"], exit_code=0)
    assert server.claim(p2)["job"] is None


def test_200_concurrent_requests_for_100_jobs_hand_out_each_once(make_server):
    # Registering 200 pilots one after another takes seconds: a lost timeout of minutes keeps the
    # first ones alive until they claim (this test is about claims, not about reaping).
    server = make_server(pilot_lost_timeout=120)
    server.submit(*({"payload": f"job{i}"} for i in range(100)))
    pilots = [server.register(host=f"wn{i:03d}") for i in range(200)]
    barrier = threading.Barrier(50)

    def ask(pilot):
        try:
            barrier.wait(5)
        except threading.BrokenBarrierError:
            pass
        return server.claim(pilot, wait=0)["job"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(ask, pilots))
    handed = [r["uuid"] for r in results if r]
    assert len(handed) == 100 and len(set(handed)) == 100
    listed = server.ok("GET", "/jobs?state=dispatched&limit=1000")
    assert listed["total"] == 100
    owners = {j["uuid"]: j["pilot"] for j in listed["items"]}
    assert all(owners[r["uuid"]] == p for r, p in zip(results, pilots) if r)
    assert server.ok("GET", "/summary")["jobs"]["defined"] == 0


@pytest.mark.server_settings(long_poll_max=600)
def test_long_poll_hands_a_new_job_to_a_waiting_pilot_at_once(server):
    pilot = server.register()
    started = time.monotonic()
    assert server.claim(pilot, wait=0.5)["job"] is None
    assert time.monotonic() - started > 0.45                        # it waited before giving up
    result = {}

    def wait():
        # The poll may last 600 s: an answer carrying the job can only come from the push.
        result["reply"] = server.ok("POST", f"/pilots/{pilot}/request", {"wait": 600}, timeout=900)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    server.wait_for(lambda: server.ok("GET", "/summary")["queue"]["waiting_pilots"] == 1, timeout=30)
    job = server.submit({"payload": "fresh"})[0]
    waiter.join()                                                   # a lost push hangs: pytest's timeout ends it
    assert result["reply"]["job"]["uuid"] == job["uuid"]            # pushed, not found by polling


def test_wait_is_bounded_by_the_server(server):
    pilot = server.register()
    # long_poll_max is 5 in tests; unbounded, the wait would outlast the HTTP timeout and fail.
    reply = server.ok("POST", f"/pilots/{pilot}/request", {"wait": 3600}, timeout=120)
    assert reply["job"] is None and reply["kill"] is False


def test_lost_reply_is_delivered_again(server):
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    assert server.claim(pilot)["job"]["uuid"] == job["uuid"]
    assert server.claim(pilot)["job"]["uuid"] == job["uuid"]        # not started yet: same job again
    assert server.job(job["uuid"])["attempts"] == 1


def test_report_and_request_in_one_round_trip(server):
    a, b = server.submit({"payload": "a", "priority": 2}, {"payload": "b", "priority": 1})
    pilot = server.register()
    assert server.claim(pilot)["job"]["uuid"] == a["uuid"]
    reply = server.claim(pilot, report={"event": "jobstop", "job": a["uuid"], "exit_code": 3,
                                        "started": time.time() - 1, "stderr_tail": "boom"})
    assert reply["job"]["uuid"] == b["uuid"]
    ended = server.job(a["uuid"])
    assert ended["state"] == "failed" and ended["exit_code"] == 3 and ended["stderr_tail"] == "boom"
    assert ended["ts_sta"] and ended["ts_sto"]
    assert server.ok("GET", f"/pilots/{pilot}")["njobs"] == 1


def test_kill_pilots_by_selector_reaches_waiting_and_next_reply(server):
    waiting = server.register(host="wn07", site="cern")
    other = server.register(host="wn08", site="fnal")
    result = {}
    waiter = threading.Thread(target=lambda: result.update(server.claim(waiting, wait=5)))
    waiter.start()
    time.sleep(0.3)
    killed = server.ok("POST", "/pilots/kill", {"host": "wn07"}, 202)["killed"]
    assert killed == [waiting]
    waiter.join(5)
    assert result["kill"] is True and result["job"] is None
    assert server.report(other, "heartbeat").body["kill"] is False
    assert server.ok("POST", "/pilots/kill", {"site": "fnal", "state": "idle"}, 202)["killed"] == [other]
    assert server.report(other, "heartbeat").body["kill"] is True
    assert server.call("POST", "/pilots/kill", {}).status == 422
    assert server.report(other, "stopped", message="told to").status == 200
    assert server.ok("GET", f"/pilots/{other}")["state"] == "stopped"
    reply = server.call("POST", f"/pilots/{other}/request", {"wait": 0})
    assert reply.status == 409 and "stop" in reply.error["message"]


def test_kill_job_is_delivered_in_the_heartbeat_reply(server):
    job = server.submit({"payload": "sleep 100"})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstart", job=job["uuid"], pid=4242)
    assert server.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 10, "cpu_time": 1.5}).body["kill_job"] is None
    assert server.ok("POST", f"/jobs/{job['uuid']}/kill", status=202)["kill_requested"] is True
    assert server.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 30}).body["kill_job"] == job["uuid"]
    server.report(pilot, "killed", job=job["uuid"], exit_code=-15)
    ended = server.job(job["uuid"])
    assert ended["state"] == "killed"
    assert ended["usage"]["peak_rss"] == 30 and len(ended["usage_series"]) == 2
    assert server.report(pilot, "heartbeat").body["kill_job"] is None
    # a job not yet dispatched is simply cancelled
    queued = server.submit({"payload": "later"})[0]
    assert server.ok("POST", f"/jobs/{queued['uuid']}/kill", status=202)["state"] == "cancelled"
    assert server.call("POST", f"/jobs/{queued['uuid']}/kill").status == 409


def test_pilot_cannot_report_for_a_job_it_does_not_hold(server):
    job = server.submit({"payload": "x"})[0]
    owner, intruder = server.register(), server.register()
    server.claim(owner)
    reply = server.report(intruder, "jobstop", job=job["uuid"], exit_code=0)
    assert reply.status == 409
    assert server.job(job["uuid"])["state"] == "dispatched"
