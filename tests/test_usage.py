"""Heartbeats write no job (p3s.usage): a running job's usage samples are kept in memory and
written in batches, in the write that ends the job, and before the API shows the job; yet what
the API shows, what an ended job holds, and the answer to a heartbeat on a job that is not the
pilot's stay as when every heartbeat wrote the job."""
from __future__ import annotations

import time

import pytest

from conftest import TEST_DB
from pilot_support import pilot_starter
from test_metrics import metric_value

# Usage written every 150 s at most here (a quarter of the lost timeout): within a test, only the
# API's reads, the ends of jobs and the server's own changes write it.
SLOW_WRITES = {"contact_write_period": 600, "pilot_lost_timeout": 600}


def usage_writes(server) -> float:
    return metric_value(server, "p3s_job_usage_writes_total")


def running_job(server, pilot: str, **fields) -> dict:
    server.submit({"payload": "/bin/true", "jobtype": "usage", **fields})
    job = server.claim(pilot)["job"]
    assert server.report(pilot, "jobstart", job=job["uuid"], pid=1, ts=time.time()).status == 200
    return job


def beat(server, pilot: str, job: str, t: float, **usage) -> dict:
    reply = server.report(pilot, "heartbeat", job=job, ts=t, usage=usage)
    assert reply.status == 200, reply
    return reply.body


def test_a_heartbeat_writes_no_job_and_the_job_page_shows_the_latest_sample(make_server):
    server = make_server(**SLOW_WRITES)
    pilot = server.register()
    job = running_job(server, pilot)["uuid"]
    before = usage_writes(server)
    start = time.time()
    for k in range(5):
        assert beat(server, pilot, job, start + k, rss=1000 * (k + 1), cpu_percent=10.0 + k) == \
            {"kill": False, "kill_job": None}
    assert usage_writes(server) == before                       # five heartbeats, no write of the job
    # A list shows the figures kept in memory, without writing them.
    listed = server.ok("GET", f"/jobs?pilot={pilot}")["items"][0]
    assert listed["usage"]["rss"] == 5000 and listed["usage"]["cpu_percent"] == 14.0
    assert listed["usage"]["peak_rss"] == 5000
    assert usage_writes(server) == before
    # The job's page: all five samples, the latest last, in one write.
    shown = server.job(job)
    assert [s["t"] for s in shown["usage_series"]] == [start + k for k in range(5)]
    assert shown["usage_series"][-1] == {"t": start + 4, "rss": 5000, "cpu_percent": 14.0}
    assert shown["usage"] == {"rss": 5000, "cpu_percent": 14.0, "peak_rss": 5000}
    assert usage_writes(server) == before + 1
    # Right after one more beat, the page shows it.
    beat(server, pilot, job, start + 5, rss=500, cpu_percent=1.5)
    shown = server.job(job)
    assert shown["usage_series"][-1] == {"t": start + 5, "rss": 500, "cpu_percent": 1.5}
    assert shown["usage"] == {"rss": 500, "cpu_percent": 1.5, "peak_rss": 5000} and len(shown["usage_series"]) == 6
    assert usage_writes(server) == before + 2


def test_the_write_that_ends_a_job_holds_its_samples(make_server):
    server = make_server(**SLOW_WRITES, usage_points=3)
    pilot = server.register()
    start = time.time()
    ended = []
    # Ended by a report with the next request, and by an event; neither after a flush.
    for how in ("request", "event"):
        job = running_job(server, pilot)
        before = usage_writes(server)
        for k in range(4):
            beat(server, pilot, job["uuid"], start + k, rss=9000 - k, cpu_percent=50.0)
        report = {"job": job["uuid"], "attempt": job["attempt"], "exit_code": 0, "usage": {"cpu_time": 2.5,
                                                                                           "peak_rss": 7000}}
        if how == "request":
            assert server.claim(pilot, report={"event": "jobstop", **report})["job"] is None
        else:
            assert server.report(pilot, "jobstop", **report).status == 200
        assert usage_writes(server) == before          # no write of its own: it went with the end
        ended.append(job["uuid"])
    for uuid in ended:
        done = server.job(uuid)
        assert done["state"] == "finished"
        # the last usage_points samples, the heartbeats' figures and the end's, the highest peak
        assert [s["t"] for s in done["usage_series"]] == [start + 1, start + 2, start + 3]
        assert done["usage"] == {"rss": 8997, "cpu_percent": 50.0, "cpu_time": 2.5, "peak_rss": 9000}


def test_a_pilots_stop_and_the_servers_own_end_keep_the_samples(make_server):
    server = make_server(**SLOW_WRITES, timelimit_grace=1)
    pilot = server.register()
    stopping = running_job(server, pilot)["uuid"]
    beat(server, pilot, stopping, 1.0, rss=10)
    before = usage_writes(server)
    assert server.report(pilot, "stopped", message="bye").status == 200
    assert usage_writes(server) == before           # the samples went with the job's end
    lost = server.job(stopping)
    assert lost["state"] == "pilot_lost" and lost["usage_series"] == [{"t": 1.0, "rss": 10}]
    # The reaper ends a job past its time limit: its samples are written with it, and the
    # pilot's next heartbeat on it is told to stop it at once.
    pilot = server.register()
    overdue = running_job(server, pilot, timelimit=4)["uuid"]
    beat(server, pilot, overdue, 2.0, rss=20)
    server.wait_for(lambda: server.ok("GET", f"/jobs?pilot={pilot}")["items"][0]["state"] == "timelimit")
    assert server.job(overdue)["usage_series"] == [{"t": 2.0, "rss": 20}]
    assert beat(server, pilot, overdue, 3.0, rss=30)["kill_job"] == overdue
    assert server.job(overdue)["usage_series"] == [{"t": 2.0, "rss": 20}]


def test_a_heartbeat_on_a_job_not_the_pilots_is_told_to_stop_it(make_server):
    server = make_server(**SLOW_WRITES)
    pilot, other = server.register(), server.register()
    job = running_job(server, pilot)
    beat(server, pilot, job["uuid"], 1.0, rss=1)
    # Another pilot's job: stop it, and nothing of it is recorded.
    assert beat(server, other, job["uuid"], 2.0, rss=2) == {"kill": False, "kill_job": job["uuid"]}
    # The pilot's own job, ended: a late heartbeat on it is told to stop it.
    assert server.report(pilot, "jobstop", job=job["uuid"], attempt=job["attempt"], exit_code=0).status == 200
    assert beat(server, pilot, job["uuid"], 3.0, rss=3) == {"kill": False, "kill_job": job["uuid"]}
    assert server.job(job["uuid"])["usage_series"] == [{"t": 1.0, "rss": 1}]
    # Usage is checked as before, whoever holds the job.
    bad = server.report(other, "heartbeat", job=job["uuid"], usage={"rss": "a lot"})
    assert bad.status == 422 and bad.error["field"] == "usage.rss", bad


def test_a_real_pilots_job_gets_its_heartbeats_with_its_end(make_server, tmp_path):
    server = make_server(**SLOW_WRITES)
    job = server.submit({"payload": "sleep 3", "timelimit": 60})[0]["uuid"]
    before = usage_writes(server)
    with pilot_starter(tmp_path) as start:
        pilot = start(server, "-b", "1", "-c", "1")
        assert pilot.wait(60) == 0, pilot.log()
    assert usage_writes(server) == before
    done = server.job(job)
    assert done["state"] == "finished" and done["usage_series"], done
    assert all(sample["nprocs"] >= 1 for sample in done["usage_series"])


def test_the_samples_are_written_at_a_clean_stop(make_server):
    server = make_server(**SLOW_WRITES)
    pilot = server.register()
    job = running_job(server, pilot)["uuid"]
    beat(server, pilot, job, 1.0, rss=1)
    server.restart()
    assert server.job(job)["usage_series"] == [{"t": 1.0, "rss": 1}]


@pytest.mark.skipif(not TEST_DB, reason="reads the job's record in the MongoDB (P3S_TEST_DB)")
def test_the_database_gets_a_jobs_samples_in_a_batch(make_server):
    import pymongo

    server = make_server(**SLOW_WRITES)
    pilot = server.register()
    job = running_job(server, pilot)["uuid"]
    client = pymongo.MongoClient(server.db)
    try:
        jobs = client.get_default_database()["jobs"]
        for k in range(3):
            beat(server, pilot, job, 10.0 + k, rss=k)
            # Nothing reached the job ...
            stored = jobs.find_one({"_id": job})
            assert stored["usage_series"] == [] and stored["usage"] == {}, stored
        # ... until the API shows it: all of it in one write.
        server.ok("GET", f"/jobs/{job}")
        stored = jobs.find_one({"_id": job})
        assert [s["t"] for s in stored["usage_series"]] == [10.0, 11.0, 12.0]
        assert stored["usage"] == {"rss": 2, "peak_rss": 2}
    finally:
        client.close()


@pytest.mark.skipif(not TEST_DB, reason="several servers share only a MongoDB (P3S_TEST_DB)")
def test_a_job_released_through_another_server_is_adopted_by_the_next_write(make_server):
    """Server A keeps the heartbeats of a dispatched job that server B gives back to the queue
    (its dispatch timeout, which only B has short): A's next write of the samples finds the job no
    longer the pilot's and does what a heartbeat write did: the pilot runs it, so it is its own
    again, with the samples."""
    a = make_server(auth=False, contact_write_period=0.5, sync_period=0.5)
    b = make_server(auth=False, db=a.db, dispatch_timeout=1, sync_period=0.5)
    pilot = a.register()
    a.submit({"payload": "/bin/true"})
    job = a.claim(pilot)["job"]["uuid"]

    def adopted() -> bool:
        beat(a, pilot, job, time.time(), rss=7)
        return bool(a.ok("GET", f"/events?kind=job.adopted&job={job}")["items"])

    a.wait_for(adopted, timeout=30)
    b.wait_for(lambda: b.job(job)["state"] == "running" and b.job(job)["usage_series"], timeout=10)
    assert b.job(job)["pilot"] == pilot and b.job(job)["usage"]["rss"] == 7


def test_the_samples_are_written_every_period_without_a_reader(make_server):
    server = make_server(contact_write_period=0.5, pilot_lost_timeout=600)
    pilot = server.register()
    job = running_job(server, pilot)["uuid"]
    before = usage_writes(server)
    beat(server, pilot, job, 1.0, rss=1)
    server.wait_for(lambda: usage_writes(server) > before, timeout=10)
    assert server.ok("GET", f"/jobs?pilot={pilot}")["items"][0]["usage"] == {"rss": 1, "peak_rss": 1}
