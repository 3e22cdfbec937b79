"""How many live pilots a bootstrap token may have (``max_pilots``), held by the database.

Each limited token has one counter document in ``pilot_slots``:
``{_id: <token name>, n: <places held>, holds: {<pilot uuid>: <when taken>}}`` (a pilot's uuid is
always in its canonical form, hex digits and dashes: a valid field name). A registration takes a
place before it writes the pilot, with one conditional update that matches only while
``n < max_pilots`` and the pilot holds no place yet (``$inc`` of ``n`` and ``$set`` of the hold
together, on one document: atomic in MongoDB), so no interleaving of requests or of servers
sharing the database can admit more. The collection has one small document per limited token, so
its queries need no index. The place is given back, conditioned on the hold
being there (so at most once), when the pilot stops or is declared lost (a lifecycle listener), or
when its registration fails after taking it.

A server killed between taking a place and writing the pilot, or between ending a pilot and giving
its place back, leaves a hold behind: the count then errs on the safe side until ``repair`` (at
start and with the periodic housekeeping) releases the holds older than a grace period whose pilot
is not alive. Pilots registered before their token had a limit (or before this counter existed) are
counted in at start (``seed``).
"""
from __future__ import annotations

import datetime as _dt
import logging
from typing import Any, Iterable

from pymongo.errors import DuplicateKeyError

from p3s import models, states
from p3s.errors import ApiError
from p3s.lifecycle import Listener
from p3s.models import utcnow

log = logging.getLogger("p3s.admission")

COLLECTION = "pilot_slots"


class PilotGate(Listener):
    """Takes and gives back the places of bootstrap tokens limited by ``max_pilots``."""

    def __init__(self, database: Any, limited: Iterable[str], grace: float) -> None:
        self.collection = database[COLLECTION]
        self.limited = sorted(set(limited))   # names of the tokens that have a max_pilots
        self.grace = grace            # seconds a hold may go without its live pilot before repair

    def _ensure(self, token: str) -> None:
        try:
            self.collection.insert_one({"_id": token, "n": 0, "holds": {}})
        except DuplicateKeyError:
            pass

    def take(self, token: str, limit: int, pilot: str) -> bool:
        """Take a place of ``token`` for ``pilot``; True when taken now, False when the pilot
        already held one (a retried registration). 403 when the token is at its limit."""
        query = {"_id": token, "n": {"$lt": limit}, f"holds.{pilot}": {"$exists": False}}
        update = {"$inc": {"n": 1}, "$set": {f"holds.{pilot}": utcnow()}}
        if self.collection.update_one(query, update).matched_count:
            return True
        if self.collection.find_one({"_id": token}, {"_id": 1}) is None:
            self._ensure(token)
            if self.collection.update_one(query, update).matched_count:
                return True
        if self.collection.find_one({"_id": token, f"holds.{pilot}": {"$exists": True}}, {"_id": 1}) is not None:
            return False
        raise ApiError(403, f"pilot token {token!r} may have at most {limit} live pilots ({self.held(token)} are)")

    def release(self, pilot: str) -> bool:
        """Give back ``pilot``'s place, if it holds one (at most once)."""
        result = self.collection.update_one({f"holds.{pilot}": {"$exists": True}},
                                            {"$inc": {"n": -1}, "$unset": {f"holds.{pilot}": ""}})
        return result.modified_count == 1

    def held(self, token: str) -> int:
        return (self.collection.find_one({"_id": token}, {"n": 1}) or {}).get("n", 0)

    def seed(self) -> None:
        """Count in the live pilots of each limited token that hold no place (registered before
        the token had a limit, or by a registration whose hold a repair released too early)."""
        pilots = models.Pilot._get_collection()
        now = utcnow()
        for token in self.limited:
            self._ensure(token)
            held = (self.collection.find_one({"_id": token}, {"holds": 1}) or {}).get("holds") or {}
            for doc in pilots.find({"registrar": token, "state": {"$in": sorted(states.PILOT_ALIVE)}}, {"_id": 1}):
                if doc["_id"] not in held:
                    self.collection.update_one({"_id": token, f"holds.{doc['_id']}": {"$exists": False}},
                                               {"$inc": {"n": 1}, "$set": {f"holds.{doc['_id']}": now}})

    def repair(self, grace: float | None = None) -> list[str]:
        """Release holds older than ``grace`` seconds (default: the gate's) whose pilot is not
        alive: left by a server killed at the wrong moment; then ``seed``. Returns the pilots
        released."""
        cutoff = utcnow() - _dt.timedelta(seconds=self.grace if grace is None else grace)
        old = {pilot: doc["_id"] for doc in self.collection.find({}, {"holds": 1})
               for pilot, taken in (doc.get("holds") or {}).items() if taken <= cutoff}
        alive = self._alive(old)
        released = []
        for pilot, token in sorted(old.items()):
            if pilot not in alive and self.release(pilot):
                log.warning("gave back the place of pilot %s (token %s): its holder never did", pilot, token)
                released.append(pilot)
        self.seed()
        return released

    def give_back(self, pilot: str) -> None:
        """Release the place a registration of ``pilot`` took, the registration having failed,
        unless the pilot is alive all the same (registered by a retry through another server,
        which found the place already held)."""
        if not self._alive([pilot]):
            self.release(pilot)

    @staticmethod
    def _alive(pilots: Iterable[str]) -> set[str]:
        """Those of ``pilots`` whose record is alive (one query)."""
        wanted = sorted(pilots)
        if not wanted:
            return set()
        return {doc["_id"] for doc in models.Pilot._get_collection().find(
            {"_id": {"$in": wanted}, "state": {"$in": sorted(states.PILOT_ALIVE)}}, {"_id": 1})}

    # --- listener -----------------------------------------------------------------------------
    def pilot_moved(self, before: dict, after: dict) -> None:
        if before.get("state") in states.PILOT_ALIVE and after["state"] not in states.PILOT_ALIVE:
            self.release(after["_id"])
