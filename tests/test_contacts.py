"""Pilots' contacts are kept in memory and written in batches (p3s.contacts): no write of the
pilot's record per job request or heartbeat, yet the record, the reaper and kills stay right."""
from __future__ import annotations

import time

import pytest

from conftest import TEST_DB
from test_metrics import metric_value

# Contacts written every 150 s at most here (a quarter of the lost timeout): within a test, only
# the reads through the API (and the reaper's rounds) write them.
SLOW_WRITES = {"contact_write_period": 600, "pilot_lost_timeout": 600}


def record_writes(server) -> float:
    return metric_value(server, "p3s_pilot_record_writes_total")


def run_jobs(server, pilot: str, count: int, heartbeats: int = 2) -> None:
    """``count`` jobs through the API as a pilot would: claim, start, heartbeats, end with the next claim."""
    server.submit(*({"payload": "/bin/true", "jobtype": "contact"} for _ in range(count)))
    report = None
    for _ in range(count):
        body = {"report": report} if report else {}
        job = server.claim(pilot, **body)["job"]
        assert job is not None
        assert server.report(pilot, "jobstart", job=job["uuid"], pid=1, ts=time.time()).status == 200
        for _ in range(heartbeats):
            reply = server.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 1000, "cpu_time": 0.1})
            assert reply.status == 200, reply
        report = {"event": "jobstop", "job": job["uuid"], "attempt": job["attempt"], "exit_code": 0}
    server.claim(pilot, report=report)


def test_requests_and_heartbeats_do_not_each_write_the_pilot(make_server):
    server = make_server(**SLOW_WRITES)
    pilot = server.register()
    before = record_writes(server)
    run_jobs(server, pilot, 10)
    # 10 jobs: 11 requests, 10 starts, 20 heartbeats; written once per reaper round at most.
    assert record_writes(server) - before <= 3
    # What the API shows is written first: jobs done, state, last contact.
    shown = server.ok("GET", f"/pilots/{pilot}")
    assert shown["njobs"] == 10 and shown["state"] == "idle" and shown["job"] is None
    summary = server.ok("GET", "/summary")
    assert summary["pilots"]["idle"] == 1 and summary["pilots"]["running"] == 0


def test_the_summary_counts_a_pilot_in_its_unwritten_state(make_server):
    server = make_server(**SLOW_WRITES)
    pilot = server.register(site="s1")
    server.submit({"payload": "/bin/true"})
    before = record_writes(server)
    job = server.claim(pilot)["job"]
    summary = server.ok("GET", "/summary")
    assert summary["pilots"]["running"] == 1 and summary["pilots"]["idle"] == 0
    assert summary["pilots_by_site"] == {"s1": {"running": 1}}
    server.claim(pilot, report={"event": "jobstop", "job": job["uuid"], "attempt": job["attempt"], "exit_code": 0})
    summary = server.ok("GET", "/summary")
    assert summary["pilots"]["running"] == 0 and summary["pilots_by_site"] == {"s1": {"idle": 1}}
    assert record_writes(server) - before <= 1


@pytest.mark.skipif(not TEST_DB, reason="reads the pilot's record in the MongoDB (P3S_TEST_DB)")
def test_the_database_gets_a_pilots_contacts_in_a_batch(make_server):
    import pymongo

    server = make_server(**SLOW_WRITES)
    pilot = server.register()
    client = pymongo.MongoClient(server.db)
    try:
        pilots = client.get_default_database()["pilots"]
        registered = pilots.find_one({"_id": pilot})
        assert registered is not None, sorted(client.get_default_database().list_collection_names())
        run_jobs(server, pilot, 5)
        unwritten = pilots.find_one({"_id": pilot})
        # Nothing of those 5 jobs' requests and heartbeats reached the pilot's record yet ...
        assert unwritten["ts_lhb"] == registered["ts_lhb"] and unwritten["njobs"] == 0
        server.ok("GET", f"/pilots/{pilot}")
        # ... and all of it in one write.
        written = pilots.find_one({"_id": pilot})
        assert written["njobs"] == 5 and written["ts_lhb"] > registered["ts_lhb"] and written["state"] == "idle"
    finally:
        client.close()


@pytest.mark.skipif(not TEST_DB, reason="several servers share only a MongoDB (P3S_TEST_DB)")
def test_a_pilot_heard_by_one_server_is_not_lost_for_another(make_server):
    """Server B judges the pilot from the ts_lhb that server A writes in batches (a quarter of the
    lost timeout apart at most); the pilot talks to A only."""
    settings = {"sync_period": 0.5, "pilot_lost_timeout": 4, "contact_write_period": 60}
    a = make_server(auth=False, **settings)
    b = make_server(auth=False, db=a.db, **settings)
    pilot = a.register()
    a.submit({"payload": "/bin/true"})
    job = a.claim(pilot)["job"]
    assert a.report(pilot, "jobstart", job=job["uuid"], pid=1).status == 200
    deadline = time.monotonic() + 12          # three lost timeouts, B's reaper judging every second
    while time.monotonic() < deadline:
        assert a.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 1}).status == 200
        time.sleep(0.5)
    assert b.ok("GET", f"/pilots/{pilot}")["state"] == "running"
    assert b.job(job["uuid"])["state"] == "running"
    # Silent now: lost, for both servers.
    b.wait_for(lambda: b.ok("GET", f"/pilots/{pilot}")["state"] == "lost", timeout=30)
    # A learns it at its next write of the pilot's contacts: the pilot is then refused.
    a.wait_for(lambda: a.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 1}).status == 409, timeout=10)
