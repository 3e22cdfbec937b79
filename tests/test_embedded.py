"""The embedded engine (p3s.embedded): the same answers as mongomock on the query shapes p3s uses,
indexes that survive restarts and kill -9, and data directories written before it."""
from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import bson
import litemongo
import mongoengine as me
import pytest
from litemongo._vendor import mongomock

from p3s import embedded, listing
from p3s.fastpath import ByIdCollection
from p3s.store import Database

BASE = dt.datetime(2026, 12, 1)
STATES = ["defined", "dispatched", "running", "finished", "failed", "stale"]


def _value(rng: random.Random, kind: str):
    """Values of every type an indexed path may hold, including the ones the index cannot rank."""
    choice = rng.random()
    if kind == "ts":
        if choice < 0.15:
            return None
        if choice < 0.2:
            return [BASE, BASE + dt.timedelta(seconds=3)]
        if choice < 0.23:
            return "2026-12-01"
        return BASE + dt.timedelta(seconds=rng.randint(0, 40), milliseconds=rng.choice([0, 1, 999]))
    if kind == "num":
        return rng.choice([0, 1, 2, 1.5, -3, True, False, None, 2 ** 40, float("inf"), "1", [1, 2]])
    return rng.choice(STATES + ["", "é", "Z", None, ["finished"], {"s": 1}, 3])


def _doc(rng: random.Random, i: int) -> dict:
    doc = {"_id": f"j{i:04d}", "state": rng.choice(STATES) if rng.random() < 0.8 else _value(rng, "str"),
           "ts_def": _value(rng, "ts"), "ts_sto": _value(rng, "ts"), "ts_dis": _value(rng, "ts"),
           "priority": _value(rng, "num"), "name": rng.choice(["a", "b", "c", None]),
           "jobtype": rng.choice(["reco", "sim", _value(rng, "str")]), "usage_series": [1, 2]}
    if rng.random() < 0.7:
        doc["user"] = rng.choice(["x", "y"])
    if rng.random() < 0.2:
        del doc["ts_def"]
    return doc


def _queries(cutoff: dt.datetime) -> list[dict]:
    """The filters p3s's server, reaper, broker, freshness, retention and lists send (and more)."""
    return [
        {}, {"state": "defined"}, {"state": {"$in": ["defined"]}}, {"state": {"$in": ["finished", "failed"]}},
        {"state": {"$in": ["failed", "finished", "failed"]}}, {"state": {"$in": ["failed", "failed"]}, "user": "x"},
        {"state": {"$in": ["dispatched", "running"]}, "pilot": "p1"}, {"state": {"$nin": ["finished", "failed"]}},
        {"state": {"$ne": "finished"}}, {"state": {"$eq": "running"}}, {"state": None}, {"state": {"$in": [None, "x"]}},
        {"state": "dispatched", "ts_dis": {"$lt": cutoff}}, {"state": {"$in": ["finished", "stale"]},
                                                               "ts_sto": {"$gte": cutoff}},
        {"ts_sto": {"$lt": cutoff}}, {"ts_sto": {"$lte": cutoff, "$gt": BASE}}, {"ts_def": BASE},
        {"ts_def": {"$exists": False}}, {"ts_sto": {"$ne": None}},
        {"priority": 1}, {"priority": {"$gt": 0}}, {"priority": {"$in": [0, 2]}}, {"priority": True},
        {"priority": {"$gte": 1.5, "$lt": 2 ** 41}}, {"priority": "1"},
        {"jobtype": "reco", "state": {"$in": ["defined", "finished"]}}, {"user": "x", "name": "a"},
        {"$and": [{"state": {"$in": ["finished"]}}, {"user": "y"}]},
        {"$or": [{"state": "defined"}, {"jobtype": "sim"}]}, {"name": {"$regex": "A", "$options": "i"}},
        {"state": {"$in": ["finished"]}, "name": {"$regex": "b"}}, {"_id": "j0003"}, {"_id": {"$in": ["j0002", "j0150", "x"]}},
        {"_id": "j0003", "state": "nothing"}, {"state": ["finished"]}, {"state": {"s": 1}}, {"state": 3},
        {"holds.t": {"$lt": cutoff}}, {"state": "é"}, {"state": {"$gt": "f"}},
    ]


def _same_everywhere(ours, reference, queries) -> None:
    for query in queries:
        assert list(ours.find(query)) == list(reference.find(query)), query
        assert ours.count_documents(query) == reference.count_documents(query), query
        for key in ("ts_sto", "state", "priority", "user"):             # one-key sorts: planned in order
            for direction in (1, -1):
                assert list(ours.find(query, {"state": 1, key: 1}).sort(key, direction).limit(50)) == \
                       list(reference.find(query, {"state": 1, key: 1}).sort(key, direction).limit(50)), (query, key)


def _pages_same(ours, reference, queries) -> None:
    for query in queries:
        if "$or" in query or "_id" in query:
            continue
        for field in ("ts_def", "ts_sto", "state", "priority", "user", "name"):
            for descending in (True, False):
                for offset, limit in ((0, 25), (60, 100)):
                    order = [(field, -1 if descending else 1), ("_id", -1 if descending else 1)]
                    expected = list(reference.find(query, {"usage_series": 0}).sort(order).skip(offset).limit(limit))
                    got, total = listing.page(ours, query, {"usage_series": 0}, field, descending, offset, limit)
                    assert got == expected, (query, field, descending, offset)
                    assert total == reference.count_documents(query), query


@pytest.fixture
def pair(tmp_path):
    """Our engine's ``jobs`` and plain mongomock's, holding the same documents."""
    database = Database("", tmp_path / "data", "p3s")
    database.open()
    ours = me.get_db()["jobs"]
    reference = mongomock.MongoClient()["p3s"]["jobs"]
    for collection in (ours, reference):
        collection.create_index([("state", 1), ("seq", 1)])
    rng = random.Random(16)
    docs = [_doc(rng, i) for i in range(400)]
    docs[5]["holds"] = [{"t": BASE}]
    docs[6]["holds"] = {"t": BASE}
    for collection in (ours, reference):
        collection.insert_many([dict(d) for d in docs])
    yield ours, reference, database
    database.close()


def test_the_engine_is_the_indexed_one(pair):
    ours, _, _ = pair
    assert isinstance(ours._store, embedded.IndexedCollectionStore)
    assert {"state", "ts_def", "ts_sto", "priority", "seq"} <= set(ours._store._paths)


def test_finds_counts_and_pages_match_mongomock(pair):
    ours, reference, _ = pair
    queries = _queries(BASE + dt.timedelta(seconds=20))
    _same_everywhere(ours, reference, queries)
    _pages_same(ours, reference, queries)


def test_answers_still_match_after_updates_deletes_and_a_restart(pair, tmp_path):
    ours, reference, database = pair
    cutoff = BASE + dt.timedelta(seconds=20)
    rng = random.Random(3)
    for i in range(0, 400, 7):
        change = {"$set": {"state": rng.choice(STATES), "ts_sto": BASE + dt.timedelta(seconds=rng.randint(0, 40))}}
        for collection in (ByIdCollection(ours), reference):       # the fast path, as the server writes
            collection.find_one_and_update({"_id": f"j{i:04d}"}, change)
    for collection in (ours, reference):
        collection.update_many({"state": "failed"}, {"$set": {"priority": [3]}, "$unset": {"user": ""}})
        collection.delete_many({"state": {"$in": ["stale"]}})
        collection.insert_one({"_id": "j0001", "state": "defined"} if collection.find_one({"_id": "j0001"}) is None
                              else {"_id": "new", "state": "defined", "ts_def": BASE})
    _same_everywhere(ours, reference, _queries(cutoff))
    database.close()
    database.open()
    ours = me.get_db()["jobs"]
    _same_everywhere(ours, reference, _queries(cutoff))
    _pages_same(ours, reference, _queries(cutoff))
    _consistent(tmp_path / "data" / "db" / "p3s" / "jobs")


def test_cursors_skip_and_limit_as_slices(pair):
    ours, _, _ = pair
    everything = list(ours.find({}).sort([("ts_sto", 1), ("_id", 1)]))
    assert [d["_id"] for d in everything] == [d["_id"] for d in ours.find({}, {"_id": 1}).sort(
        [("ts_sto", 1), ("_id", 1)])]
    for skip, limit in ((0, 0), (0, 7), (5, 0), (390, 20), (500, 3), (3, -2)):
        cursor = ours.find({}).sort([("ts_sto", 1), ("_id", 1)]).skip(skip).limit(limit)
        wanted = everything[skip:][:abs(limit)] if limit else everything[skip:]
        assert list(cursor) == wanted, (skip, limit)


def test_a_page_of_an_exact_filter_comes_from_the_index_alone(pair):
    ours, reference, _ = pair
    ours.delete_many({"$or": [{"ts_def": {"$type": "array"}}, {"state": {"$type": "array"}},
                              {"state": {"$type": "object"}}]})
    ids, total = ours._store.page({"state": {"$in": ["finished", "failed"]}}, "ts_def", True, 0, 10)
    assert total == ours.count_documents({"state": {"$in": ["finished", "failed"]}})
    assert ids == [d["_id"] for d in ours.find({"state": {"$in": ["finished", "failed"]}}).sort(
        [("ts_def", -1), ("_id", -1)]).limit(10)]
    # not exact (a regex, numbers, or a path holding arrays): left to the engine's filter
    assert ours._store.page({"name": {"$regex": "a"}}, "ts_def", True, 0, 10) is None
    assert ours._store.page({"priority": 1}, "ts_def", True, 0, 10) is None
    assert ours._store.page({}, "priority", True, 0, 10) is None


def _consistent(path) -> None:
    """Every document has exactly its entries in ``ix`` and ``ix`` holds nothing else."""
    connection = sqlite3.connect(path)
    try:
        import json

        paths = json.loads(connection.execute("SELECT value FROM info WHERE key = 'ix_paths'").fetchone()[0])
        expected = set()
        for key, blob in connection.execute("SELECT _id, doc FROM documents"):
            doc = bson.decode(blob)
            for name, number in paths.items():
                t, v = embedded.entry(doc, name)
                expected.add((number, key, t, v))
        stored = set(connection.execute("SELECT p, k, t, v FROM ix"))
        assert stored == expected
        counts = collections.Counter()
        for number, _, t, v in expected:
            if number in {paths[p] for p in embedded.COUNTED if p in paths}:
                counts[(number, t, "" if v is None else v)] += 1
        counts[(0, 0, "")] = connection.execute("SELECT count(*) FROM documents").fetchone()[0]
        assert {key: n for key, n in counts.items() if n} == \
               {(p, t, v): n for p, t, v, n in connection.execute("SELECT p, t, v, n FROM ixc") if n}
    finally:
        connection.close()


def test_a_data_directory_of_the_previous_engine_is_indexed_once(tmp_path, caplog):
    folder = tmp_path / "data" / "db"
    client = litemongo.MongoClient(str(folder))                 # what p3s wrote before this engine
    rng = random.Random(5)
    docs = [_doc(rng, i) for i in range(300)]
    client["p3s"]["jobs"].insert_many([dict(d) for d in docs])
    client.close()
    reference = mongomock.MongoClient()["p3s"]["jobs"]
    reference.insert_many([dict(d) for d in docs])
    database = Database("", tmp_path / "data", "p3s")
    caplog.set_level(logging.INFO, logger="p3s.store")
    try:
        database.open()
        assert any("indexing" in r.getMessage() and "jobs" in r.getMessage() for r in caplog.records)
        _same_everywhere(me.get_db()["jobs"], reference, _queries(BASE + dt.timedelta(seconds=20)))
        database.close()
        caplog.clear()
        database.open()                                         # built once: not again
        assert not any("indexing" in r.getMessage() for r in caplog.records)
        _same_everywhere(me.get_db()["jobs"], reference, _queries(BASE + dt.timedelta(seconds=20)))
    finally:
        database.close()
    _consistent(folder / "p3s" / "jobs")


def test_a_failed_index_write_leaves_no_document(tmp_path):
    """The document and its index rows are one transaction: an index row refused takes the
    document back with it (as a kill -9 between the two would)."""
    database = Database("", tmp_path / "data", "p3s")
    database.open()
    try:
        jobs = me.get_db()["jobs"]
        jobs.insert_one({"_id": "a", "state": "defined"})
        jobs._store._connection.execute(
            "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON ix WHEN NEW.k = 's:a' BEGIN SELECT RAISE(ABORT, 'no'); END")
        jobs._store._connection.execute(
            "CREATE TEMP TRIGGER refuse_new BEFORE INSERT ON ix WHEN NEW.k = 's:b' BEGIN SELECT RAISE(ABORT, 'no'); END")
        with pytest.raises(sqlite3.IntegrityError):
            ByIdCollection(jobs).update_one({"_id": "a"}, {"$set": {"state": "finished"}})
        with pytest.raises(sqlite3.IntegrityError):
            jobs.insert_one({"_id": "b", "state": "defined"})
        assert jobs.find_one({"_id": "a"})["state"] == "defined"
        assert jobs.find_one({"_id": "b"}) is None
        assert [d["_id"] for d in jobs.find({"state": "finished"})] == []
    finally:
        database.close()
    _consistent(tmp_path / "data" / "db" / "p3s" / "jobs")


WRITER = textwrap.dedent("""
    import datetime as dt, random, sys
    import mongoengine as me
    from pathlib import Path
    from p3s.fastpath import ByIdCollection
    from p3s.store import Database
    database = Database("", Path(sys.argv[1]), "p3s")
    database.open()
    jobs = ByIdCollection(me.get_db()["jobs"])
    rng = random.Random()
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        jobs.insert_one({"_id": f"n{i}", "state": "defined", "ts_def": dt.datetime.utcnow(), "seq": i})
        jobs.update_one({"_id": f"n{rng.randint(1, i)}"}, {"$set": {"state": rng.choice(["running", "finished"]),
                                                                      "ts_sto": dt.datetime.utcnow()}})
        if i % 3 == 0:
            jobs.delete_one({"_id": f"n{rng.randint(1, i)}"})
        if i % 5 == 0:                                   # many writes in one transaction
            jobs.insert_many([{"_id": f"m{i}-{j}", "state": "defined", "seq": j} for j in range(20)])
            jobs.delete_many({"_id": {"$in": [f"m{i - 5}-{j}" for j in range(0, 20, 2)]}})
""")


def test_the_index_matches_the_documents_after_kill_9(tmp_path):
    data = tmp_path / "data"
    for attempt in range(3):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().strip() == "ready"
            time.sleep(0.3 + attempt * 0.2)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
        os.unlink(data / "server.lock") if (data / "server.lock").exists() else None
        _consistent(data / "db" / "p3s" / "jobs")
        database = Database("", data, "p3s")
        database.open()
        try:
            jobs = me.get_db()["jobs"]
            everything = list(jobs.find({}))
            assert everything
            for state in ("defined", "running", "finished"):
                assert [d["_id"] for d in jobs.find({"state": state})] == \
                       [d["_id"] for d in everything if d.get("state") == state]
        finally:
            database.close()


def test_indexes_of_another_layout_are_made_again(tmp_path):
    database = Database("", tmp_path / "data", "p3s")
    database.open()
    rng = random.Random(9)
    docs = [_doc(rng, i) for i in range(200)]
    me.get_db()["jobs"].insert_many([dict(d) for d in docs])
    database.close()
    path = tmp_path / "data" / "db" / "p3s" / "jobs"
    connection = sqlite3.connect(path)
    with connection:                               # an index of another layout, and out of date
        connection.execute("UPDATE info SET value = 'p3s-ix-0' WHERE key = 'ix_layout'")
        connection.execute("DELETE FROM ix WHERE k < 's:j0100'")
    connection.close()
    reference = mongomock.MongoClient()["p3s"]["jobs"]
    reference.insert_many([dict(d) for d in docs])
    database.open()
    try:
        _same_everywhere(me.get_db()["jobs"], reference, _queries(BASE + dt.timedelta(seconds=20)))
    finally:
        database.close()
    _consistent(path)


def test_a_selective_query_after_a_restart_reads_only_its_documents(tmp_path, monkeypatch):
    """The defect at 10^6 jobs: the first query after a start decoded every document to rebuild
    the engine's in-memory index (143 s, 4.7 GB). Now it reads the few documents that match."""
    database = Database("", tmp_path / "data", "p3s")
    database.open()
    me.get_db()["jobs"].insert_many([{"_id": f"j{i}", "state": "finished" if i % 500 else "defined",
                                      "ts_def": BASE + dt.timedelta(seconds=i)} for i in range(3000)])
    database.close()
    decoded = []
    plain = bson.decode

    def decode(*args, **kwargs):
        doc = plain(*args, **kwargs)
        if "state" in doc:                        # a job (not an index's description)
            decoded.append(doc["_id"])
        return doc
    monkeypatch.setattr(bson, "decode", decode)
    database.open()
    try:
        jobs = me.get_db()["jobs"]
        assert [d["_id"] for d in jobs.find({"state": "defined"})] == [f"j{i}" for i in range(0, 3000, 500)]
        docs, total = listing.page(jobs, {"state": {"$in": ["finished"]}}, None, "ts_def", True, 0, 10)
        assert total == 2994 and docs[0]["_id"] == "j2999"
        assert len(decoded) <= 6 + 10 + 1
    finally:
        database.close()


@pytest.mark.parametrize("steps", [3, 10_000])
def test_pages_walking_the_sort_order_match_mongomock(pair, monkeypatch, steps):
    """A page of many matches walks the sort order (a bounded number of steps, then it sorts the
    matches instead): both ways give mongomock's page."""
    ours, reference, _ = pair
    ours.delete_many({"$or": [{"state": {"$type": "array"}}, {"state": {"$type": "object"}}]})
    reference.delete_many({"$or": [{"state": {"$type": "array"}}, {"state": {"$type": "object"}}]})
    monkeypatch.setattr(embedded, "_FEW", 0)
    monkeypatch.setattr(embedded, "_WALK", steps)
    monkeypatch.setattr(embedded, "_WALK_FACTOR", 0)
    _pages_same(ours, reference, [{"state": {"$in": ["finished", "failed", "defined", "failed"]}}, {"state": "running"},
                                  {"state": {"$in": ["finished"]}, "jobtype": "reco"}, {}])


def test_many_writes_in_one_transaction_keep_what_preceded_an_error(pair, tmp_path):
    ours, reference, _ = pair
    new = [{"_id": "n1", "state": "defined"}, {"_id": "j0003", "state": "defined"}, {"_id": "n2", "state": "x"}]
    for collection in (ours, reference):
        with pytest.raises(Exception) as caught:
            collection.insert_many([dict(d) for d in new], ordered=True)
        assert "E11000" in str(caught.value) or "duplicate" in str(caught.value).lower()
    for collection in (ours, reference):
        assert collection.update_many({"state": "defined"}, {"$set": {"ts_sto": BASE}}).modified_count > 0
        assert collection.delete_many({"state": {"$in": ["failed", "stale"]}}).deleted_count > 0
    assert ours._store._connection.in_transaction is False
    _same_everywhere(ours, reference, _queries(BASE + dt.timedelta(seconds=20)))
    _consistent(tmp_path / "data" / "db" / "p3s" / "jobs")


def test_one_key_sorts_of_rankable_values_match_mongomock(pair):
    """Without arrays or sub-documents, a one-key sort comes in the index's order (numbers, bools,
    strings, dates, nulls and missing fields mixed): mongomock's order, ties in natural order."""
    ours, reference, _ = pair
    unrankable = {"$or": [{f: {"$type": t}} for f in ("state", "ts_sto", "ts_def", "priority", "jobtype")
                          for t in ("array", "object")]}
    for collection in (ours, reference):
        collection.delete_many(unrankable)
    for query in ({}, {"state": {"$in": ["finished", "failed", "defined"]}}, {"user": "x"},
                  {"ts_sto": {"$gte": BASE}}, {"priority": {"$gte": 0}}):
        for key in ("ts_sto", "ts_def", "state", "priority", "jobtype", "name", "user"):
            for direction in (1, -1):
                got = list(ours.find(query, {"_id": 1}).sort(key, direction))
                assert got == list(reference.find(query, {"_id": 1}).sort(key, direction)), (query, key, direction)


def _bulk_batches() -> list[list]:
    """Lists given to insert_many: plain ones (the fast path's), and each thing it hands to mongomock."""
    from collections import OrderedDict

    rng = random.Random(7)
    plain = [_doc(rng, i) for i in range(300)]
    aware = dt.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    return [
        plain[:150],
        plain[150:] + [{"_id": 77, "state": "defined", "ts_def": BASE.replace(microsecond=999999),
                        "t": (1, 2), "sub": OrderedDict(b=1, a=[{"x": aware}])}],
        [{"_id": "d1", "state": "x"}, {"_id": "j0003", "state": "y"}],          # a stored _id
        [{"_id": "d2", "state": "x"}, {"_id": "d3"}, {"_id": "d2", "state": "z"}],  # twice in the list
        [{"_id": "d4"}, {"_id": "d5", "$bad": 1}],
        [{"_id": "d6"}, {"_id": "d7", "a": {"b\0": 1}}],
        [{"_id": "d8"}, {"_id": "d9", 3: 1}],
        [{"_id": "d10"}, {"_id": "d11", "ts": bson.Timestamp(0, 0)}],
        [{"_id": "d12"}, {"_id": "d13", "x": {1}}],
        [{"_id": "d14", "ts_sto": aware}, {"state": "no id"}],
        [{"_id": {"a": 1}, "state": "dict id"}],
        [{"_id": "d15", "state": float("nan"), "priority": 2 ** 70}],
    ]


def _collection_rows(database: Database, name: str) -> dict:
    connection = me.get_db()[name]._store._connection
    return {table: sorted(connection.execute(f"SELECT * FROM {table}"), key=repr)
            for table in ("documents", "ix", "ixc")}


def test_bulk_inserts_store_and_fail_as_mongomock(tmp_path, monkeypatch):
    """insert_many through p3s.fastinsert and through mongomock's generic path: the same rows
    (documents, index entries, counts), the same results and errors, the same ids set."""
    from p3s import fastinsert

    taken = []
    fast = fastinsert.insert_many

    def spy(*args):
        ids = fast(*args)
        taken.append(ids is not None)
        return ids

    outcomes, rows = [], []
    for run, insert in enumerate((spy, lambda *args: None)):
        monkeypatch.setattr(fastinsert, "insert_many", insert)
        database = Database("", tmp_path / f"data{run}", "p3s")
        database.open()
        try:
            jobs = me.get_db()["jobs"]
            jobs.create_index([("state", 1), ("seq", 1)])
            seen = []
            for batch in _bulk_batches():
                given = [dict(d) for d in batch]
                try:
                    ids = jobs.insert_many(given).inserted_ids
                    seen.append(("ok", [i if not isinstance(i, bson.ObjectId) else "made" for i in ids]))
                except Exception as exc:  # noqa: BLE001 - the errors are compared
                    seen.append((type(exc).__name__, str(exc), getattr(exc, "details", None)))
                seen.append(["_id" in d for d in given])
            seen.append(jobs._store._connection.in_transaction)
            # its ObjectId, and the Timestamp mongomock puts for an empty one, are new each time
            assert jobs.delete_many({"$or": [{"state": "no id"}, {"_id": "d11"}]}).deleted_count == 2
            outcomes.append(seen)
            rows.append(_collection_rows(database, "jobs"))
            _consistent(tmp_path / f"data{run}" / "db" / "p3s" / "jobs")
        finally:
            database.close()
    assert taken[:2] == [True, True] and taken.count(True) == 2, taken    # both plain lists went fast
    assert outcomes[0] == outcomes[1]
    assert rows[0] == rows[1]
    assert len(rows[0]["documents"]) == 301 + 10     # and what came before each error (d15 cannot be encoded)


def test_bulk_jobs_take_the_fast_insert(tmp_path, monkeypatch):
    """The server's bulk creation inserts its slices by p3s.fastinsert (not mongomock's loop)."""
    import asyncio

    from p3s import fastinsert
    from p3s.lifecycle import Lifecycle

    calls = []
    fast = fastinsert.insert_many
    monkeypatch.setattr(fastinsert, "insert_many", lambda *a: calls.append(len(a[2])) or fast(*a))
    database = Database("", tmp_path / "data", "p3s")
    database.open()
    try:
        from p3s import models

        lifecycle = Lifecycle()
        docs = [{"_id": f"b{i}", "state": "defined", "jobtype": "bulk", "ts_def": dt.datetime.utcnow()}
                for i in range(120)]
        asyncio.run(lifecycle.insert_jobs_in_slices(docs))
        assert models.Job._get_collection().count_documents({"jobtype": "bulk"}) == 120
        assert sum(calls) == 120 and calls
    finally:
        database.close()


def _decoded_jobs(monkeypatch) -> list:
    """The ``_id`` of every job document decoded from now on."""
    decoded: list = []
    plain = bson.decode

    def decode(*args, **kwargs):
        doc = plain(*args, **kwargs)
        if "jobtype" in doc:
            decoded.append(doc["_id"])
        return doc
    monkeypatch.setattr(bson, "decode", decode)
    return decoded


def test_a_start_after_a_kill_counts_from_the_index_without_reading_the_jobs(tmp_path, monkeypatch):
    """At 10^6 jobs the counters of a start after kill -9 took ~5 s: a walk decoding every job.
    The engine's index answers them; only the jobs the statistics recount (stamped after the last
    save) are read, and the answers are the walk's."""
    from p3s import kept, lifecycle, models

    database = Database("", tmp_path / "data", "p3s")
    database.open()
    try:
        now = dt.datetime.utcnow().replace(microsecond=0)
        old = now - dt.timedelta(hours=2)
        jobs = [{"_id": f"j{i:04d}", "state": STATES[i % 5], "jobtype": ["reco", "sim", ""][i % 3],
                 "ts_def": old, "ts_sto": old} for i in range(900)]
        jobs[7].pop("jobtype")
        jobs[8]["jobtype"] = None
        for i in (10, 11, 12):
            jobs[i].update(ts_sto=now, state="failed")        # after the last save
        models.Job._get_collection().insert_many(jobs)
        models.Pilot._get_collection().insert_many(
            [{"_id": f"p{i}", "state": ["idle", "lost"][i % 2], "site": ["", "np04"][i // 5 % 2]} for i in range(20)])
        kept.kept_collection().replace_one({"_id": "stats"}, {"_id": "stats", "clean": False,
                                                              "saved": (now - dt.timedelta(minutes=1)).replace(
                                                                  tzinfo=dt.timezone.utc).timestamp()}, upsert=True)
        walked = lifecycle.Counters()
        monkeypatch.setattr(embedded, "group_counts", lambda *args: None)      # the walk, as before
        kept.count(walked)
        monkeypatch.undo()
        assert walked.jobs[("failed", "")] > 0 and sum(walked.jobs.values()) == 900

        decoded = _decoded_jobs(monkeypatch)
        counted = lifecycle.Counters()
        kept.count(counted)
        assert counted.jobs == walked.jobs and counted.pilots == walked.pilots
        assert decoded == []
        last = kept.kept_collection().find_one({"_id": "stats"})["saved"]
        assert sorted(d["_id"] for d in kept._records_after(last)) == ["j0010", "j0011", "j0012"]
        assert sorted(decoded) == ["j0010", "j0011", "j0012"]

        models.Job._get_collection().insert_one({"_id": "odd", "state": 3, "jobtype": "reco"})
        assert embedded.group_counts(models.Job._get_collection(), "state", "jobtype") is None
        kept.count(counted)                                    # a value the index does not count: walked
        assert counted.jobs[(3, "reco")] == 1 and sum(counted.jobs.values()) == 901
    finally:
        database.close()
