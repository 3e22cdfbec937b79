"""Brokerage: the ready queue of ``defined`` jobs, held in memory, and the pilots waiting for work.

A claim takes the best matching entry from the queue (highest priority, then first defined) and
makes it the pilot's with one conditional write that succeeds only while the job is still
``defined``. That write is the final word: if another server process on the same MongoDB took the
job first, the write matches nothing and the broker tries the next entry. The queue is rebuilt
from the database at start (and, when the database is shared, re-synchronised now and then), so a
claim never needs a sorted scan, and a waiting pilot costs no database query at all.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as _dt
import heapq
import logging
from typing import Any, Callable, Iterable

from tornado.ioloop import IOLoop

from p3s import models, states
from p3s.errors import ApiError
from p3s.lifecycle import Lifecycle, Listener
from p3s.models import utcnow
from p3s.states import IllegalTransition

log = logging.getLogger("p3s.broker")


@dataclasses.dataclass(eq=False)
class PilotInfo:
    """What the broker and the reaper know of a live pilot, kept in memory."""

    uuid: str
    host: str
    site: str
    jobtypes: frozenset[str]
    state: str
    last_seen: float                     # loop time of the last contact
    job: str | None = None               # current job
    kill: bool = False                   # stop requested
    kill_job: str | None = None          # stop this job of the pilot's
    ended: int = 0                       # jobs ended but not yet counted on the pilot's document


class _Entry:
    __slots__ = ("key", "rank", "uuid", "jobtype", "site", "live", "deadline")

    def __init__(self, priority: int, seq: int, uuid: str, jobtype: str, site: str,
                 deadline: float | None = None, newest_first: bool = False) -> None:
        self.rank = (-priority, seq)                             # order between job types
        self.key = (-priority, -seq) if newest_first else self.rank   # order within the type's heap
        self.uuid, self.jobtype, self.site, self.live, self.deadline = uuid, jobtype, site, True, deadline

    def __lt__(self, other: "_Entry") -> bool:
        return self.key < other.key


class ReadyQueue:
    """``defined`` jobs in one heap per (jobtype, site), with lazy removal."""

    def __init__(self) -> None:
        self._heaps: dict[tuple[str, str], list[_Entry]] = {}
        self._entries: dict[str, _Entry] = {}
        self.newest_first: set[str] = set()      # job types served newest first within a priority

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uuid: str) -> bool:
        return uuid in self._entries

    def push(self, uuid: str, priority: int, seq: int, jobtype: str, site: str, deadline: Any = None) -> None:
        self.discard(uuid)
        if isinstance(deadline, _dt.datetime):
            deadline = deadline.replace(tzinfo=_dt.timezone.utc).timestamp()
        entry = _Entry(priority, seq, uuid, jobtype, site or "", deadline, jobtype in self.newest_first)
        self._entries[uuid] = entry
        heapq.heappush(self._heaps.setdefault((entry.jobtype, entry.site), []), entry)

    def discard(self, uuid: str) -> None:
        entry = self._entries.pop(uuid, None)
        if entry is not None:
            entry.live = False

    def best(self, jobtypes: frozenset[str], site: str, blocked: Iterable[str] = ()) -> _Entry | None:
        """The best entry a pilot of ``site`` restricted to ``jobtypes`` (empty = any) may take."""
        blocked = set(blocked)
        best: _Entry | None = None
        for (jobtype, job_site), heap in self._heaps.items():
            if jobtypes and jobtype not in jobtypes:
                continue
            if jobtype in blocked or (job_site and job_site != site):
                continue
            while heap and not heap[0].live:
                heapq.heappop(heap)
            if heap and (best is None or heap[0].rank < best.rank):
                best = heap[0]
        return best

    def reorder(self, jobtype: str, newest_first: bool) -> None:
        """Serve ``jobtype`` newest first (or first defined first) from now on."""
        (self.newest_first.add if newest_first else self.newest_first.discard)(jobtype)
        for (heap_type, _site), heap in self._heaps.items():
            if heap_type == jobtype:
                for entry in heap:
                    entry.key = (entry.rank[0], -entry.rank[1]) if newest_first else entry.rank
                heapq.heapify(heap)

    def uuids(self) -> set[str]:
        return set(self._entries)


class Broker(Listener):
    """Hands ``defined`` jobs to pilots, exactly once; parks pilots that find nothing (long poll)."""

    def __init__(self, lifecycle: Lifecycle, shared_db: bool = False) -> None:
        self.lifecycle = lifecycle
        self.queue = ReadyQueue()
        self.limits: dict[str, int | None] = {}
        self.shared_db = shared_db
        self.slots: Any = None               # p3s.limits.SlotGate on a shared database
        self._waiters: collections.OrderedDict[str, tuple[PilotInfo, asyncio.Future]] = collections.OrderedDict()
        self._serve_scheduled = False
        self._serving = self._serve_again = False
        self.call_soon = lambda fn: IOLoop.current().add_callback(fn)   # p3s.dbcalls on MongoDB
        self.dispatch_latencies: collections.deque[float] = collections.deque(maxlen=10000)
        # Asked before a job is handed out: True drops it (p3s.freshness: past its deadline).
        self.gate: Callable[[str, str, float | None], bool] | None = None
        self.drained: set[str] = set()       # hosts whose pilots get no new work (p3s.hosts)
        lifecycle.listeners.append(self)

    # --- start-up -----------------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild the queue and the limits from the database."""
        newest_first = self.queue.newest_first
        self.queue = ReadyQueue()
        self.queue.newest_first = newest_first
        for doc in models.Job._get_collection().find(
                {"state": states.DEFINED}, {"priority": 1, "seq": 1, "jobtype": 1, "site": 1, "deadline": 1}):
            self.queue.push(doc["_id"], doc.get("priority", 0), doc.get("seq", 0), doc.get("jobtype", ""),
                            doc.get("site", ""), doc.get("deadline"))
        self.load_limits()

    def load_limits(self) -> None:
        self.limits = {d["_id"]: d.get("limit") for d in models.JobType._get_collection().find({}, {"limit": 1})}

    def resync(self) -> None:
        """Bring the queue in line with the database (another server may share it)."""
        defined = {}
        for doc in models.Job._get_collection().find(
                {"state": states.DEFINED}, {"priority": 1, "seq": 1, "jobtype": 1, "site": 1, "deadline": 1}):
            defined[doc["_id"]] = doc
        for uuid in self.queue.uuids() - defined.keys():
            self.queue.discard(uuid)
        for uuid in defined.keys() - self.queue.uuids():
            doc = defined[uuid]
            self.queue.push(uuid, doc.get("priority", 0), doc.get("seq", 0), doc.get("jobtype", ""), doc.get("site", ""),
                            doc.get("deadline"))
        self.load_limits()
        self.schedule_serve()

    # --- claims -------------------------------------------------------------------------------
    def blocked_types(self) -> list[str]:
        """Job types at their limit of dispatched+running jobs."""
        if self.slots is not None:
            return []                        # the database's slot counters decide (p3s.limits)
        counters = self.lifecycle.counters
        return [t for t, limit in self.limits.items() if limit is not None and counters.active(t) >= limit]

    def claim(self, pilot: PilotInfo) -> dict | None:
        """Give ``pilot`` the best job it may take now, or None. One conditional write per job taken."""
        if pilot.host in self.drained:
            return None
        blocked = set(self.blocked_types())
        while True:
            entry = self.queue.best(pilot.jobtypes, pilot.site, blocked)
            if entry is None:
                return None
            if self.slots is not None and not self.slots.acquire(entry.jobtype, entry.uuid):
                blocked.add(entry.jobtype)   # at its limit across all servers
                continue
            self.queue.discard(entry.uuid)
            if self.gate is not None and self.gate(entry.uuid, entry.jobtype, entry.deadline):
                if self.slots is not None:
                    self.slots.release(entry.jobtype, entry.uuid)
                continue
            now = utcnow()
            try:
                job = self.lifecycle.move_job(
                    entry.uuid, states.DISPATCHED, sources={states.DEFINED}, full=True,
                    set_={"pilot": pilot.uuid, "host": pilot.host, "pilot_site": pilot.site, "ts_dis": now},
                    inc={"attempts": 1})
            except (IllegalTransition, ApiError):
                log.debug("job %s was no longer defined; skipped", entry.uuid)
                if self.slots is not None:
                    self.slots.release(entry.jobtype, entry.uuid)
                continue
            if job.get("ts_def"):
                self.dispatch_latencies.append((now - job["ts_def"]).total_seconds())
            return job

    def wait(self, pilot: PilotInfo, seconds: float) -> asyncio.Future:
        """A future resolved with a job, with ``{"kill": True}``, or with None after ``seconds``."""
        previous = self._waiters.pop(pilot.uuid, None)
        if previous and not previous[1].done():
            previous[1].set_result(None)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters[pilot.uuid] = (pilot, future)
        handle = IOLoop.current().call_later(seconds, self._expire, pilot.uuid, future)
        future.add_done_callback(lambda _f: IOLoop.current().remove_timeout(handle))
        return future

    @property
    def waiting(self) -> int:
        """How many pilots are parked waiting for work."""
        return len(self._waiters)

    def waiting_pilots(self) -> list[str]:
        """The uuids of the pilots parked here."""
        return list(self._waiters)

    def is_waiting(self, pilot_uuid: str) -> bool:
        return pilot_uuid in self._waiters

    def stop_waiting(self, pilot_uuid: str, result: Any = None) -> None:
        """End a pilot's wait now with ``result`` (a kill, or None when its connection closed)."""
        waiter = self._waiters.pop(pilot_uuid, None)
        if waiter and not waiter[1].done():
            waiter[1].set_result(result)

    def stop_all_waiting(self) -> None:
        for uuid in list(self._waiters):
            self.stop_waiting(uuid)

    def _expire(self, pilot_uuid: str, future: asyncio.Future) -> None:
        waiter = self._waiters.get(pilot_uuid)
        if waiter and waiter[1] is future:
            del self._waiters[pilot_uuid]
        if not future.done():
            future.set_result(None)

    def schedule_serve(self) -> None:
        """Serve waiting pilots on the next loop iteration (coalesced)."""
        if not self._serve_scheduled and self._waiters:
            self._serve_scheduled = True
            self.call_soon(self._serve)

    def _serve(self) -> None:
        self._serve_scheduled = False
        if self._serving:          # a round is waiting on the database (MongoDB): it goes again after
            self._serve_again = True
            return
        self._serving = True
        try:
            for uuid in list(self._waiters):
                if not len(self.queue):
                    return
                waiter = self._waiters.get(uuid)
                if waiter is None:
                    continue
                pilot, future = waiter
                if future.done():
                    self._waiters.pop(uuid, None)
                    continue
                job = self.claim(pilot)
                if job is not None:
                    if self._waiters.get(uuid) is waiter:
                        self._waiters.pop(uuid, None)
                    if future.done():
                        pilot.job = job["_id"]      # its wait ended meanwhile: the next request gets it
                    else:
                        future.set_result(job)
        finally:
            self._serving = False
            if self._serve_again:
                self._serve_again = False
                self.schedule_serve()

    # --- listener -----------------------------------------------------------------------------
    def job_created(self, doc: dict) -> None:
        if doc["state"] == states.DEFINED:
            self.queue.push(doc["_id"], doc.get("priority", 0), doc["seq"], doc["jobtype"], doc.get("site", ""),
                            doc.get("deadline"))
            self.schedule_serve()

    def job_removed(self, doc: dict) -> None:
        self.queue.discard(doc["_id"])

    def job_moved(self, before: dict, after: dict) -> None:
        if after["state"] == states.DEFINED:
            self.queue.push(after["_id"], after.get("priority", 0), after.get("seq", 0), after.get("jobtype", ""),
                            after.get("site", ""), after.get("deadline"))
            self.schedule_serve()
        elif before.get("state") == states.DEFINED:
            self.queue.discard(after["_id"])
        if before.get("state") in states.JOB_ACTIVE and after["state"] not in states.JOB_ACTIVE:
            if self.limits.get(after.get("jobtype")) is not None:
                self.schedule_serve()

