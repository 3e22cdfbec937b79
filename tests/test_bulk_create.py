"""Bulk job creation (p3s.jobs): all or nothing, with its work off the event loop.

The documents and the embedded store's rows are built off the loop and written in slices; these
tests hold what must not change: a bad job names its index and nothing is written, a kill -9 in
the middle leaves none of the request's jobs, claims meanwhile take each job exactly once, and the
ids the client library and the server make are time-ordered UUIDs.
"""
from __future__ import annotations

import datetime as _dt
import json
import threading
import uuid as _uuid

import pytest

import conftest
from p3s import creations, models, states
from p3s.faults import VARIABLE
from p3s.jobs import next_seq
from p3s.lifecycle import Lifecycle
from p3s.models import utcnow
from p3s.pilot import ids
from p3s.pilot.client import Client

MANY = 2000        # several insert slices (p3s.slices.PREPARED_SLICE)


def _jobs(count: int, **fields) -> list[dict]:
    return [{"payload": "true", "jobtype": "bulk", **fields} for _ in range(count)]


def _total(server, **query) -> int:
    args = "&".join(f"{k}={v}" for k, v in query.items())
    return server.ok("GET", f"/jobs?limit=1{'&' + args if args else ''}")["total"]


def test_a_bad_job_deep_in_a_list_is_named_and_nothing_is_written(server):
    jobs = _jobs(MANY)
    jobs[1537]["priority"] = "high"
    reply = server.call("POST", "/jobs", jobs)
    assert reply.status == 422
    assert reply.body["error"]["field"] == "[1537].priority", reply.body
    jobs[1537] = {"payload": "true", "colour": "red"}
    reply = server.call("POST", "/jobs", jobs)
    assert reply.status == 422 and reply.body["error"]["field"] == "[1537].colour", reply.body
    assert _total(server) == 0
    assert server.ok("GET", "/summary")["jobs"]["defined"] == 0


def test_a_large_malformed_body_is_refused_with_its_place_and_nothing_is_written(server):
    text = json.dumps(_jobs(MANY), indent=1)         # decoded off the loop: over 16 KiB
    broken = text[:-2] + "x" + text[-2:]             # after the last job: the whole list is read first
    reply = server.call("POST", "/jobs", raw=broken.encode())
    assert reply.status == 400 and "malformed JSON at line" in reply.body["error"]["message"], reply.body
    nul = text.replace('"payload": "true"', '"payload": "tr\\u0000ue"', 1)
    reply = server.call("POST", "/jobs", raw=nul.encode())
    assert reply.status == 422 and "NUL" in reply.body["error"]["message"], reply.body
    assert _total(server) == 0


def test_a_taken_uuid_deep_in_a_list_is_named_and_nothing_is_written(server):
    taken = server.submit({"payload": "true"})[0]["uuid"]
    jobs = _jobs(MANY)
    for job in jobs:
        job["uuid"] = str(_uuid.uuid4())
    jobs[1999]["uuid"] = taken
    reply = server.call("POST", "/jobs", jobs)
    assert reply.status == 409 and taken in reply.body["error"]["message"], reply.body
    assert _total(server) == 1
    assert server.ok("GET", "/summary")["jobs"]["defined"] == 1


def test_a_creation_killed_between_its_slices_leaves_none_of_its_jobs(make_server):
    server = make_server()
    before = server.submit({"payload": "true", "jobtype": "kept"})[0]
    server.extra_env = {VARIABLE: "create_slice"}
    server.restart()
    port = server.port
    reply_error = None
    try:
        server.call("POST", "/jobs", _jobs(MANY), timeout=60)
    except Exception as exc:           # the connection dies with the server
        reply_error = exc
    assert reply_error is not None
    assert server.proc.wait(60) == 70              # it died at the hook: after its first slice was committed
    server.stop()
    server.extra_env = {}
    server.start(port)
    assert _total(server) == 1
    assert server.job(before["uuid"])["state"] == states.DEFINED
    assert server.ok("GET", "/summary")["jobs"]["defined"] == 1
    made = server.submit(*_jobs(MANY))              # and it creates again
    assert len(made) == MANY and _total(server) == MANY + 1


def test_claims_during_bulk_creations_take_each_job_exactly_once(server):
    pilots = [server.register(host=f"wn{i}") for i in range(4)]
    taken: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def work(pilot: str) -> None:
        try:
            while True:
                job = server.claim(pilot)["job"]
                if job is None:
                    if done.is_set():
                        return
                    continue
                with lock:
                    taken.append(job["uuid"])
                assert server.report(pilot, "jobstart", job=job["uuid"], pid=1).status == 200
                assert server.report(pilot, "jobstop", job=job["uuid"], exit_code=0).status == 200
        except BaseException as exc:       # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in pilots]
    for thread in threads:
        thread.start()
    try:
        made = []
        for _ in range(3):
            made += [job["uuid"] for job in server.submit(*_jobs(1500))]
    finally:
        done.set()
        for thread in threads:
            thread.join(120)
    assert not errors, errors
    assert sorted(taken) == sorted(made)            # every job claimed, none twice
    assert _total(server, state="finished") == len(made)
    finished = lambda: server.ok("GET", "/summary")["jobs"]["finished"] == len(made)   # noqa: E731
    if conftest.on_mongodb():
        # a shared MongoDB's counters are recounted every 10 s (p3s.server.app.COUNTS_PERIOD); a
        # recount racing the moves it does not see is set right by the next one
        server.wait_for(finished, timeout=35)
    else:
        assert finished()


def test_job_ids_made_by_the_client_library_and_the_server_are_time_ordered(server):
    client = Client(server.url, token=server.token)
    made = [job["uuid"] for job in client.create_jobs(_jobs(50))]
    assert made == sorted(made) and all(_uuid.UUID(u).version == 7 for u in made)
    by_server = [job["uuid"] for job in server.submit(*_jobs(30))]
    assert by_server == sorted(by_server) and all(_uuid.UUID(u).version == 7 for u in by_server)
    assert by_server[0] > made[-1]
    given = str(_uuid.uuid4())                     # a client's own uuid is kept as given
    assert server.submit({"payload": "true", "uuid": given})[0]["uuid"] == given


def test_ids_strictly_increase_within_a_millisecond_and_across_threads():
    made: list[list[str]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=lambda out: out.extend(ids.many(5000)), args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [u for out in made for u in out]
    assert len(set(every)) == len(every)
    for out in made:
        assert out == sorted(out)
    assert all(_uuid.UUID(u).version == 7 and _uuid.UUID(u).variant == _uuid.RFC_4122 for u in every)


@pytest.fixture
def db(tmp_path):
    yield from conftest.pass_database(tmp_path)


def _doc(uuid: str, seq: int) -> dict:
    return {"_id": uuid, "payload": "x", "jobtype": "t", "site": "", "priority": 0, "seq": seq,
            "state": states.DEFINED, "timelimit": 10, "ts_def": utcnow(), "attempts": 0, "max_attempts": 1}


def test_undo_removes_an_interrupted_creations_jobs_only(db):
    jobs = Lifecycle().jobs
    ours = [_doc(ids.new(), next_seq()) for _ in range(3)]
    token = creations.begin(ours)
    jobs.insert_many(ours[:2])                                   # killed after a first slice
    theirs = _doc(ours[2]["_id"], next_seq())                    # the same uuid, made by another request
    jobs.insert_one(theirs)
    other = _doc(ids.new(), next_seq())
    jobs.insert_one(other)
    held = _doc(ids.new(), ours[1]["seq"])                       # within the creation's seq range
    held["state"] = states.RUNNING                               # of the creation, already run by a pilot
    jobs.insert_one(held)
    models.Job._get_db()[creations.COLLECTION].update_one(
        {"_id": token}, {"$set": {"ids": "\n".join([d["_id"] for d in ours] + [held["_id"]])}})
    assert creations.undo_interrupted(jobs, shared=False) == 2
    left = {d["_id"]: d["seq"] for d in jobs.find({})}
    assert left == {theirs["_id"]: theirs["seq"], other["_id"]: other["seq"], held["_id"]: held["seq"]}
    assert models.Job._get_db()[creations.COLLECTION].find_one({"_id": token}) is None


def test_on_a_shared_database_a_server_undoes_its_own_creations_and_only_old_ones_of_others(db, monkeypatch):
    jobs = Lifecycle().jobs
    young, old, own = ([_doc(ids.new(), next_seq())] for _ in range(3))
    monkeypatch.setattr(creations, "owner", "other")
    creations.begin(young)
    token = creations.begin(old)
    models.Job._get_db()[creations.COLLECTION].update_one(
        {"_id": token}, {"$set": {"ts": utcnow() - _dt.timedelta(seconds=creations.ORPHAN_SECONDS + 5)}})
    monkeypatch.setattr(creations, "owner", "me")
    creations.begin(own)
    jobs.insert_many(young + old + own)
    assert creations.undo_interrupted(jobs, shared=True) == 2     # another server may be writing the young one
    assert [d["_id"] for d in jobs.find({})] == [young[0]["_id"]]


@pytest.mark.skipif(conftest.on_mongodb(), reason="the embedded store's rows")
def test_rows_prepared_before_the_store_changed_are_not_written_and_the_engine_inserts(db):
    import asyncio

    from p3s import fastinsert, jobs as jobs_module

    collection = models.Job._get_collection()
    layout = fastinsert.layout(collection)
    docs = [_doc(ids.new(), next_seq()) for _ in range(600)]
    rows = jobs_module.prepared(layout, docs)                   # off the loop, in the server
    collection.create_index("payload")                          # a new indexed path meanwhile
    store = fastinsert.store_of(collection)
    assert not layout.current(store)
    assert fastinsert.write(store, *rows[0]) is None
    assert collection.count_documents({}) == 0                  # nothing written from the stale rows
    asyncio.run(Lifecycle().insert_jobs_in_slices(docs, rows))  # each slice goes the engine's way
    assert collection.count_documents({"payload": "x"}) == 600
    assert len(store.page({"payload": "x"}, "seq", False, 0, 1000)[0]) == 600    # the new path's entries too
