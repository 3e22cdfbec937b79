"""Pilots' contacts kept in memory and written to their documents in batches.

Every request of a pilot changes its record: last contact (``ts_lhb``), current job, state (idle
or running), jobs done. Writing that per request was one database write per job and per
heartbeat for nothing any query needs at once: the broker and the reaper of this server read
the pilots from memory (``p3s.pilots.Registry``), and a pilot's current job is always derived from
the jobs (a lost reply is re-delivered from there). So a contact only marks the pilot here, and
``flush`` writes each marked pilot once (one conditional write: state, job, contact time, jobs
done), every ``contact_write_period`` seconds, before this server's reaper judges pilots, before
the API shows a pilot, and at shutdown.

- Other servers sharing a MongoDB judge a pilot by its ``ts_lhb`` in the database: it is at most
  ``contact_write_period`` seconds behind (bounded to a quarter of ``pilot_lost_timeout``).
- A kill asked through another server (``kill_requested``, or ``kill_job`` for the pilot's
  current job) is read back by each flush, so it reaches the pilot within that period.
- kill -9 loses at most one period of contacts: at start every live pilot gets a fresh grace
  period anyway (``p3s.reaper``), and start-up reconciliation rewrites each live pilot's job and
  state from the jobs (``p3s.reconcile``).
"""
from __future__ import annotations

import datetime as _dt
import logging

from tornado.ioloop import IOLoop

from p3s import embedded, states
from p3s.broker import PilotInfo
from p3s.errors import ApiError
from p3s.lifecycle import Lifecycle
from p3s.models import utcnow
from p3s.states import IllegalTransition

log = logging.getLogger("p3s.contacts")

KILL_FIELDS = {"kill_requested": 1, "kill_job": 1}


class Contacts:
    """The pilots whose record has changed in memory since it was last written."""

    def __init__(self, lifecycle: Lifecycle, registry: object) -> None:
        self.lifecycle, self.registry = lifecycle, registry
        self.pending: dict[str, PilotInfo] = {}
        self.usage: dict[str, dict] = {}         # a pilot's own usage, reported with no job
        self.writes = 0                          # pilot documents written (for tests and benches)

    def note(self, pilot: PilotInfo, usage: dict | None = None) -> None:
        """A contact from ``pilot`` (its job, state or jobs done may have changed): written later."""
        pilot.last_seen = IOLoop.current().time()
        self.pending[pilot.uuid] = pilot
        if usage:
            self.usage[pilot.uuid] = usage

    def mark(self, pilot: PilotInfo) -> None:
        """``pilot``'s job or kill order changed without a contact from it: written later."""
        self.pending[pilot.uuid] = pilot

    def discard(self, uuid: str) -> dict | None:
        """Forget what was not written of pilot ``uuid`` (its record is written otherwise: it
        stopped, or was declared lost); returns its unwritten usage, if any."""
        self.pending.pop(uuid, None)
        return self.usage.pop(uuid, None)

    def adjust(self, summary: dict) -> None:
        """Count the pilots of a summary (``Counters.summary``) in the state they are in memory:
        a pilot whose new state is not written yet moves between idle and running there."""
        for pilot in self.pending.values():
            target = states.P_RUNNING if pilot.job else states.IDLE
            if pilot.state == target or pilot.state not in states.PILOT_ALIVE:
                continue
            by_site = summary["pilots_by_site"].setdefault(pilot.site or "", {})
            if by_site.get(pilot.state, 0) <= 0:
                continue                          # not counted as we thought: leave the figures alone
            summary["pilots"][pilot.state] -= 1
            summary["pilots"][target] = summary["pilots"].get(target, 0) + 1
            by_site[pilot.state] -= 1
            if not by_site[pilot.state]:
                del by_site[pilot.state]
            by_site[target] = by_site.get(target, 0) + 1

    def flush(self) -> int:
        """Write every marked pilot's record (one conditional write each, in one transaction on
        the embedded store: 30 % less of the loop's time than a commit each); returns how many."""
        if not self.pending:
            return 0
        pending, self.pending = self.pending, {}
        loop_now, wall_now = IOLoop.current().time(), utcnow()
        with embedded.transaction(self.lifecycle.pilots.collection):
            for uuid, pilot in pending.items():
                self.write(pilot, loop_now, wall_now)
        return len(pending)

    def write(self, pilot: PilotInfo, loop_now: float | None = None, wall_now: _dt.datetime | None = None) -> None:
        """Write ``pilot``'s record now: state, current job, contact time, jobs done; read back
        any kill asked through another server. A pilot no longer alive in the database (another
        server declared it lost) is forgotten: its next request is refused."""
        self.pending.pop(pilot.uuid, None)
        loop_now = IOLoop.current().time() if loop_now is None else loop_now
        wall_now = wall_now or utcnow()
        contact = wall_now - _dt.timedelta(seconds=max(0.0, loop_now - pilot.last_seen))
        contact = contact.replace(microsecond=contact.microsecond // 1000 * 1000)
        target = states.P_RUNNING if pilot.job else states.IDLE
        set_ = {"job": pilot.job, "ts_lhb": contact}
        usage = self.usage.pop(pilot.uuid, None)
        if usage:
            set_["usage"] = usage
        ended, pilot.ended = pilot.ended, 0
        try:
            after = self.lifecycle.move_pilot(pilot.uuid, target, set_=set_, inc={"njobs": ended} if ended else None,
                                              projection=KILL_FIELDS)
        except (IllegalTransition, ApiError) as exc:
            log.info("pilot %s not written: %s", pilot.uuid, exc)
            self.registry.forget(pilot.uuid)
            return
        finally:
            self.writes += 1
        pilot.state = target
        pilot.kill = pilot.kill or bool(after.get("kill_requested"))
        if after.get("kill_job") and after["kill_job"] == pilot.job:
            pilot.kill_job = after["kill_job"]
