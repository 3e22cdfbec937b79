"""Job-type limits enforced by the database, for several server processes on one MongoDB.

Each limited job type has one counter document in ``jobtype_slots``:
``{_id: jobtype, n: <slots held>, holds: [{j: <job uuid>, t: <when taken>}]}``. A server takes a
slot before it dispatches a job of that type, with one conditional write that matches only while
``n < limit`` (``$inc`` of ``n`` and ``$push`` of the hold together), so no interleaving of servers
can ever make ``n`` pass the limit. The slot is released, conditioned on the hold being there (so
at most once), when the job leaves ``dispatched``/``running`` or when the dispatch write finds the
job already taken.

A server killed between taking a slot and dispatching, or between ending a job and releasing
its slot, leaves a hold behind: that only makes the count err on the safe side. ``repair`` (run by
the reaper) releases holds older than a grace period whose job is not dispatched or running.

The embedded store has a single server process; there the in-memory counters suffice and this
module is not used.
"""
from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

from pymongo.errors import DuplicateKeyError

from p3s import states
from p3s.lifecycle import Listener
from p3s.models import Job, utcnow

log = logging.getLogger("p3s.limits")

COLLECTION = "jobtype_slots"


class SlotGate(Listener):
    """Takes and releases per-jobtype slots in the shared database."""

    def __init__(self, database: Any, broker: Any, hold_grace: float = 60.0) -> None:
        self.collection = database[COLLECTION]
        self.broker = broker                  # its ``limits``: jobtype -> limit or None
        self.hold_grace = hold_grace

    @property
    def limits(self) -> dict[str, int | None]:
        return self.broker.limits

    def _ensure(self, jobtype: str) -> None:
        try:
            self.collection.insert_one({"_id": jobtype, "n": 0, "holds": []})
        except DuplicateKeyError:
            pass

    def acquire(self, jobtype: str, job: str) -> bool:
        """Take a slot of ``jobtype`` for ``job``; False when the type is at its limit.

        A type with no limit needs no slot (True).
        """
        limit = self.limits.get(jobtype)
        if limit is None:
            return True
        query = {"_id": jobtype, "n": {"$lt": limit}}
        update = {"$inc": {"n": 1}, "$push": {"holds": {"j": job, "t": utcnow()}}}
        if self.collection.update_one(query, update).matched_count:
            return True
        if self.collection.find_one({"_id": jobtype}, {"_id": 1}) is None:
            self._ensure(jobtype)
            return self.collection.update_one(query, update).matched_count == 1
        return False

    def release(self, jobtype: str, job: str) -> bool:
        """Give back ``job``'s slot, if it holds one (at most once)."""
        result = self.collection.update_one({"_id": jobtype, "holds.j": job},
                                            {"$inc": {"n": -1}, "$pull": {"holds": {"j": job}}})
        return result.modified_count == 1

    def held(self, jobtype: str) -> int:
        doc = self.collection.find_one({"_id": jobtype}, {"n": 1})
        return (doc or {}).get("n", 0)

    def seed(self, jobtype: str) -> None:
        """When a limit is set: count the type's jobs already dispatched or running as holding
        slots (they were dispatched while the type had no limit)."""
        self._ensure(jobtype)
        doc = self.collection.find_one({"_id": jobtype}, {"holds": 1}) or {}
        held = {h["j"] for h in doc.get("holds", [])}
        now = utcnow()
        for job in Job._get_collection().find(
                {"jobtype": jobtype, "state": {"$in": sorted(states.JOB_ACTIVE)}}, {"_id": 1}):
            if job["_id"] not in held:
                self.collection.update_one({"_id": jobtype, "holds.j": {"$ne": job["_id"]}},
                                           {"$inc": {"n": 1}, "$push": {"holds": {"j": job["_id"], "t": now}}})

    def repair(self) -> list[str]:
        """Release holds older than the grace period whose job is no longer dispatched or running
        (left by a server killed at the wrong moment). Returns the released job ids."""
        cutoff = utcnow() - _dt.timedelta(seconds=self.hold_grace)
        released = []
        for doc in self.collection.find({"holds.t": {"$lt": cutoff}}, {"holds": 1}):
            for hold in doc.get("holds", []):
                if hold["t"] >= cutoff:
                    continue
                job = Job._get_collection().find_one({"_id": hold["j"]}, {"state": 1})
                if job is None or job["state"] not in states.JOB_ACTIVE:
                    if self.release(doc["_id"], hold["j"]):
                        log.warning("released the slot of job %s (%s): its holder never gave it back",
                                    hold["j"], doc["_id"])
                        released.append(hold["j"])
        return released

    # --- listener -----------------------------------------------------------------------------
    def job_moved(self, before: dict, after: dict) -> None:
        if before.get("state") in states.JOB_ACTIVE and after["state"] not in states.JOB_ACTIVE:
            jobtype = before.get("jobtype") or after.get("jobtype") or ""
            if jobtype in self.limits:
                self.release(jobtype, after["_id"])

    def job_removed(self, doc: dict) -> None:
        if doc.get("state") in states.JOB_ACTIVE:
            self.release(doc.get("jobtype") or "", doc["_id"])
