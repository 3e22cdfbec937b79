"""A submission that fails part-way removes what it inserted, and only that: a uuid another server
took between the check and the insert keeps that server's job (and workflow)."""
from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError

import conftest
from p3s import models, states
from p3s.jobs import next_seq
from p3s.lifecycle import Lifecycle
from p3s.models import utcnow


@pytest.fixture
def db(tmp_path):
    yield from conftest.pass_database(tmp_path)


def _job(uuid: str, payload: str = "ours") -> dict:
    return {"_id": uuid, "payload": payload, "jobtype": "t", "site": "", "priority": 0, "seq": next_seq(),
            "state": states.DEFINED, "timelimit": 10, "ts_def": utcnow(), "attempts": 0, "max_attempts": 1}


def test_failed_insert_removes_only_its_own_jobs(db):
    lifecycle = Lifecycle()
    # "another server" inserts job b between this request's check and its insert
    models.Job._get_collection().insert_one(_job("b", payload="theirs"))
    with pytest.raises(DuplicateKeyError):
        lifecycle.insert_jobs([_job("a"), _job("b"), _job("c")])
    left = {d["_id"]: d["payload"] for d in models.Job._get_collection().find({})}
    assert left == {"b": "theirs"}
    assert lifecycle.counters.jobs[(states.DEFINED, "t")] == 0


def test_remove_inserted_spares_a_job_of_the_same_uuid_from_elsewhere(db):
    lifecycle = Lifecycle()
    ours = [_job("x"), _job("y")]
    models.Job._get_collection().insert_one(_job("x", payload="theirs"))
    models.Job._get_collection().insert_one(ours[1])
    lifecycle.remove_inserted(ours)
    left = {d["_id"]: d["payload"] for d in models.Job._get_collection().find({})}
    assert left == {"x": "theirs"}
