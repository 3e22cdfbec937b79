"""Housekeeping on a timer: pilots that stopped contacting the server, and running jobs past their
time limit.

Every decision is read from the database and made by a conditional write, so that every server
sharing a MongoDB reaps every pilot and job, whichever server they talked to, and no two servers
act twice on one of them:

- a pilot is lost when its last contact (``ts_lhb``, indexed with ``state``) is older than
  ``pilot_lost_timeout``; the write that declares it lost matches only while that is still true,
  so a pilot that another server heard from in the meantime is left alone. Pilots waiting in a
  long poll on this server are in contact: their ``ts_lhb`` is refreshed each round first.
- a running job is overdue when its start plus its time limit plus ``timelimit_grace`` has passed.
  Deadlines are kept in a heap, fed by this server's own job starts and, on a shared database,
  by re-reading the jobs started lately every ``sync_period`` (indexed on ``state``, ``ts_sta``).

The reaper judges no pilot while it cannot trust its own view of time: for ``pilot_lost_timeout``
seconds after the server starts (live pilots get a fresh grace period), after its own event loop
stalled, and after the database was slow or unreachable (pilots could not reach it either).
"""
from __future__ import annotations

import datetime as _dt
import heapq
import logging
import time
from typing import Any


from p3s import events, faults, models, states
from p3s.broker import Broker
from p3s.config import Config
from p3s.errors import ApiError
from p3s.lifecycle import Lifecycle, Listener, equals
from p3s.models import utcnow
from p3s.pilots import PilotService, Registry
from p3s.states import IllegalTransition

log = logging.getLogger("p3s.reaper")

# How far back a re-read of running jobs looks: a pilot's start time comes from its own clock and
# may reach the server late.
START_SKEW = _dt.timedelta(seconds=300)
# A full re-read of the running jobs' deadlines now and then, on a shared database.
FULL_RELOAD_EVERY = 60.0


class Reaper(Listener):
    """Declares silent pilots lost (their jobs ``pilot_lost``) and overdue jobs ``timelimit``."""

    def __init__(self, lifecycle: Lifecycle, registry: Registry, broker: Broker, pilots: PilotService,
                 config: Config, health: Any = None) -> None:
        self.lifecycle, self.registry, self.broker, self.pilots = lifecycle, registry, broker, pilots
        self.config = config
        self.health = health                 # p3s.dbcalls.Health: when the database last had trouble
        self._deadlines: list[tuple[_dt.datetime, str]] = []
        self.started = utcnow()
        self._watched: dict[str, _dt.datetime | None] = {}
        self._read_since: _dt.datetime | None = None
        self._full_at = 0.0
        self.trusted_since = time.monotonic()   # start: live pilots get a fresh grace period
        self._last_tick: float | None = time.monotonic()   # a stall before the first round counts too
        lifecycle.listeners.append(self)

    # --- deadlines ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read the deadlines of every running job."""
        self._deadlines, self._watched = [], {}
        self._read(None)
        self._full_at = time.monotonic()

    def sync(self) -> None:
        """Read the deadlines of jobs other servers started lately (shared database)."""
        if time.monotonic() - self._full_at > FULL_RELOAD_EVERY:
            self.load()
        else:
            self._read(self._read_since - START_SKEW if self._read_since else None)

    def _read(self, since: _dt.datetime | None) -> None:
        started_at = utcnow()
        query: dict[str, Any] = {"state": states.RUNNING}
        if since is not None:
            query["ts_sta"] = {"$gte": since}
        for doc in models.Job._get_collection().find(query, {"ts_sta": 1, "timelimit": 1}):
            self._watch(doc["_id"], doc.get("ts_sta"), doc.get("timelimit"))
        self._read_since = started_at

    def _watch(self, uuid: str, started: _dt.datetime | None, timelimit: int | None) -> None:
        if uuid in self._watched and self._watched[uuid] == started:
            return
        self._watched[uuid] = started
        started = started or utcnow()
        deadline = started + _dt.timedelta(seconds=(timelimit or self.config.default_timelimit)
                                           + self.config.timelimit_grace)
        heapq.heappush(self._deadlines, (deadline, uuid))

    # --- listener -----------------------------------------------------------------------------
    def job_moved(self, before: dict, after: dict) -> None:
        if after["state"] == states.RUNNING:
            self._watch(after["_id"], after.get("ts_sta"), after.get("timelimit"))

    # --- checks -------------------------------------------------------------------------------
    def tick(self) -> None:
        """One round of both checks (run by a PeriodicCallback)."""
        now = time.monotonic()
        if self._last_tick is not None and now - self._last_tick > max(3 * self.config.reaper_period,
                                                                        self.config.pilot_lost_timeout / 2):
            log.warning("the server did not run its checks for %.1f s; pilots are not judged for %s s",
                        now - self._last_tick, self.config.pilot_lost_timeout)
            self.trusted_since = now
        self._last_tick = now
        try:
            self.reap_pilots()
            self.reap_overdue()
            self.reap_undispatched()
        except Exception:
            self.trusted_since = time.monotonic()
            log.exception("reaper round failed")
        self._last_tick = time.monotonic()

    def trusted(self) -> bool:
        """Whether silence now means a silent pilot rather than a server or database that stalled."""
        trouble = self.health.trouble_at if self.health is not None else None
        since = max(self.trusted_since, trouble or 0.0)
        return time.monotonic() - since >= self.config.pilot_lost_timeout

    def reap_pilots(self) -> list[str]:
        timeout = self.config.pilot_lost_timeout
        pilots = models.Pilot._get_collection()
        self.pilots.contacts.flush()      # this server's contacts reach the database before it judges
        waiting = self.broker.waiting_pilots()
        if waiting:
            # Pilots in a long poll here are in contact, though they send nothing while they wait.
            pilots.update_many({"_id": {"$in": waiting}, "state": {"$in": sorted(states.PILOT_ALIVE)}},
                               {"$set": {"ts_lhb": utcnow()}})
        if not self.trusted():
            return []
        cutoff = utcnow() - _dt.timedelta(seconds=timeout)
        silent = list(pilots.find({"state": {"$in": sorted(states.PILOT_ALIVE)}, "ts_lhb": {"$lt": cutoff}},
                                  {"host": 1, "site": 1}))
        lost = []
        for pilot in silent:
            uuid, host, site = pilot["_id"], pilot.get("host", ""), pilot.get("site", "")
            if self.broker.is_waiting(uuid):
                continue
            try:
                self.lifecycle.move_pilot(uuid, states.LOST, where={"ts_lhb": {"$lt": cutoff}},
                                          set_={"ts_stop": utcnow(), "reason": f"no contact for {timeout} s"})
            except (IllegalTransition, ApiError):
                continue                     # heard from meanwhile (here or by another server), or stopped
            finally:
                self.registry.forget(uuid)
                self.pilots.contacts.discard(uuid)
            lost.append(uuid)
            faults.crash_point("pilot_lost")
            events.record("pilot.lost", f"pilot {uuid} on {host} lost: no contact for {timeout} s",
                          pilot=uuid, site=site or None, severity="warning")
            self.end_jobs_of_lost(uuid, host)
        return lost

    def end_jobs_of_lost(self, uuid: str, host: str) -> None:
        """End the jobs a lost pilot held (each a conditional write on the job's owner)."""
        for job in models.Job._get_collection().find(
                {"pilot": uuid, "state": {"$in": sorted(states.JOB_ACTIVE)}}, {"_id": 1}):
            try:
                self.lifecycle.end_job(job["_id"], states.PILOT_LOST, where={"pilot": equals(uuid)},
                                       set_={"error": f"pilot {uuid} on {host} was lost"})
            except (IllegalTransition, ApiError):
                continue
            events.record("job.pilot_lost", f"job {job['_id']} lost with pilot {uuid}",
                          job=job["_id"], pilot=uuid, severity="warning")

    def reap_overdue(self) -> list[str]:
        now = utcnow()
        overdue = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, uuid = heapq.heappop(self._deadlines)
            self._watched.pop(uuid, None)
            job = models.Job._get_collection().find_one({"_id": uuid, "state": states.RUNNING},
                                                        {"ts_sta": 1, "timelimit": 1, "pilot": 1})
            if job is None:
                continue
            if job.get("ts_sta") and job["ts_sta"] + _dt.timedelta(
                    seconds=job["timelimit"] + self.config.timelimit_grace) > now:
                self._watch(uuid, job["ts_sta"], job["timelimit"])   # restarted with a new deadline
                continue
            try:
                self.lifecycle.end_job(uuid, states.TIMELIMIT, sources={states.RUNNING},
                                       where={"ts_sta": equals(job["ts_sta"])} if job.get("ts_sta") else None,
                                       set_={"error": f"still running {self.config.timelimit_grace} s past its "
                                                      f"time limit of {job['timelimit']} s; ended by the server"})
            except (IllegalTransition, ApiError):
                continue
            if job.get("pilot"):
                self.pilots.kill_job({"_id": uuid, "pilot": job["pilot"]})
            overdue.append(uuid)
            events.record("job.timelimit", f"job {uuid} overran its time limit; its pilot is told to stop it",
                          job=uuid, pilot=job.get("pilot"), severity="warning")
        return overdue

    def reap_undispatched(self) -> list[str]:
        """Jobs dispatched longer than ``dispatch_timeout`` ago (counted from this server's start at
        the earliest: its pilots may have been waiting for it) and never reported started go back
        to ``defined``, their attempt uncounted. Each is one conditional write on the job."""
        timeout = _dt.timedelta(seconds=self.config.dispatch_timeout)
        now = utcnow()
        if now - self.started < timeout:
            return []
        cutoff = now - timeout
        released = []
        for job in models.Job._get_collection().find({"state": states.DISPATCHED, "ts_dis": {"$lt": cutoff}},
                                                     {"pilot": 1}):
            after = self.lifecycle.release_job(job["_id"], job.get("pilot"),
                                               f"not started within {self.config.dispatch_timeout} s",
                                               sources={states.DISPATCHED}, where={"ts_dis": {"$lt": cutoff}})
            if after is not None:
                released.append(job["_id"])
                info = self.registry.pilots.get(job.get("pilot") or "")
                if info is not None and info.job == job["_id"]:
                    info.job = None
        return released
