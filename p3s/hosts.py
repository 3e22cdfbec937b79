"""Black-hole hosts: worker nodes whose last jobs all failed.

A host whose last ``blackhole_jobs`` payload ends in a row were unsuccessful (failed, could not
start, or overran its time limit — not killed by an operator, not lost with its pilot) is flagged:
an event is recorded, an alarm fires, and with ``blackhole_drain`` its pilots get no new work (the
broker's matching skips them) until an operator clears the host. An operator may also drain a host
by hand. Flags are stored (collection ``hosts``), so a restart keeps them; the streaks are counted
in memory from the lifecycle's changes.

A single server keeps each host's streak and recent outcomes in collection ``host_streaks``: the
hosts that changed are written every few seconds (no write per job), then a marker with the time of
that snapshot. A start reads the snapshot and replays only the jobs ended since it (less a margin,
skipping the jobs the snapshot already counted), so after a kill -9 the streaks are what the job
records say, without reading the week of ended jobs. A database without a snapshot (older p3s, a
MongoDB shared by several servers, whose servers do not write snapshots) is recounted from the
jobs ended in the last week, once.
"""
from __future__ import annotations

import collections
import datetime as _dt
import logging
from typing import Any

import mongoengine as me

from p3s import embedded, events, models, states
from p3s.broker import Broker
from p3s.config import Config
from p3s.errors import not_found
from p3s.fastpath import ByIdCollection
from p3s.lifecycle import Listener
from p3s.models import utcnow

log = logging.getLogger("p3s.hosts")

# Payload ends that count against a host, and the one that clears its streak.
BAD_ENDS = frozenset({states.FAILED, states.NONSTARTER, states.TIMELIMIT})
COUNTED_ENDS = BAD_ENDS | {states.FINISHED}
RECENT = 50                  # outcomes kept per host for the hosts view
REPLAY_MARGIN = _dt.timedelta(seconds=30)   # jobs ended this long before a snapshot are checked again
MARKER = "_snapshot"         # the document of ``host_streaks`` saying when the last snapshot was taken


EPOCH = _dt.datetime(1970, 1, 1)


def _epoch_ms(moment: _dt.datetime) -> int:
    return (moment - EPOCH) // _dt.timedelta(milliseconds=1)


def _from_epoch_ms(ms: int) -> _dt.datetime:
    return EPOCH + _dt.timedelta(milliseconds=ms)


class Host(me.Document):
    """A flagged or drained worker node (hosts that behave are not stored)."""

    name = me.StringField(primary_key=True)
    flagged = me.BooleanField(default=False)     # its last N jobs failed
    drained = me.BooleanField(default=False)     # its pilots get no new work
    since = me.DateTimeField()
    streak = me.IntField(default=0)
    by = me.StringField(default="")              # who drained it (by hand), or "server"
    reason = me.StringField(default="")
    meta = {"collection": "hosts", "auto_create_index": False}


class HostWatch(Listener):
    """Counts each host's run of unsuccessful jobs; flags, drains and clears hosts."""

    def __init__(self, config: Config, broker: Broker, shared: bool = False) -> None:
        self.threshold = config.blackhole_jobs
        self.drain_flagged = config.blackhole_drain
        self.broker = broker
        self.streaks: collections.Counter[str] = collections.Counter()
        self.recent: dict[str, collections.deque] = {}
        self.marks: dict[str, dict] = {}         # host -> its stored record (flagged or drained)
        self.collection = Host._get_collection()
        self.shared = shared
        self.snapshots = models.Job._get_db()["host_streaks"]
        self.dirty: set[str] = set()             # hosts changed since the last snapshot
        self.loaded = ""                          # how load() got the streaks (for the log and tests)

    def load(self) -> None:
        """Read the streaks' snapshot and replay the jobs ended since (or recount the last week's
        ended jobs when there is none); read the stored flags."""
        self.streaks.clear()
        self.recent.clear()
        marker = None if self.shared else self.snapshots.find_one({"_id": MARKER})
        week = utcnow() - _dt.timedelta(days=7)
        if marker is None:
            self._replay(week, set())
            self.loaded = "counted"
        else:
            seen: set = set()
            stale = []
            for doc in self.snapshots.find({"_id": {"$ne": MARKER}}):
                host = doc["_id"]
                ends = [_from_epoch_ms(t) for t in doc.get("ends", [])]
                if not ends or ends[-1] < week:
                    stale.append(host)           # seen more than a week ago, as a recount would forget it
                    continue
                if doc.get("streak"):
                    self.streaks[host] = doc["streak"]
                self.recent[host] = collections.deque(zip(ends, doc["states"], doc["jobs"]), maxlen=RECENT)
                seen.update(doc["jobs"])
            if stale:
                self.snapshots.delete_many({"_id": {"$in": stale}})
            self._replay(marker["taken"] - REPLAY_MARGIN, seen)
            self.loaded = "kept"
        self.save()                              # the snapshot from here on (the replayed hosts)
        self.marks = {d["_id"]: d for d in self.collection.find({})}
        self.broker.drained = {h for h, d in self.marks.items() if d.get("drained")}

    def _replay(self, since: _dt.datetime, seen: set) -> None:
        """Count the jobs ended since ``since`` in end order, but those in ``seen`` (already counted)."""
        cursor = models.Job._get_collection().find(
            {"ts_sto": {"$gte": since}, "state": {"$in": sorted(COUNTED_ENDS)}},
            {"host": 1, "state": 1, "ts_sto": 1}).sort("ts_sto", 1)
        for job in cursor:
            host = job.get("host")
            if not host or job["_id"] in seen:
                continue
            kept = self.recent.get(host)
            if seen and kept and len(kept) == RECENT and job["ts_sto"] < kept[0][0]:
                continue             # older than every outcome the snapshot kept: counted then
            self._count(host, job)

    def save(self) -> int:
        """Write the streak and recent outcomes of the hosts changed since the last snapshot, then
        the snapshot's time (the loop's thread runs no job end in between). Returns hosts written."""
        if self.shared:
            return 0
        taken = utcnow()
        dirty, self.dirty = self.dirty, set()
        # On the embedded store, one SQLite transaction: a kill leaves the previous snapshot whole,
        # and 200 hosts take 10 ms instead of one commit each (170 ms). A known host's row is
        # rewritten by _id (p3s.fastpath: a third of replace_one's time); a new one is inserted.
        by_id = ByIdCollection(self.snapshots)
        with embedded.transaction(self.snapshots):
            for host in sorted(dirty):
                recent = self.recent.get(host, ())
                fields = {"streak": self.streaks.get(host, 0),
                          # three flat lists (end in epoch ms, state, job): a fifth of the cost of 50 triples
                          "ends": [_epoch_ms(t) for t, _s, _j in recent], "states": [s for _t, s, _j in recent],
                          "jobs": [j for _t, _s, j in recent]}
                if not by_id.update_one({"_id": host}, {"$set": fields}).matched_count:   # every field: a replacement
                    self.snapshots.replace_one({"_id": host}, {"_id": host, **fields}, upsert=True)
            self.snapshots.update_one({"_id": MARKER}, {"$set": {"taken": taken}}, upsert=True)
        return len(dirty)

    def _count(self, host: str, job: dict) -> int:
        self.dirty.add(host)
        self.recent.setdefault(host, collections.deque(maxlen=RECENT)).append(
            (job.get("ts_sto") or utcnow(), job["state"], job.get("_id")))
        if job["state"] in BAD_ENDS:
            self.streaks[host] += 1
        else:
            self.streaks.pop(host, None)
        return self.streaks[host]

    # --- listener -----------------------------------------------------------------------------
    def job_moved(self, before: dict, after: dict) -> None:
        if after["state"] not in COUNTED_ENDS or before.get("state") not in states.JOB_ACTIVE:
            return
        host = after.get("host")
        if not host:
            return
        streak = self._count(host, after)
        if self.threshold and streak >= self.threshold and not self.marks.get(host, {}).get("flagged"):
            self.flag(host, streak)

    # --- operations ---------------------------------------------------------------------------
    def flag(self, host: str, streak: int) -> dict:
        """Mark ``host`` a black hole (and drain it when so configured)."""
        drain = self.drain_flagged or bool(self.marks.get(host, {}).get("drained"))
        doc = {"flagged": True, "drained": drain, "since": utcnow(), "streak": streak, "by": "server",
               "reason": f"its last {streak} jobs were unsuccessful"}
        self._store(host, doc)
        events.record("host.blackhole", f"host {host}: its last {streak} jobs were unsuccessful; "
                      + ("it gets no new work until an operator clears it" if drain else "flagged (not drained)"),
                      severity="error", data={"host": host, "streak": streak, "drained": drain})
        return self.marks[host]

    def drain(self, host: str, who: str, reason: str) -> dict:
        """An operator's drain: the host's pilots get no new work until it is cleared."""
        current = self.marks.get(host, {})
        doc = {"flagged": bool(current.get("flagged")), "drained": True,
               "since": current.get("since") or utcnow(), "streak": self.streaks[host], "by": who,
               "reason": reason or current.get("reason") or "drained by an operator"}
        self._store(host, doc)
        events.record("host.drain", f"host {host} drained by {who}: {doc['reason']}", severity="warning",
                      data={"host": host})
        return self.marks[host]

    def clear(self, host: str, who: str) -> dict:
        """Lift a host's flag and drain and forget its streak; 404 when it was neither."""
        if host not in self.marks:
            raise not_found("flagged or drained host", host)
        self.collection.delete_one({"_id": host})
        del self.marks[host]
        self.streaks.pop(host, None)
        self.dirty.add(host)
        self.broker.drained.discard(host)
        self.broker.schedule_serve()
        events.record("host.clear", f"host {host} cleared by {who}: its pilots get work again",
                      data={"host": host})
        return self.row(host)

    def _store(self, host: str, doc: dict) -> None:
        self.collection.update_one({"_id": host}, {"$set": doc}, upsert=True)
        self.marks[host] = {"_id": host, **doc}
        if doc["drained"]:
            self.broker.drained.add(host)
        else:
            self.broker.drained.discard(host)

    # --- reading ------------------------------------------------------------------------------
    def flagged(self) -> list[dict]:
        return [self.row(h) for h, d in sorted(self.marks.items()) if d.get("flagged")]

    def row(self, host: str, live: dict[str, int] | None = None) -> dict[str, Any]:
        mark = self.marks.get(host, {})
        recent = list(self.recent.get(host, ()))
        return {"host": host, "streak": self.streaks[host], "flagged": bool(mark.get("flagged")),
                "drained": bool(mark.get("drained")), "since": mark.get("since"), "by": mark.get("by"),
                "reason": mark.get("reason"), "recent_ok": sum(s == states.FINISHED for _t, s, _j in recent),
                "recent_bad": sum(s in BAD_ENDS for _t, s, _j in recent),
                "last_end": recent[-1][0] if recent else None, "last_job": recent[-1][2] if recent else None,
                "pilots": dict(live or {})}

    def listing(self, live: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
        """Every host seen lately, with live pilots by state (``live``: host -> state -> count)."""
        names = set(self.recent) | set(self.marks) | set(live)
        rows = [self.row(h, live.get(h)) for h in names]
        rows.sort(key=lambda r: (not r["flagged"], not r["drained"], -r["streak"], r["host"]))
        return rows
