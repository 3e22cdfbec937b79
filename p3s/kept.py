"""Figures the server keeps in the database so that it never recounts them from the records.

- The monitor's statistics by minute (``web.stats``), in the ``stats`` collection: one document per
  minute of the last 24 hours and per server, saved every few seconds and at a clean stop, read back
  at start. Jobs that retention archived still count in the minutes they happened in, and a restart
  after a clean stop does not scan the jobs. Each minute's document says when it was taken
  (``saved``) and the server's marker when its last complete save was taken; a start after a kill
  counts from the job and pilot records what happened after those times (the seconds since the last
  save, which a kill would otherwise lose, with the failure-rate alarms they feed): on the embedded
  store one indexed query per time stamp.

  On a shared MongoDB every server writes only its own documents (``<owner>:<minute>``, replaced
  whole, so a save repeated or cut short counts nothing twice) and shows the sum of every server's:
  it reads the others' at start and after each save. ``owner`` is kept in the server's data
  directory, so a server restarted after a kill takes up its own minutes again. The records do
  not say which server counted what, so the recount after a kill is made only when no other server
  was alive since the last save (its marker says when it last saved or started); otherwise the
  killed server's last seconds are lost rather than counted twice. The embedded store has one
  server, whose documents keep their plain ``<minute>`` ids.
- The job and pilot counters (``p3s.lifecycle.Counters``), in the ``kept`` collection, written at
  a clean stop and marked stale as soon as a server opens the database again: a start after a
  clean stop reads them instead of counting every job, a start after a kill or a crash counts
  (on the embedded store from its index, ~1 s for 10^6 jobs; a walk of every job where the index
  cannot say, e.g. a state that is not a string). Used on the embedded store only: a
  MongoDB may be written by several servers, which count now and then anyway.
"""
from __future__ import annotations

import collections
import datetime as _dt
import fcntl
import logging
import os
import time
import uuid as _uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import bson
from pymongo.errors import DuplicateKeyError

from p3s import embedded, models
from p3s.fastpath import _is_embedded
from p3s.web.stats import MINUTES, Stats, _minute

log = logging.getLogger("p3s.kept")
SAVE_PERIOD = 10.0       # seconds between saves of the statistics
ALIVE = 1.5 * SAVE_PERIOD  # a server whose marker is older than this (and not clean) is taken for dead
FIRST_COUNT = "stats_counted"   # the claim of the database's first count of statistics from the jobs
FIRST_COUNT_LEASE = 3600.0      # seconds a first count may take before another server takes it over
READ_MARGIN = 120.0      # seconds: another server's minute saved this long before the last read is read again
STAMPS = ("ts_def", "ts_sta", "ts_sto")
# (last save, jobs stamped after it) from the counters' walk after a kill, for load_stats (one walk, not two)
_recent: tuple[float, list[dict]] | None = None
_pruned: int | None = None        # the minute kept minutes were last pruned in


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
_owner_file: int | None = None      # the descriptor holding the lock on the owner file, for the process's life


def owner(data_dir: Path) -> str:
    """This server's name among the servers of a shared database: kept in ``<data_dir>/stats-owner``
    and locked while the process lives (a second server on the same data directory gets a name of
    its own, so the two never write each other's minutes)."""
    global _owner_file
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / "stats-owner", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return _uuid.uuid4().hex
    name = os.pread(fd, 64, 0).decode(errors="replace").strip()
    if not name.isalnum():
        name = _uuid.uuid4().hex
        os.ftruncate(fd, 0)
        os.pwrite(fd, name.encode(), 0)
        os.fsync(fd)
    _owner_file = fd
    return name


def _marker_id(owner_: str) -> str:
    return f"stats:{owner_}" if owner_ else "stats"


def _row_id(owner_: str, minute: int) -> int | str:
    return f"{owner_}:{minute}" if owner_ else minute


def _row_key(row: dict) -> tuple[str, int] | None:
    """(owner, minute) of a kept minute's document, None for anything else."""
    key = row.get("_id")
    if isinstance(key, int):
        return "", key
    if isinstance(key, str) and isinstance(row.get("minute"), int) and isinstance(row.get("owner"), str):
        return row["owner"], row["minute"]
    return None


def _first_count_is_ours(kept: Any, shared: bool) -> bool:
    """Whether this start makes the database's first count of statistics from the jobs: none was
    made yet and no other server is making it. The claim (``FIRST_COUNT``) is marked done only
    after the count is saved, so a count a kill -9 interrupted is made again by a later start: at
    once on the embedded store (no other server), after ``FIRST_COUNT_LEASE`` on a shared MongoDB
    (the counting server may still be at it)."""
    now = time.time()
    try:
        kept.insert_one({"_id": FIRST_COUNT, "done": False, "until": now + FIRST_COUNT_LEASE})
        return True
    except DuplicateKeyError:
        pass
    claim = kept.find_one({"_id": FIRST_COUNT}) or {}
    if claim.get("done", True) or (shared and claim.get("until", 0.0) > now):
        return False
    return kept.update_one({"_id": FIRST_COUNT, "done": False, "until": claim.get("until")},
                           {"$set": {"until": now + FIRST_COUNT_LEASE}}).matched_count == 1


def load_stats(stats: Stats) -> str:
    """Fill ``stats`` with the kept minutes of the last 24 hours (its own, and the other servers'),
    and after a kill what happened since they were saved; a database without kept statistics is
    counted once from the jobs (and kept from then on). Returns which it did."""
    kept = kept_collection()
    own_id = _marker_id(stats.owner)
    marker = kept.find_one({"_id": own_id})
    if _first_count_is_ours(kept, shared=bool(stats.owner)):
        counting = kept.find_one({"_id": "stats"}) is None and marker is None
        if counting:
            # the jobs with a time stamp in the shown 24 hours (indexed reads), not every job
            stats.load(_records_after(time.time() - (MINUTES + 1) * 60))
            stats.dirty = set(stats.counts) | set(stats.waits) | set(stats.latencies) | set(stats.lost_pilots)
            save_stats(stats)
            kept.update_one({"_id": own_id}, {"$set": {"since": time.time()}}, upsert=True)
        kept.update_one({"_id": FIRST_COUNT}, {"$set": {"done": True}})
        if counting:
            return "counted"
    first = _minute(time.time()) - MINUTES
    taken: dict[int, float] = {}
    for row in _db()["stats"].find({}):
        key = _row_key(row)
        if key is None or key[1] <= first:
            continue
        if key[0] == stats.owner:
            stats.restore_minute(key[1], row)
            taken[key[1]] = row.get("saved", 0.0)
        else:
            stats.merge_minute(key[0], key[1], row)
    started = time.time()
    stats.others_read = started
    kept.update_one({"_id": own_id}, {"$set": {"clean": False, "seen": started, "kind": "stats"}},
                    upsert=True)    # not clean until the next clean stop
    last = (marker or {}).get("saved")
    if marker is None or marker.get("clean") or last is None:
        return "kept"
    others = _alive_since(last, own_id)
    if others:
        log.warning("statistics: the seconds between the last save (%.0f s ago) and the kill are not "
                    "recounted: other servers (%s) were alive, and the records do not say who counted what",
                    started - last, ", ".join(others))
        return "kept; not counted since the last save (other servers were alive)"
    # Killed: what happened after the last complete save, and not in a minute written later (a save
    # the kill interrupted), is counted from the records; those minutes are written at the next save.
    stats.load(_records_after(last), new=lambda moment: moment >= max(last, taken.get(_minute(moment), 0.0)))
    return "kept, and counted since the last save"


def _alive_since(moment: float, own_id: str) -> list[str]:
    """The other servers that may have counted something after ``moment``: those that saved or
    started since, or stopped without a clean stop less than ALIVE seconds before it."""
    alive = []
    for marker in kept_collection().find({"kind": "stats"}):
        if marker["_id"] == own_id:
            continue
        seen = marker.get("seen") or marker.get("saved") or 0.0
        if seen >= moment or (not marker.get("clean") and seen >= moment - ALIVE):
            alive.append(str(marker["_id"]).partition(":")[2] or "(unnamed)")
    return alive


def _records_after(moment: float) -> Iterable[dict]:
    """The jobs with a time stamp at or after ``moment``: from the counters' walk if it kept them,
    else read (an indexed query on MongoDB, a walk on the embedded store)."""
    global _recent
    recent, _recent = _recent, None
    if recent is not None and recent[0] == moment:
        return recent[1]
    collection, when = models.Job._get_collection(), _naive(moment)
    if embedded.indexed(collection):      # one indexed query per time stamp
        found: dict[Any, dict] = {}
        for key in STAMPS:
            for doc in collection.find({key: {"$gte": when}}):
                found.setdefault(doc["_id"], doc)
        return list(found.values())
    if _is_embedded(collection):
        return [doc for doc in walk(collection) if _after(doc, when)]
    return collection.find({"$or": [{key: {"$gte": when}} for key in STAMPS]})


def _naive(moment: float) -> _dt.datetime:
    """Epoch seconds as the naive UTC datetime the records hold (compared as such: cheap in a walk)."""
    return _dt.datetime.fromtimestamp(moment, _dt.timezone.utc).replace(tzinfo=None)


def _after(doc: dict, when: _dt.datetime) -> bool:
    for key in STAMPS:          # a plain loop: this runs once per job in the walk after a kill
        stamp = doc.get(key)
        if stamp.__class__ is _dt.datetime and stamp >= when:
            return True
    return False


def save_stats(stats: Stats, clean: bool = False) -> int:
    """Write this server's minutes changed since the last save, each with when it was taken, then
    that time in its marker: the last complete save (``clean``: at a stop, after the last change).
    Drop kept minutes older than 24 hours (once a minute)."""
    taken = time.time()
    dirty, stats.dirty = stats.dirty, set()
    collection = _db()["stats"]
    try:
        for minute in sorted(dirty):
            key = _row_id(stats.owner, minute)
            shared = {"owner": stats.owner, "minute": minute} if stats.owner else {}
            collection.replace_one({"_id": key}, {"_id": key, **shared, **stats.minute_row(minute), "saved": taken},
                                   upsert=True)
    except Exception:
        stats.dirty |= dirty            # written again at the next save
        raise
    kept_collection().update_one({"_id": _marker_id(stats.owner)},
                                 {"$set": {"saved": taken, "seen": taken, "clean": clean, "kind": "stats"}},
                                 upsert=True)
    global _pruned
    if dirty and _pruned != _minute(taken):   # once a minute: it reads every kept minute (~10 ms)
        _pruned = _minute(taken)
        oldest = _minute(time.time()) - MINUTES - 5
        stale = [row["_id"] for row in collection.find({}, {"_id": 1, "owner": 1, "minute": 1})
                 if (_row_key(row) or ("", oldest))[1] < oldest]
        if stale:
            collection.delete_many({"_id": {"$in": stale}})
    return len(dirty)


def read_others(stats: Stats) -> int:
    """Take the minutes the other servers saved since the last read (a shared database); returns
    how many were read."""
    now = time.time()
    since = stats.others_read - READ_MARGIN
    first = _minute(now) - MINUTES
    read = 0
    for row in _db()["stats"].find({"saved": {"$gte": since}, "owner": {"$ne": stats.owner}}):
        key = _row_key(row)            # (another server's: the query leaves out this one's)
        if key is not None and key[1] > first:
            stats.merge_minute(key[0], key[1], row)
            read += 1
    stats.others_read = now
    return read


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
    """Count jobs by (state, jobtype) and pilots by (state, site): from the embedded engine's index
    when it can (p3s.embedded.group_counts), else in one pass over each, which after a kill also
    keeps the jobs the statistics must recount (``_records_after``)."""
    global _recent
    marker = kept_collection().find_one({"_id": "stats"}) or {}
    last = None if marker.get("clean") else marker.get("saved")
    when = None if last is None else _naive(last)
    recent: list[dict] | None = []
    for attr, model, group in (("jobs", models.Job, "jobtype"), ("pilots", models.Pilot, "site")):
        indexed = embedded.group_counts(model._get_collection(), "state", group)    # no walk when it can
        if indexed is not None:
            merged: collections.Counter = collections.Counter()
            for (state, value), n in indexed.items():
                merged[(state, value or "")] += n           # a missing value and "" count together
            setattr(counters, attr, merged)
            recent = None if attr == "jobs" else recent      # _records_after reads them by their index
            continue
        tally: collections.Counter = collections.Counter()
        for doc in walk(model._get_collection(), {"state": 1, group: 1}):
            tally[(doc.get("state"), doc.get(group) or "")] += 1
            if when is not None and attr == "jobs" and _after(doc, when):
                recent.append(doc)
        setattr(counters, attr, tally)
    _recent = (last, recent) if last is not None and recent is not None \
        and _is_embedded(models.Job._get_collection()) else None


def save_counters(counters: Any) -> None:
    """The counters at a clean stop (after the last write of this server)."""
    kept_collection().replace_one({"_id": "counters"}, {
        "_id": "counters", "clean": True, "ts": models.utcnow(),
        "jobs": [[s, t, n] for (s, t), n in counters.jobs.items() if n],
        "pilots": [[s, t, n] for (s, t), n in counters.pilots.items() if n]}, upsert=True)


def forget_counters() -> None:
    """Mark the counters snapshot stale (a tool changed the database behind the server's back)."""
    kept_collection().update_one({"_id": "counters"}, {"$set": {"clean": False}})
