"""The kept statistics across a kill: what happened after the last save is counted from the records, once."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from p3s import kept, models
from conftest import memory_database, pass_database
from p3s.web.stats import Stats, _minute


@pytest.fixture
def db(tmp_path):
    yield from memory_database(tmp_path)


def failed_job(name: str, moment: float) -> dict:
    stamp = dt.datetime.fromtimestamp(moment, dt.timezone.utc).replace(tzinfo=None)
    job = {"_id": name, "jobtype": "reco", "state": "failed", "ts_def": stamp, "ts_sta": stamp, "ts_sto": stamp}
    models.Job._get_collection().insert_one(job)
    return job


def failed(stats: Stats) -> int:
    return sum(n for counter in stats.counts.values() for (event, _), n in counter.items() if event == "failed")


def test_a_kill_during_or_after_a_save_loses_and_doubles_nothing(db):
    before = Stats()
    before.load([failed_job("a", time.time() - 5)])
    kept.load_stats(Stats())                             # the database's first start: the marker
    kept.save_stats(before)                              # a complete save: minutes, then the marker
    last = kept.kept_collection().find_one({"_id": "stats"})["saved"]
    b = failed_job("b", last + 1)
    before.load([b])
    # a save the kill interrupted: b's minute written (with when it was taken), the marker not
    models.Job._get_db()["stats"].replace_one({"_id": _minute(last + 1)}, {
        "_id": _minute(last + 1), **before.minute_row(_minute(last + 1)), "saved": last + 2}, upsert=True)
    failed_job("c", last + 3)                            # after it: in no kept minute
    after = Stats()
    assert kept.load_stats(after) == "kept, and counted since the last save"
    assert failed(after) == 3                            # a from the kept minutes, b from its row, c recounted
    kept.save_stats(after, clean=True)                   # a clean stop: nothing is recounted at the next start
    again = Stats()
    assert kept.load_stats(again) == "kept" and failed(again) == 3


def test_servers_sharing_a_database_keep_their_own_minutes_and_show_the_sum(db):
    # The issue: on a shared MongoDB each server replaced the minutes with its own counts.
    now = time.time()
    first = Stats("a")
    assert kept.load_stats(first) == "counted"           # the database's first start
    kept.save_stats(first, clean=True)
    a, b = Stats("a"), Stats("b")
    assert kept.load_stats(a) == "kept" and kept.load_stats(b) == "kept"
    a.load([failed_job("a1", now - 5)])
    b.load([failed_job("b1", now - 4), failed_job("b2", now - 3)])
    kept.save_stats(a)
    kept.save_stats(b)
    kept.save_stats(b)                                   # a save repeated adds nothing
    assert kept.read_others(a) and failed(a) == 3 and failed(b) == 2
    # a is killed (its marker not clean) while b lives on: a's start does not recount b's failure
    failed_job("b3", time.time())
    b.load([models.Job._get_collection().find_one({"_id": "b3"})])
    again = Stats("a")
    assert kept.load_stats(again) == "kept; not counted since the last save (other servers were alive)"
    kept.save_stats(b, clean=True)
    kept.read_others(again)
    assert failed(again) == 4                            # a's 1 and b's 3, each once
    third = Stats("c")
    assert kept.load_stats(third) == "kept" and failed(third) == 4


def test_old_minutes_are_pruned_once_a_minute_not_at_every_save(db, monkeypatch):
    """Pruning reads every kept minute (1440 and more: ~10 ms of the loop's time); it ran at every
    save (10 s), a stall of its own under 100 pilots' claims."""
    from p3s.web.stats import MINUTES

    now = [time.time()]
    monkeypatch.setattr(kept.time, "time", lambda: now[0])
    monkeypatch.setattr(kept, "_pruned", None)
    stats, rows = Stats(), models.Job._get_db()["stats"]

    def save_with_an_old_minute(name: int) -> list:
        rows.insert_one({"_id": _minute(now[0]) - MINUTES - name, "counts": [], "saved": 0.0})
        stats.dirty = {_minute(now[0])}
        kept.save_stats(stats)
        return sorted(r["_id"] for r in rows.find({"_id": {"$lt": _minute(now[0]) - MINUTES}}))

    assert save_with_an_old_minute(10) == []                    # pruned
    kept_old = _minute(now[0]) - MINUTES - 11
    assert save_with_an_old_minute(11) == [kept_old]            # the same minute: not read again
    now[0] += 60
    assert save_with_an_old_minute(20) == []                    # the next minute: pruned


@pytest.mark.parametrize("owner", ["", "a"])
def test_a_first_count_a_kill_interrupted_is_made_again(db, monkeypatch, owner):
    # The issue: the first count was claimed before the walk, so a kill during it left a database
    # whose statistics were never counted, at any later start.
    failed_job("old", time.time() - 60)
    monkeypatch.setattr(Stats, "load", _killed_count)
    with pytest.raises(KeyboardInterrupt):
        kept.load_stats(Stats(owner))
    monkeypatch.undo()
    if owner:           # on a shared database the claim may still be another server's count in progress
        assert kept.load_stats(Stats("b")) == "kept"
        kept.kept_collection().update_one({"_id": kept.FIRST_COUNT}, {"$set": {"until": time.time() - 1}})
    again = Stats(owner)
    assert kept.load_stats(again) == "counted" and failed(again) == 1
    kept.save_stats(again, clean=True)
    later = Stats(owner)
    assert kept.load_stats(later) == "kept" and failed(later) == 1      # counted once, and only once


def _killed_count(stats, jobs=None, new=None):
    for _ in jobs or ():
        raise KeyboardInterrupt("killed during the first count")


@pytest.fixture(params=["memory", "pass"])
def any_db(request, tmp_path):
    yield from (memory_database if request.param == "memory" else pass_database)(tmp_path)


def test_the_first_count_reads_the_jobs_of_the_shown_day_only(any_db):
    now = time.time()
    day = 86400
    stamp = lambda moment: dt.datetime.fromtimestamp(moment, dt.timezone.utc).replace(tzinfo=None)  # noqa: E731
    jobs = models.Job._get_collection()
    jobs.insert_one({"_id": "long", "jobtype": "reco", "state": "failed", "ts_def": stamp(now - 3 * day),
                     "ts_sta": stamp(now - 3 * day), "ts_sto": stamp(now - 3600)})      # ended within the day
    jobs.insert_one({"_id": "old", "jobtype": "reco", "state": "failed", "ts_def": stamp(now - 3 * day),
                     "ts_sta": stamp(now - 3 * day), "ts_sto": stamp(now - 2 * day)})   # outside it
    stats = Stats()
    assert kept.load_stats(stats) == "counted" and failed(stats) == 1
