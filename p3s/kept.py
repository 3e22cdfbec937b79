"""Figures the server keeps in the database so that it never recounts them from the records.

- The monitor's statistics by minute (``web.stats``), in the ``stats`` collection: one document per
  minute of the last 24 hours, saved every few seconds and at a clean stop, read back at start.
  Jobs that retention archived still count in the minutes they happened in, and a restart does
  not scan the jobs. A kill loses at most the last ``SAVE_PERIOD`` seconds of statistics.
- The job and pilot counters (``p3s.lifecycle.Counters``), in the ``kept`` collection, written at
  a clean stop and marked stale as soon as a server opens the database again: a start after a
  clean stop reads them instead of counting every job (a scan of the whole collection on the
  embedded store), a start after a kill or a crash counts. Used on the embedded store only: a
  MongoDB may be written by several servers, which count now and then anyway.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Any, Iterator

import bson

from p3s import models
from p3s.fastpath import _is_embedded
from p3s.web.stats import MINUTES, Stats, _minute

log = logging.getLogger("p3s.kept")
SAVE_PERIOD = 10.0       # seconds between saves of the statistics


def walk(collection: Any, projection: dict | None = None, batch: int = 2000) -> Iterator[dict]:
    """Every document of a collection, in insertion order, read a batch at a time.

    On the embedded store this reads the SQLite rows directly: mongomock's own ``find`` and
    ``aggregate`` materialise every document (and ``$group`` took 130 s for 10^5 jobs), where this
    takes about 14 µs a document in constant memory. Elsewhere it is a plain cursor."""
    if not _is_embedded(collection):
        yield from collection.find({}, projection)
        return
    store = collection._store
    codec = store._documents._codec_options
    position = 0
    while True:
        rows = store._connection.execute(
            "SELECT rowid, doc FROM documents WHERE rowid > ? ORDER BY rowid LIMIT ?", (position, batch)).fetchall()
        if not rows:
            return
        position = rows[-1][0]
        for _rowid, blob in rows:
            yield bson.decode(blob, codec_options=codec)


def _db() -> Any:
    return models.Job._get_db()


def kept_collection() -> Any:
    return _db()["kept"]


# --- statistics -------------------------------------------------------------------------------
def load_stats(stats: Stats) -> str:
    """Fill ``stats`` with the kept minutes of the last 24 hours; a database without kept
    statistics is counted once from the jobs (and kept from then on). Returns which it did."""
    marker = kept_collection().find_one({"_id": "stats"})
    if marker is None:
        stats.load(walk(models.Job._get_collection()))
        stats.dirty = set(stats.counts) | set(stats.waits) | set(stats.latencies) | set(stats.lost_pilots)
        save_stats(stats)
        kept_collection().update_one({"_id": "stats"}, {"$set": {"since": time.time()}}, upsert=True)
        return "counted"
    first = _minute(time.time()) - MINUTES
    for row in _db()["stats"].find({}):
        if isinstance(row.get("_id"), int) and row["_id"] > first:
            stats.restore_minute(row["_id"], row)
    return "kept"


def save_stats(stats: Stats) -> int:
    """Write the minutes changed since the last save; drop kept minutes older than 24 hours."""
    dirty, stats.dirty = stats.dirty, set()
    collection = _db()["stats"]
    for minute in sorted(dirty):
        collection.replace_one({"_id": minute}, {"_id": minute, **stats.minute_row(minute)}, upsert=True)
    if dirty:
        oldest = _minute(time.time()) - MINUTES - 5
        stale = [row["_id"] for row in collection.find({}, {"_id": 1})
                 if isinstance(row["_id"], int) and row["_id"] < oldest]
        if stale:
            collection.delete_many({"_id": {"$in": stale}})
    return len(dirty)


# --- counters ---------------------------------------------------------------------------------
def load_counters(counters: Any) -> str:
    """Counters from the snapshot of a clean stop, marking it stale; else count the database."""
    collection = kept_collection()
    snapshot = collection.find_one_and_update({"_id": "counters", "clean": True}, {"$set": {"clean": False}})
    if snapshot is None:
        count(counters)
        return "counted"
    counters.jobs = collections.Counter({(s, t): n for s, t, n in snapshot.get("jobs", [])})
    counters.pilots = collections.Counter({(s, t): n for s, t, n in snapshot.get("pilots", [])})
    return "kept"


def count(counters: Any) -> None:
    """Count jobs by (state, jobtype) and pilots by (state, site) in one pass over each."""
    for attr, model, group in (("jobs", models.Job, "jobtype"), ("pilots", models.Pilot, "site")):
        tally: collections.Counter = collections.Counter()
        for doc in walk(model._get_collection(), {"state": 1, group: 1}):
            tally[(doc.get("state"), doc.get(group) or "")] += 1
        setattr(counters, attr, tally)


def save_counters(counters: Any) -> None:
    """The counters at a clean stop (after the last write of this server)."""
    kept_collection().replace_one({"_id": "counters"}, {
        "_id": "counters", "clean": True, "ts": models.utcnow(),
        "jobs": [[s, t, n] for (s, t), n in counters.jobs.items() if n],
        "pilots": [[s, t, n] for (s, t), n in counters.pilots.items() if n]}, upsert=True)


def forget_counters() -> None:
    """Mark the counters snapshot stale (a tool changed the database behind the server's back)."""
    kept_collection().update_one({"_id": "counters"}, {"$set": {"clean": False}})
