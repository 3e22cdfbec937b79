"""List pages on the embedded store: the same page and total as the engine's sorted cursor."""
from __future__ import annotations

import datetime as dt
import random

import mongoengine as me
import pytest

from p3s import listing
from p3s.store import Database


@pytest.fixture
def jobs(tmp_path):
    database = Database("", tmp_path / "data", "listing")
    database.open()
    collection = me.get_db()["jobs"]
    collection.create_index([("state", 1)])
    rng = random.Random(7)
    base = dt.datetime(2026, 12, 1)
    collection.insert_many([{
        "_id": f"j{i:03d}", "state": rng.choice(["defined", "finished", "failed"]),
        "name": rng.choice(["a", "b", "c", None]), "priority": rng.choice([0, 1, 2, 1.5]),
        "ts_def": base + dt.timedelta(seconds=rng.randint(0, 20)),       # many ties
        "ts_sto": rng.choice([None, base + dt.timedelta(minutes=rng.randint(0, 5))]),
        **({"user": "x"} if i % 3 else {}),                               # sometimes missing
        "usage_series": [1, 2]} for i in range(300)])
    yield collection
    database.close()


@pytest.mark.parametrize("field", ["ts_def", "ts_sto", "name", "priority", "user", "_id", "state"])
@pytest.mark.parametrize("descending", [True, False])
def test_pages_and_totals_match_the_engine(jobs, field, descending):
    for query in ({"state": {"$in": ["defined"]}}, {"state": {"$in": ["finished", "failed"]}}, {}):
        for offset, limit in ((0, 25), (40, 100), (290, 50)):
            expected = list(jobs.find(query, {"usage_series": 0}).sort(
                [(field, -1 if descending else 1), ("_id", -1 if descending else 1)]).skip(offset).limit(limit))
            got, total = listing.page(jobs, query, {"usage_series": 0}, field, descending, offset, limit)
            assert got == expected, (query, offset)
            assert total == jobs.count_documents(query)


def test_values_without_a_native_order_fall_back_to_the_engine(jobs):
    jobs.update_one({"_id": "j001"}, {"$set": {"name": {"nested": 1}}})
    expected = list(jobs.find({}).sort([("name", 1), ("_id", 1)]).limit(10))
    assert listing.page(jobs, {}, None, "name", False, 0, 10)[0] == expected
