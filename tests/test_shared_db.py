"""Several server processes on one MongoDB: limits, reaping and queues hold across all of them."""
from __future__ import annotations

import concurrent.futures
import signal

import pytest

from conftest import TEST_DB

pytestmark = pytest.mark.skipif(not TEST_DB, reason="several servers share only a MongoDB (P3S_TEST_DB)")

SHARED = {"sync_period": 0.5}


def servers(make_server, n: int) -> list:
    first = make_server(auth=False, **SHARED)
    return [first] + [make_server(auth=False, db=first.db, **SHARED) for _ in range(n - 1)]


def active(server) -> list[dict]:
    return server.ok("GET", "/jobs?state=dispatched,running&limit=100")["items"]


def claim_all(pairs: list) -> list[dict]:
    with concurrent.futures.ThreadPoolExecutor(len(pairs)) as pool:
        replies = list(pool.map(lambda sp: sp[0].claim(sp[1])["job"], pairs))
    return [r for r in replies if r]


def test_a_limit_of_one_holds_across_three_servers(make_server):
    group = servers(make_server, 3)
    group[0].ok("PUT", "/jobtypes/reco", {"limit": 1})
    group[0].submit(*({"payload": str(i), "jobtype": "reco"} for i in range(6)))
    for server in group:    # every server sees the limit and the jobs
        server.wait_for(lambda s=server: s.ok("GET", "/summary")["queue"]["limits"].get("reco") == 1
                        and s.ok("GET", "/summary")["queue"]["ready"] == 6)
    pilots = [(s, s.register(host=f"h{i}")) for i, s in enumerate(group * 4)]
    handed = claim_all(pilots)
    assert len(handed) == 1 and len(active(group[0])) == 1
    # the job ends on one server; the next one goes out from any server, still one at a time
    holder = next(p for p in pilots if p[0].job(handed[0]["uuid"])["pilot"] == p[1])
    assert holder[0].report(holder[1], "jobstop", job=handed[0]["uuid"], exit_code=0).status == 200
    others = [p for p in pilots if p is not holder]
    again = []
    for _ in range(20):
        again = claim_all(others)
        if again:
            break
    assert len(again) == 1 and len(active(group[1])) == 1


def test_survivor_reaps_the_pilots_and_jobs_of_a_killed_server(make_server):
    first, second = servers(make_server, 2)
    silent_job, long_job = first.submit({"payload": "a", "timelimit": 600}, {"payload": "b", "timelimit": 1})
    silent = first.register(host="gone")
    assert first.claim(silent)["job"]["uuid"] == silent_job["uuid"]
    first.report(silent, "jobstart", job=silent_job["uuid"], pid=1)
    busy = first.register(host="busy")
    assert first.claim(busy)["job"]["uuid"] == long_job["uuid"]
    first.report(busy, "jobstart", job=long_job["uuid"], pid=2)
    first.stop(signal.SIGKILL)

    def reaped() -> bool:
        # the busy pilot goes on talking, now to the survivor; the silent one says nothing
        second.report(busy, "heartbeat", job=long_job["uuid"], usage={"rss": 1})
        return (second.job(long_job["uuid"])["state"] == "timelimit"
                and second.job(silent_job["uuid"])["state"] == "pilot_lost")

    second.wait_for(reaped, timeout=20, interval=0.5)
    assert second.ok("GET", f"/pilots/{silent}")["state"] == "lost"
    assert second.ok("GET", f"/pilots/{busy}")["state"] != "lost"
    assert second.report(busy, "heartbeat", job=long_job["uuid"]).body["kill_job"] == long_job["uuid"]


def test_a_killed_server_does_not_keep_its_slot(make_server):
    first, second, third = servers(make_server, 3)
    first.ok("PUT", "/jobtypes/reco", {"limit": 1})
    first.submit(*({"payload": str(i), "jobtype": "reco"} for i in range(2)))
    pilot = first.register(host="doomed")
    held = first.claim(pilot)["job"]
    first.report(pilot, "jobstart", job=held["uuid"], pid=1)
    first.stop(signal.SIGKILL)
    waiting = [(second, second.register(host="w2")), (third, third.register(host="w3"))]
    assert claim_all(waiting) == []                        # the dead server's job still holds the slot

    def next_job() -> list:
        # the dead server's pilot is declared lost by a survivor, its job ends, the slot is free
        for s, p in waiting:
            s.report(p, "heartbeat")
        return claim_all(waiting)

    got = second.wait_for(next_job, timeout=20, interval=0.5)
    assert len(got) == 1 and got[0]["uuid"] != held["uuid"]
    assert second.job(held["uuid"])["state"] == "pilot_lost"
    assert len(active(third)) == 1


def test_a_job_another_server_submits_reaches_waiting_pilots_here(make_server):
    first, second = servers(make_server, 2)
    pilot = second.register()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(second.claim, pilot, 4)
        job = first.submit({"payload": "x"})[0]
        assert waiting.result(timeout=30)["job"]["uuid"] == job["uuid"]


def test_freshness_figures_count_the_jobs_that_ended_through_every_server(make_server):
    first, second = servers(make_server, 2)
    for server in (first, second, second):
        job = server.submit({"payload": "x", "jobtype": "quick", "eta": 600})[0]
        pilot = server.register(host="wn")
        server.wait_for(lambda s=server, p=pilot: (s.claim(p)["job"] or {}).get("uuid") == job["uuid"])
        server.report(pilot, "jobstart", job=job["uuid"], pid=1)
        assert server.report(pilot, "jobstop", job=job["uuid"], exit_code=0).status == 200

    def merged(server) -> bool:
        window = server.ok("GET", "/freshness")["types"].get("quick", {}).get("windows", {}).get("10m", {})
        return window.get("done") == 3 and window.get("within_eta") == 3

    for server in (first, second):
        server.wait_for(lambda s=server: merged(s), timeout=20, interval=0.5)


def _fail(server, n: int) -> None:
    """``n`` reco jobs submitted, run and failed through ``server``."""
    for _ in range(n):
        job = server.submit({"payload": "false", "jobtype": "reco"})[0]
        pilot = server.register(host="wn")
        server.wait_for(lambda p=pilot: (server.claim(p)["job"] or {}).get("uuid") == job["uuid"])
        server.report(pilot, "jobstart", job=job["uuid"], pid=1)
        assert server.report(pilot, "jobstop", job=job["uuid"], exit_code=1).status == 200


def _failed(server) -> int:
    return server.ok("GET", "/stats")["windows"]["1h"]["by_type"].get("reco", {}).get("failed", 0)


def test_kept_statistics_of_two_servers_add_up_and_a_kill_counts_nothing_twice(make_server):
    # The issue: each server saved its minutes over the other's, so the kept statistics held one
    # server's counts; and a killed server recounted from the records what the other had counted.
    first, second = servers(make_server, 2)
    _fail(first, 2)
    _fail(second, 3)
    first.restart()                      # a clean stop saves its minutes, the start reads them back
    second.restart()
    for server in (first, second):
        server.wait_for(lambda s=server: _failed(s) == 5, timeout=45, interval=0.5)
    _fail(second, 1)                     # not saved yet: second saves every 10 s
    port = first.port
    first.stop(signal.SIGKILL)
    first.start(port)                    # the kill came after second's failure: first must not count it
    assert "not counted since the last save (other servers were alive)" in first.log_path.read_text()
    for server in (first, second):
        server.wait_for(lambda s=server: _failed(s) == 6, timeout=45, interval=0.5)
    second.restart()                     # its own minutes, saved at the stop, are not added again
    third = make_server(auth=False, db=first.db, **SHARED)
    for server in (first, second, third):
        server.wait_for(lambda s=server: _failed(s) == 6, timeout=45, interval=0.5)
        assert _failed(server) == 6
