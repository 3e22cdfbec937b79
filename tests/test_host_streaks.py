"""The hosts' black-hole streaks at start: what the job records say, without reading every ended job."""
from __future__ import annotations

import datetime as dt
import signal

import pytest

from p3s import hosts, models, states
from p3s.broker import Broker
from p3s.config import Config
from p3s.hosts import HostWatch
from p3s.lifecycle import Lifecycle
from conftest import memory_database

from test_alarms import alarms, run_one

HOSTS = [f"wn{i:02d}" for i in range(10)]


@pytest.fixture
def db(tmp_path):
    yield from memory_database(tmp_path)


class CountingJobs:
    """The jobs collection, counting the documents its cursors hand out."""

    def __init__(self, collection) -> None:
        self.collection, self.read = collection, 0

    def find(self, *args, **kwargs):
        return CountingCursor(self.collection.find(*args, **kwargs), self)

    def __getattr__(self, name):
        return getattr(self.collection, name)


class CountingCursor:
    def __init__(self, cursor, owner: CountingJobs) -> None:
        self.cursor, self.owner = cursor, owner

    def sort(self, *args, **kwargs) -> "CountingCursor":
        self.cursor = self.cursor.sort(*args, **kwargs)
        return self

    def __iter__(self):
        for doc in self.cursor:
            self.owner.read += 1
            yield doc


def watch(threshold: int = 1000) -> HostWatch:
    lifecycle = Lifecycle()
    watcher = HostWatch(Config({"blackhole_jobs": threshold, "blackhole_drain": False}, None), Broker(lifecycle))
    lifecycle.listeners.append(watcher)
    watcher.lifecycle = lifecycle
    return watcher


def end_jobs(watcher: HostWatch, first: int, count: int, ago: dt.timedelta) -> None:
    """Run ``count`` jobs to their end through the lifecycle (which tells the watcher), ended ``ago``."""
    jobs = models.Job._get_collection()
    for i in range(first, first + count):
        uuid = f"job{i:05d}"
        jobs.insert_one({"_id": uuid, "state": states.RUNNING, "jobtype": "reco", "host": HOSTS[i % len(HOSTS)]})
        end = states.FAILED if (i * 7) % 5 else states.FINISHED
        watcher.lifecycle.move_job(uuid, end, set_={"ts_sto": models.utcnow() - ago})


def recounted() -> dict[str, int]:
    """Each host's run of unsuccessful jobs, from the job records."""
    streaks: dict[str, int] = {}
    for job in models.Job._get_collection().find({"state": {"$in": sorted(hosts.COUNTED_ENDS)}}).sort("ts_sto", 1):
        streaks[job["host"]] = streaks.get(job["host"], 0) + 1 if job["state"] in hosts.BAD_ENDS else 0
    return {h: n for h, n in streaks.items() if n}


def started(monkeypatch) -> tuple[HostWatch, int]:
    """A new watcher loaded as a start would, and the job documents the load read."""
    counting = CountingJobs(models.Job._get_collection())
    with monkeypatch.context() as patch:
        patch.setattr(models.Job, "_get_collection", classmethod(lambda cls: counting))
        watcher = watch()
        watcher.load()
    return watcher, counting.read


def test_start_reads_no_more_jobs_when_the_history_grows(db, monkeypatch):
    first = watch()
    first.load()
    end_jobs(first, 0, 500, dt.timedelta(hours=2))
    first.save()
    small, read_small = started(monkeypatch)
    assert dict(small.streaks) == recounted() != {}
    end_jobs(small, 500, 1500, dt.timedelta(hours=1))
    small.save()
    large, read_large = started(monkeypatch)
    assert dict(large.streaks) == recounted()
    assert read_large <= read_small                      # not 2000 against 500: only jobs ended since the snapshot
    assert large.row("wn03")["recent_bad"] + large.row("wn03")["recent_ok"] == hosts.RECENT


def test_jobs_ended_after_the_last_snapshot_are_counted_once(db, monkeypatch):
    first = watch()
    first.load()
    end_jobs(first, 0, 300, dt.timedelta(minutes=10))
    first.save()
    end_jobs(first, 300, 37, dt.timedelta(0))            # then a kill -9: these are in no snapshot
    again, _read = started(monkeypatch)
    assert dict(again.streaks) == dict(first.streaks) == recounted()
    again.save()                                         # the jobs within the margin are not counted twice
    third, _read = started(monkeypatch)
    assert dict(third.streaks) == recounted()


def test_the_streak_survives_a_kill(make_server):
    server = make_server(blackhole_jobs=4)
    server.submit(*[{"payload": "false", "name": f"j{i}"} for i in range(8)])
    bad = server.register(host="wn21")
    run_one(server, bad, 1)
    run_one(server, bad, 1)
    server.restart()                                     # a clean stop: the streak is kept
    bad = server.register(host="wn21")
    run_one(server, bad, 1)
    server.restart(signal.SIGKILL)                       # a kill right after the third failure
    assert {h["host"]: h for h in server.ok("GET", "/hosts")["items"]}["wn21"]["streak"] == 3
    assert "blackhole:wn21" not in alarms(server)
    bad = server.register(host="wn21")
    run_one(server, bad, 1)                              # the fourth in a row
    assert alarms(server)["blackhole:wn21"]["status"] == "alarm"
    assert server.call("POST", "/hosts/wn21/clear", {}).status == 200
    server.submit({"payload": "true"})
    run_one(server, bad, 0)                              # a success ends the run
    run_one(server, server.register(host="wn22"), 1)
    server.restart(signal.SIGKILL)
    rows = {h["host"]: h for h in server.ok("GET", "/hosts")["items"]}
    assert rows["wn21"]["streak"] == 0 and rows["wn22"]["streak"] == 1 and rows["wn21"]["recent_bad"] == 4


def test_hosts_seen_more_than_a_week_ago_are_forgotten_as_a_recount_would(db, monkeypatch):
    first = watch()
    first.load()
    end_jobs(first, 0, 10, dt.timedelta(days=8))         # one job on each of the ten hosts
    end_jobs(first, 10, 3, dt.timedelta(hours=1))        # then wn00..wn02 again
    first.save()
    again, _read = started(monkeypatch)
    assert sorted(again.recent) == ["wn00", "wn01", "wn02"]
    assert dict(again.streaks) == {h: n for h, n in first.streaks.items() if h in again.recent}


def test_a_snapshot_rewrites_the_known_hosts_rows_by_id(tmp_path, monkeypatch):
    """The snapshot of 100 hosts every 10 s took ~12 ms of the loop through the engine's
    replace_one; a known host's row is now rewritten by _id (p3s.fastpath), with the same content."""
    from p3s.store import Database

    database = Database("", tmp_path / "data", "p3s")
    database.open()
    try:
        first = watch()
        first.load()
        end_jobs(first, 0, 120, dt.timedelta(minutes=10))
        first.save()                                          # new hosts: inserted
        replaced = []
        plain = first.snapshots.replace_one
        monkeypatch.setattr(first.snapshots, "replace_one", lambda *a, **k: replaced.append(a) or plain(*a, **k))
        end_jobs(first, 120, 40, dt.timedelta(minutes=5))
        first.save()
        assert replaced == []
        again = watch()
        again.load()
        assert dict(again.streaks) == dict(first.streaks) == recounted() != {}
        assert again.row("wn03") == first.row("wn03")
        row = first.snapshots.find_one({"_id": "wn03"})
        assert set(row) == {"_id", "streak", "ends", "states", "jobs"} and len(row["jobs"]) == 16
    finally:
        database.close()
