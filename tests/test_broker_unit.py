"""The broker against a database changed behind its back, as by a second server process."""
from __future__ import annotations

import asyncio

import pytest

from p3s import models, states
from p3s.broker import Broker, PilotInfo
from p3s.jobs import next_seq
from p3s.lifecycle import Lifecycle, build_update
from p3s.models import utcnow
from conftest import memory_database


@pytest.fixture
def db(tmp_path):
    yield from memory_database(tmp_path)


def _job(uuid: str, priority: int = 0) -> dict:
    return {"_id": uuid, "payload": "x", "jobtype": "t", "site": "", "priority": priority, "seq": next_seq(),
            "state": states.DEFINED, "timelimit": 10, "ts_def": utcnow(), "attempts": 0, "max_attempts": 1}


def test_conditional_write_is_the_final_word(db):
    async def scenario():
        lifecycle = Lifecycle()
        broker = Broker(lifecycle)
        lifecycle.insert_jobs([_job("a", 5), _job("b", 1)])
        # another server claims "a" directly in the database; this broker's queue still holds it
        models.Job._get_collection().update_one({"_id": "a", "state": "defined"},
                                                {"$set": {"state": "dispatched", "pilot": "elsewhere"}})
        pilot = PilotInfo("p", "h", "", frozenset(), states.IDLE, 0.0)
        got = broker.claim(pilot)
        assert got["_id"] == "b" and got["pilot"] == "p"
        assert models.Job._get_collection().find_one({"_id": "a"})["pilot"] == "elsewhere"
        assert broker.claim(pilot) is None

    asyncio.run(scenario())


def test_build_update_refuses_conflicting_operators():
    with pytest.raises(ValueError, match="twice"):
        build_update({"usage": {}}, max={"usage.peak_rss": 1})
    with pytest.raises(ValueError):
        build_update({"a": 1}, inc={"a": 1})
    assert build_update({"a": 1}, inc={"b": 1}) == {"$set": {"a": 1}, "$inc": {"b": 1}}


def test_transition_tables_are_closed():
    for target, sources in states.JOB_TRANSITIONS.items():
        assert target in states.JOB_STATES and sources <= set(states.JOB_STATES)
    for ended in states.JOB_ENDED:
        assert not any(ended in states.JOB_TRANSITIONS[t] for t in (states.DISPATCHED, states.RUNNING))
    for target, sources in states.PILOT_TRANSITIONS.items():
        assert target in states.PILOT_STATES and sources <= set(states.PILOT_STATES)
    assert states.LOST not in states.PILOT_TRANSITIONS[states.IDLE]
