"""What a read of the monitor costs the database: the newest results of every job type and the
errors view must not read more as the history of finished and failed jobs grows (they run on the
server's one event loop). Each test counts, through a wrapper of the real jobs collection of the
pass's store (embedded, or MongoDB with P3S_TEST_DB), the queries and documents a request costs."""
from __future__ import annotations

import asyncio
import datetime as _dt
import uuid as _uuid
from typing import Any

import pytest
import conftest

from p3s import diagnosis, failures, latest, models, states
from p3s.jobs import next_seq
from p3s.lifecycle import Lifecycle
from p3s.models import utcnow
from p3s.store import Database


class Counting:
    """The jobs collection, counting its queries: those by id, the others (scans or index
    probes), and the documents they returned."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.by_id = self.other = self.docs = 0

    def _count(self, query: dict) -> None:
        if set(query) == {"_id"} and not isinstance(query["_id"], dict):
            self.by_id += 1
        else:
            self.other += 1

    def find_one(self, query: dict, *args: Any, **kwargs: Any) -> Any:
        self._count(query)
        doc = self.collection.find_one(query, *args, **kwargs)
        self.docs += doc is not None
        return doc

    def find(self, query: dict, *args: Any, **kwargs: Any) -> "_Cursor":
        self._count(query)
        return _Cursor(self, self.collection.find(query, *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        if name != "_iter_documents":
            raise AttributeError(name)
        lazy = getattr(self.collection, name)       # only the embedded store has it

        def iterate(query: dict):
            self._count(query)
            for doc in lazy(query):
                self.docs += 1
                yield doc
        return iterate

    def snapshot(self) -> tuple[int, int, int]:
        return self.by_id, self.other, self.docs


class _Cursor:
    def __init__(self, owner: Counting, cursor: Any) -> None:
        self.owner, self.cursor = owner, cursor

    def sort(self, *args: Any) -> "_Cursor":
        self.cursor = self.cursor.sort(*args)
        return self

    def limit(self, n: int) -> "_Cursor":
        self.cursor = self.cursor.limit(n)
        return self

    def batch_size(self, n: int) -> "_Cursor":
        self.cursor = self.cursor.batch_size(n)
        return self

    def __iter__(self):
        for doc in self.cursor:
            self.owner.docs += 1
            yield doc


@pytest.fixture
def db(tmp_path):
    database = Database(conftest.test_database_uri(), tmp_path, "p3s_unit")
    database.open()
    try:
        yield database
    finally:
        database.close()


def _history(count: int, state: str, jobtypes: tuple[str, ...], ended: _dt.datetime, **fields: Any) -> None:
    """``count`` jobs that ended before this server started (written as another server would)."""
    docs = []
    for i in range(count):
        docs.append({"_id": str(_uuid.uuid4()), "payload": "x", "jobtype": jobtypes[i % len(jobtypes)], "site": "",
                     "priority": 0, "seq": next_seq(), "state": state, "timelimit": 10, "ts_def": ended,
                     "ts_sto": ended - _dt.timedelta(seconds=count - i), "attempts": 1, "max_attempts": 1,
                     "name": f"old{i}", **fields})
    models.Job._get_collection().insert_many(docs)


def _define(lifecycle: Lifecycle, jobtype: str) -> str:
    uuid = str(_uuid.uuid4())
    lifecycle.insert_jobs([{"_id": uuid, "payload": "x", "jobtype": jobtype, "site": "", "priority": 0,
                            "seq": next_seq(), "state": states.DEFINED, "timelimit": 10, "ts_def": utcnow(),
                            "attempts": 0, "max_attempts": 1, "name": f"new-{jobtype}"}])
    return uuid


def _finish(lifecycle: Lifecycle, uuid: str, state: str = states.FINISHED, **fields: Any) -> None:
    lifecycle.move_job(uuid, states.DISPATCHED, set_={"pilot": "p", "ts_dis": utcnow()})
    lifecycle.move_job(uuid, states.RUNNING, set_={"ts_sta": utcnow()})
    lifecycle.end_job(uuid, state, set_=fields)


def test_newest_results_cost_no_scan_however_many_jobs_finished(db, monkeypatch):
    monkeypatch.setattr(latest, "REREAD", 3600.0)        # this test is about one server's own jobs
    types = ("reco", "calib")
    _history(300, states.FINISHED, types, utcnow() - _dt.timedelta(hours=1))

    async def scenario() -> None:
        lifecycle = Lifecycle()
        jobs = Counting(models.Job._get_collection())
        kept = latest.LatestFinished(jobs, shared=db.shared)
        lifecycle.listeners.append(kept)
        first = await kept.latest(list(types))
        assert [j["name"] for j in first] == ["old298", "old299"]      # the newest of each type
        costs = []
        for round_ in range(3):
            # more history, then a job of each type finishes here
            _history(500, states.FINISHED, types, utcnow() - _dt.timedelta(minutes=30))
            made = {t: _define(lifecycle, t) for t in types}
            for t in types:
                _finish(lifecycle, made[t], exit_code=0)
            before = jobs.snapshot()
            shown = await kept.latest(list(types))
            after = jobs.snapshot()
            assert [j["_id"] for j in shown] == [made[t] for t in types]
            costs.append(tuple(b - a for a, b in zip(before, after)))
        # one read by id per type shown, nothing else, whatever the history
        assert costs == [(len(types), 0, len(types))] * 3

        # the newest job deleted (retention, DELETE): the one before it is shown, read again once
        lifecycle.delete_jobs({"_id": made["reco"]})
        again = await kept.latest(["reco"])
        assert again and again[0]["_id"] != made["reco"] and again[0]["state"] == states.FINISHED
        before = jobs.snapshot()
        assert await kept.latest(["reco"]) == again
        assert jobs.snapshot()[1] == before[1]           # and then no query but by id

    asyncio.run(scenario())


def test_newest_results_show_a_job_another_server_finished(db, monkeypatch):
    if not db.shared:
        pytest.skip("one server owns the embedded store")
    monkeypatch.setattr(latest, "REREAD", 0.0)
    _history(50, states.FINISHED, ("reco",), utcnow() - _dt.timedelta(hours=1))

    async def scenario() -> None:
        jobs = Counting(models.Job._get_collection())
        kept = latest.LatestFinished(jobs, shared=True)
        assert [j["name"] for j in await kept.latest(["reco"])] == ["old49"]
        _history(1, states.FINISHED, ("reco",), utcnow(), name="elsewhere")     # another server's
        before = jobs.snapshot()
        assert [j["name"] for j in await kept.latest(["reco"])] == ["elsewhere"]
        by_id, other, docs = (b - a for a, b in zip(before, jobs.snapshot()))
        assert (by_id, other, docs) == (1, 1, 2)        # one index probe (limit 1), one read by id

    asyncio.run(scenario())


def test_errors_view_reads_once_for_every_window_and_grouping(db, monkeypatch):
    monkeypatch.setattr(failures, "REUSE", 3600.0)      # however slow the machine, one read serves all
    now = utcnow()
    _history(400, states.FAILED, ("reco", "calib"), now - _dt.timedelta(minutes=20), exit_code=3, host="wn1",
             stderr_tail="start\nERROR: disk full\n")
    _history(200, states.FINISHED, ("reco",), now - _dt.timedelta(minutes=10))
    _history(100, states.KILLED, ("calib",), now - _dt.timedelta(hours=3), exit_code=None, host="wn2",
             error="killed by admin")

    async def scenario() -> None:
        jobs = Counting(models.Job._get_collection())
        reads = failures.FailureReads(jobs)
        first = await reads.errors(1, ("exit_code", "host"))
        one_read = jobs.snapshot()
        assert first["total"] == 400 and not first["truncated"]
        assert sorted((g["jobtype"], g["state"], g["exit_code"], g["host"], g["count"]) for g in first["items"]) == \
            [("calib", "failed", 3, "wn1", 200), ("reco", "failed", 3, "wn1", 200)]
        wide = await reads.errors(6, ("error_line",))
        assert wide["total"] == 500
        assert {(g["jobtype"], g["error_line"]): g["count"] for g in wide["items"]} == \
            {("reco", "ERROR: disk full"): 200, ("calib", "ERROR: disk full"): 200,
             ("calib", "killed by admin"): 100}
        widened = jobs.snapshot()
        assert widened[1] == one_read[1] + 1             # a wider window: one more read, once
        for hours in range(1, 25):
            for by in diagnosis.GROUPINGS:
                for jobtype in (None, "reco", "calib", "nosuch"):
                    view = await reads.errors(hours, (by,), jobtype)
                    assert view["total"] == (0 if jobtype == "nosuch" else
                                             (400 if hours <= 3 else 500) if jobtype is None else
                                             200 if jobtype == "reco" or hours <= 3 else 300)
        assert jobs.snapshot() == widened                # 288 views, not one more document read

    asyncio.run(scenario())


def test_errors_view_is_cut_at_max_scan_and_says_so(db, monkeypatch):
    monkeypatch.setattr(diagnosis, "MAX_SCAN", 50)
    now = utcnow()
    _history(80, states.FAILED, ("reco",), now - _dt.timedelta(minutes=5), exit_code=1)
    _history(10, states.FAILED, ("calib",), now - _dt.timedelta(minutes=40), exit_code=2)

    async def scenario() -> None:
        jobs = Counting(models.Job._get_collection())
        reads = failures.FailureReads(jobs)
        view = await reads.errors(1, ("exit_code",))
        assert view["total"] == 50 and view["truncated"]
        calib = await reads.errors(1, ("exit_code",), "calib")   # cut off from the shared read: its own
        assert calib["total"] == 10 and not calib["truncated"]

    asyncio.run(scenario())


def test_an_errors_view_is_never_older_than_the_read_it_was_grouped_from(db):
    # The issue: each query's view was kept 5 s from when it was grouped, on top of a read kept 5 s,
    # so a view could miss a failure for ~10 s. Time is a clock the test moves, not waited for.
    now = utcnow()
    _history(3, states.FAILED, ("reco",), now - _dt.timedelta(minutes=5), exit_code=1)
    clock = [1000.0]

    async def scenario() -> None:
        reads = failures.FailureReads(models.Job._get_collection(), clock=lambda: clock[0])

        async def total(by: str) -> int:
            return (await reads.view(1, (by,), None, lambda view: view))["total"]

        assert await total("exit_code") == 3                # one read, at t = 0
        clock[0] += failures.REUSE - 0.5
        assert await total("host") == 3                     # grouped from that read, late in its period
        _history(1, states.FAILED, ("reco",), utcnow(), exit_code=2)
        clock[0] += 0.6                                      # the read's period is over
        assert await total("exit_code") == 4                # a new read
        assert await total("host") == 4                     # this view came from the old read: gone with it
        clock[0] += failures.REUSE - 0.1
        assert await total("host") == 4

    asyncio.run(scenario())


def _run(server, jobtype: str, exit_code: int = 0) -> str:
    """One job of ``jobtype`` run to its end through the pilot protocol; its uuid."""
    job = server.submit({"payload": "x", "jobtype": jobtype})[0]
    pilot = server.register(host="wn1")
    assert server.claim(pilot)["job"]["uuid"] == job["uuid"]
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    assert server.report(pilot, "jobstop", job=job["uuid"], exit_code=exit_code).status == 200
    return job["uuid"]


def _latest(server, jobtype: str) -> str | None:
    items = server.ok("GET", f"/results/latest?jobtype={jobtype}")["items"]
    return items[0]["job"] if items else None


def test_newest_results_follow_finishes_and_deletes(make_server):
    server = make_server(auth=False)
    older, newer = _run(server, "reco"), _run(server, "reco")
    assert _latest(server, "reco") == newer
    server.ok("DELETE", f"/jobs/{newer}")
    assert _latest(server, "reco") == older          # the one before it, read again
    server.ok("DELETE", f"/jobs/{older}")
    assert _latest(server, "reco") is None           # none finished any more
    _run(server, "calib", exit_code=2)
    assert _latest(server, "reco") is None and _latest(server, "calib") is None
    after = _run(server, "reco")
    assert _latest(server, "reco") == after


def test_a_server_shows_the_results_and_errors_of_jobs_another_server_ended(make_server):
    if not conftest.TEST_DB:
        pytest.skip("several servers share only a MongoDB (P3S_TEST_DB)")
    first = make_server(auth=False, sync_period=0.5)
    second = make_server(auth=False, db=first.db, sync_period=0.5)
    assert second.ok("GET", "/results/latest")["items"] == []
    done = _run(first, "reco")
    second.wait_for(lambda: _latest(second, "reco") == done, timeout=30)
    failed = _run(first, "calib", exit_code=3)
    second.wait_for(lambda: second.ok("GET", "/errors?by=exit_code")["total"] == 1, timeout=30)
    assert second.ok("GET", "/errors?by=exit_code")["items"][0]["examples"][0]["uuid"] == failed
