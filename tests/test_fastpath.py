"""The embedded engine's fast path for writes by id gives what the engine itself gives."""
from __future__ import annotations

import datetime as dt
import os

import mongoengine as me
import pytest
from pymongo import ReturnDocument

from p3s.fastpath import ByIdCollection
from p3s.lifecycle import equals, job_filter
from p3s.store import Database

pytestmark = pytest.mark.skipif(bool(os.environ.get("P3S_TEST_DB")), reason="the fast path is the embedded engine's")

NOW = dt.datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def _doc(uuid: str) -> dict:
    return {"_id": uuid, "state": "defined", "jobtype": "noop", "pilot": None, "attempts": 0, "usage": {"rss": 5},
            "usage_series": [{"t": 1}, {"t": 2}], "env": {"A": "1"}, "ts_def": dt.datetime(2026, 1, 1, 0, 0, 0, 1000)}


CASES = [
    # (filter, update, projection, return_document)
    (job_filter("j1", {"defined"}), {"$set": {"state": "dispatched", "pilot": "p1", "ts_dis": NOW},
                                     "$inc": {"attempts": 1}}, None, ReturnDocument.AFTER),
    (job_filter("j1", {"defined"}), {"$set": {"state": "running"}}, {"state": 1, "jobtype": 1}, ReturnDocument.BEFORE),
    (job_filter("j1", {"running", "dispatched"}, pilot="p2"), {"$set": {"state": "failed"}}, None,
     ReturnDocument.BEFORE),                                                           # another pilot's: no match
    (job_filter("j1", {"running", "dispatched"}, pilot="p1"),
     {"$set": {"state": "finished", "usage.cpu_time": 1.5, "stderr_tail": "x"}, "$max": {"usage.peak_rss": 9}},
     {"state": 1, "attempts": 1, "usage": 1}, ReturnDocument.BEFORE),
    ({"_id": "j2"}, {"$push": {"usage_series": {"$each": [{"t": 3}, {"t": 4}], "$slice": -3}},
                     "$set": {"usage.rss": 7}}, None, ReturnDocument.AFTER),
    ({"_id": "j2"}, {"$unset": {"env": ""}, "$set": {"pilot": "p9"}}, {"env": 1, "pilot": 1}, ReturnDocument.AFTER),
    ({"_id": "nope"}, {"$set": {"state": "x"}}, None, ReturnDocument.AFTER),           # no such document
    ({"_id": "j3", "pilot": equals(None)}, {"$set": {"pilot": "p3"}}, {"_id": 1}, ReturnDocument.BEFORE),
    ({"_id": "j3"}, {"$inc": {"fresh": 2, "usage.rss": 1.5}, "$max": {"usage.rss_peak": 3, "attempts": -1},
                     "$push": {"new_list": {"$each": [1, 2, 3], "$slice": 2}, "usage_series": {"t": 9}}},
     None, ReturnDocument.AFTER),
    ({"_id": "j3"}, {"$set": {"deep.er.path": [1, {"a": NOW}], "env.B": None}, "$unset": {"missing.x": ""}},
     {"deep": 1, "env": 1}, ReturnDocument.AFTER),
    ({"_id": "j3"}, {"$push": {"usage_series": {"$each": [{"t": 5}], "$slice": 0}}}, None, ReturnDocument.AFTER),
    ({"_id": "j3"}, {"$set": {"usage_series.0": "x"}}, None, ReturnDocument.AFTER),       # through a list: engine
    ({"_id": "j3"}, {"$min": {"attempts": -5}, "$addToSet": {"tags": "a"}}, None, ReturnDocument.AFTER),
    ({"_id": "j2"}, {"$set": {"state": "running"}}, {"env": 0, "usage_series": 0}, ReturnDocument.BEFORE),
    ({"_id": "j2"}, {"$set": {"state": "finished"}}, {"usage.rss": 1, "state": 1}, ReturnDocument.AFTER),
]


@pytest.fixture
def collections(tmp_path):
    database = Database("", tmp_path / "data", "fastpath")
    database.open()
    db = me.get_db()
    slow, fast = db["slow"], db["fast"]
    for collection in (slow, fast):
        collection.insert_many([_doc(u) for u in ("j1", "j2", "j3")])
    yield slow, ByIdCollection(fast)
    database.close()


def test_the_fast_path_is_taken_on_the_embedded_engine(collections):
    slow, fast = collections
    assert fast._takes({"_id": "j1"}, {"$set": {"a": 1}})
    assert not fast._takes({"_id": {"$in": ["j1"]}}, {"$set": {"a": 1}})
    assert not fast._takes({"_id": "j1", "$or": [{"a": 1}]}, {"$set": {"a": 1}})


def test_find_one_and_update_matches_the_engine(collections):
    slow, fast = collections
    for filter, update, projection, returned in CASES:
        expected = slow.find_one_and_update(filter, update, projection=projection, return_document=returned)
        got = fast.find_one_and_update(filter, update, projection=projection, return_document=returned)
        assert got == expected, (filter, update)
        assert list(fast.find({}, sort=[("_id", 1)])) == list(slow.find({}, sort=[("_id", 1)])), (filter, update)
    stored = fast.find_one({"_id": "j1"})
    assert stored["ts_dis"] == dt.datetime(2026, 11, 23, 12, 0, 0, 123000)        # naive UTC, milliseconds
    assert fast.find_one({"usage.peak_rss": 9})["_id"] == "j1"                       # the query index follows


def test_update_one_matches_the_engine(collections):
    slow, fast = collections
    for filter, update, _projection, _returned in CASES:
        expected = slow.update_one(filter, update)
        got = fast.update_one(filter, update)
        assert got.matched_count == expected.matched_count, (filter, update)
    assert list(fast.find({})) == list(slow.find({}))


def test_a_replacement_is_refused_as_by_pymongo(collections):
    slow, fast = collections
    with pytest.raises(ValueError):
        fast.find_one_and_update({"_id": "j1"}, {"state": "bare replacement"})


def test_the_hot_path_operators_are_applied_without_the_engine():
    from p3s.fastpath import _apply_simple_update
    doc = _doc("j9")
    assert _apply_simple_update(doc, CASES[0][1]) and _apply_simple_update(doc, CASES[3][1])
    assert _apply_simple_update(doc, CASES[4][1]) and doc["usage_series"] == [{"t": 2}, {"t": 3}, {"t": 4}]
    untouched = _doc("j9")
    assert not _apply_simple_update(untouched, {"$set": {"a": 1}, "$addToSet": {"tags": "x"}})
    assert untouched == _doc("j9")                  # refused before any change
