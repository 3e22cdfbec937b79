"""Housekeeping on a timer: pilots that stopped heartbeating, and running jobs past their limit.

Both checks read memory only (the live-pilot registry, a heap of deadlines); the database is
touched only for what actually changes, each change a conditional write, so a pilot that another
server heard from in the meantime is not declared lost.
"""
from __future__ import annotations

import collections
import datetime as _dt
import heapq
import logging
from typing import Any

from tornado.ioloop import IOLoop

from p3s import events, faults, models, states
from p3s.broker import Broker
from p3s.config import Config
from p3s.errors import ApiError
from p3s.lifecycle import Lifecycle, Listener, equals
from p3s.models import utcnow
from p3s.pilots import PilotService, Registry
from p3s.states import IllegalTransition

log = logging.getLogger("p3s.reaper")


class Reaper(Listener):
    """Declares silent pilots lost (their jobs ``pilot_lost``) and overdue jobs ``timelimit``."""

    def __init__(self, lifecycle: Lifecycle, registry: Registry, broker: Broker, pilots: PilotService,
                 config: Config) -> None:
        self.lifecycle, self.registry, self.broker, self.pilots = lifecycle, registry, broker, pilots
        self.config = config
        self._deadlines: list[tuple[_dt.datetime, str]] = []
        self.started = utcnow()
        self.loop_watch: Any = None               # a p3s.loopwatch.LoopWatch, set by the server
        self._late_seen = 0.0
        self._excused: collections.deque[tuple[float, float]] = collections.deque(maxlen=1000)
        lifecycle.listeners.append(self)

    def load(self) -> None:
        self._deadlines = []
        for doc in models.Job._get_collection().find({"state": states.RUNNING}, {"ts_sta": 1, "timelimit": 1}):
            self._watch(doc["_id"], doc.get("ts_sta"), doc.get("timelimit"))

    def _watch(self, uuid: str, started: _dt.datetime | None, timelimit: int | None) -> None:
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
        try:
            self.excuse_stalls()
            self.reap_pilots()
            self.reap_overdue()
            self.reap_undispatched()
        except Exception:
            log.exception("reaper round failed")

    def excuse_stalls(self) -> None:
        """Silence the server caused is not the pilots' fault: the time the loop ran late since the
        last round is added to every pilot's deadline (and kept to widen the database's cutoff)."""
        if self.loop_watch is None:
            return
        late = self.loop_watch.late_so_far()
        stall, self._late_seen = late - self._late_seen, late
        if stall <= 0.05:
            return
        now = IOLoop.current().time()
        for pilot in self.registry.pilots.values():
            pilot.last_seen = min(now, pilot.last_seen + stall)
        self._excused.append((now, stall))
        if stall > 1:
            log.warning("the server's loop ran %.1f s late; pilots' deadlines extended by as much", stall)

    def _excused_recently(self, now: float) -> float:
        horizon = 2 * self.config.pilot_lost_timeout
        return sum(s for t, s in self._excused if now - t < horizon + s)

    def reap_pilots(self) -> list[str]:
        now = IOLoop.current().time()
        timeout = self.config.pilot_lost_timeout
        excused = self._excused_recently(now)
        silent = [p for p in self.registry.pilots.values()
                  if now - p.last_seen > timeout and not self.broker.is_waiting(p.uuid)]
        lost = []
        for pilot in silent:
            cutoff = utcnow() - _dt.timedelta(seconds=timeout + excused)
            try:
                self.lifecycle.move_pilot(pilot.uuid, states.LOST, where={"ts_lhb": {"$lt": cutoff}},
                                          set_={"ts_stop": utcnow(), "reason": f"no contact for {timeout} s"})
            except (IllegalTransition, ApiError):
                # Another server heard from it (or it stopped meanwhile): look again next round.
                self.registry.forget(pilot.uuid)
                continue
            self.registry.forget(pilot.uuid)
            lost.append(pilot.uuid)
            faults.crash_point("pilot_lost")
            events.record("pilot.lost", f"pilot {pilot.uuid} on {pilot.host} lost: no contact for {timeout} s",
                          pilot=pilot.uuid, site=pilot.site or None, severity="warning")
            for job in models.Job._get_collection().find(
                    {"pilot": pilot.uuid, "state": {"$in": sorted(states.JOB_ACTIVE)}}, {"_id": 1}):
                try:
                    self.lifecycle.end_job(job["_id"], states.PILOT_LOST, where={"pilot": equals(pilot.uuid)},
                                           set_={"error": f"pilot {pilot.uuid} on {pilot.host} was lost"})
                except (IllegalTransition, ApiError):
                    continue
                events.record("job.pilot_lost", f"job {job['_id']} lost with pilot {pilot.uuid}",
                              job=job["_id"], pilot=pilot.uuid, severity="warning")
        return lost

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

    def reap_overdue(self) -> list[str]:
        now = utcnow()
        overdue = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, uuid = heapq.heappop(self._deadlines)
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
