"""A loop that never stalls: bulk operations in slices, and a reaper that does not blame pilots
for silence the server caused. (Timings are in bench/stall.py; these tests check behaviour.)"""
from __future__ import annotations

import concurrent.futures
import threading
import time

from conftest import on_mongodb
from p3s.faults import STALL_VARIABLE


def test_pilot_is_not_lost_for_a_stall_of_the_server(make_server):
    server = make_server()                    # pilot_lost_timeout 3 s, reaper every second
    server.extra_env = {STALL_VARIABLE: "6"}
    server.restart()
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstart", job=job["uuid"], pid=7)
    server.ok("GET", "/summary")              # holds the loop for 6 s: nobody can be heard meanwhile
    time.sleep(1.5)                           # the reaper runs at least once after the stall
    reply = server.report(pilot, "heartbeat", job=job["uuid"], usage={})
    assert reply.status == 200, reply
    assert server.job(job["uuid"])["state"] == "running"
    assert server.ok("GET", f"/pilots/{pilot}")["state"] == "running"
    loop = server.ok("GET", "/summary")["server"]["loop"]
    assert loop["max_late_ms"] >= 5000 and loop["stalls"]


def test_bulk_delete_in_slices_keeps_what_changed_meanwhile(server):
    jobs = server.submit(*({"payload": "x", "jobtype": "bulk", "name": f"j{i}"} for i in range(600)))
    pilots = [server.register(jobtypes=["bulk"]) for _ in range(40)]
    result: dict = {}
    deleter = threading.Thread(target=lambda: result.update(server.ok("DELETE", "/jobs?jobtype=bulk")))
    deleter.start()
    claimed = []
    while deleter.is_alive() and pilots:      # pilots are served while the delete goes on
        pilot = pilots.pop()
        offer = server.claim(pilot)["job"]
        if offer:
            claimed.append(offer["uuid"])
            server.report(pilot, "jobstart", job=offer["uuid"], pid=1)
    deleter.join()
    assert len(result["deleted"]) + len(claimed) == len(jobs)
    assert not set(result["deleted"]) & set(claimed)
    for uuid in claimed:
        assert server.job(uuid)["state"] == "running"
    summary = server.ok("GET", "/summary")
    assert summary["jobs"]["defined"] == 0 and summary["jobs"]["running"] == len(claimed)


def test_bulk_create_is_all_or_none(server):
    good = [{"payload": "x", "name": f"j{i}"} for i in range(450)]
    taken = server.submit({"payload": "y"})[0]["uuid"]
    reply = server.call("POST", "/jobs", good + [{"payload": "z", "uuid": taken}])
    assert reply.status == 409
    assert server.ok("GET", "/jobs?limit=1")["total"] == 1
    assert len(server.submit(*good)) == 450
    assert server.ok("GET", "/summary")["jobs"]["defined"] == 451


def test_what_a_bulk_create_makes_is_kept_out_of_full_collections(server):
    """A full garbage collection walks every object not frozen: the documents a bulk create leaves
    in the embedded store's cache would make each one stall the loop (bench/stall.py measures it)."""
    before = server.ok("GET", "/summary")["server"]["gc"]["frozen"]
    server.submit(*({"payload": "x", "jobtype": "bulk", "name": f"j{i}"} for i in range(3000)))
    after = server.ok("GET", "/summary")["server"]["gc"]["frozen"]
    # each job leaves at least its ready-queue entry (the embedded engine keeps no document in memory)
    assert after - before >= 3000 // 2, (before, after)


def test_a_data_list_is_bounded_and_all_or_none(server):
    """One body can hold tens of thousands of records: at most 10,000 per request, all or none."""
    reply = server.call("POST", "/data", [{"name": f"f{i}"} for i in range(10001)])
    assert reply.status == 413, reply
    reply = server.call("POST", "/data", [{"name": f"f{i}"} for i in range(300)] + [{"name": 1}])
    assert reply.status == 422 and reply.body["error"]["field"] == "[300].name"
    assert server.ok("GET", "/data?limit=1")["total"] == 0


def test_a_data_delete_lets_other_requests_through(server):
    """Deleting many data records is done in slices: a request sent meanwhile is answered first."""
    for _ in range(3):
        assert server.call("POST", "/data", [{"name": f"f{i}", "dirpath": "/d"} for i in range(5000)]).status == 201
    answered: list[str] = []
    deleter = threading.Thread(target=lambda: (server.ok("DELETE", "/data?dirpath=/d"), answered.append("delete")))
    deleter.start()
    while not answered and server.ok("GET", "/data?limit=1&dirpath=/d")["total"] == 15000:
        pass                                  # the delete has begun once the count falls
    server.ok("GET", "/status")
    answered.append("status")
    deleter.join()
    assert answered[0] == "status", answered
    assert server.ok("GET", "/data?limit=1")["total"] == 0


def test_a_pilot_delete_lets_other_requests_through(server):
    """Deleting many stopped or lost pilots is done in slices: a request sent meanwhile is answered
    first (it was one O(n²) call on the embedded engine)."""
    count = 800 if on_mongodb() else 3000     # the quadratic cost was the embedded engine's; on the
    with concurrent.futures.ThreadPoolExecutor(8) as pool:    # wire pass the reaper's writes are slow
        pilots = list(pool.map(lambda i: server.register(host=f"wn{i}"), range(count)))
    while server.ok("GET", "/summary")["pilots"].get("lost", 0) < len(pilots):
        time.sleep(0.5)                       # silent: the reaper declares them lost
    answered: list[str] = []
    deleter = threading.Thread(
        target=lambda: answered.append(len(server.ok("DELETE", "/pilots?state=lost")["deleted"])))
    deleter.start()
    while not answered and server.ok("GET", "/pilots?limit=1&state=lost")["total"] == len(pilots):
        pass                                  # the delete has begun once the count falls
    server.ok("GET", "/status")
    answered.append("status")
    deleter.join()
    assert answered == ["status", len(pilots)], answered
    assert server.ok("GET", "/pilots?limit=1")["total"] == 0
