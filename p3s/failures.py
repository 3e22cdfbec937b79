"""The failed jobs behind the errors view, read once for every window and grouping.

``GET /errors`` groups the unsuccessful jobs of the last ``hours`` by job type, end state and
``by`` fields. Reading them is the cost (up to ``diagnosis.MAX_SCAN`` jobs, with their stderr);
grouping what was read is cheap. So one read serves every request for ``REUSE`` seconds: the
newest failures of a window of 1, 24 or 168 hours (the smallest that holds every window asked for
meanwhile), read with a pause every ``READ_SLICE`` jobs so that the loop never waits on it, and
kept as small rows (the error line already picked out of stderr). A request then filters and groups
those rows for its window, ``by`` and job type; cycling ``hours`` or ``by`` reads nothing more.

A job type filter uses the same rows when they hold its whole window; only when the read was cut
at MAX_SCAN before the window's start is that job type read on its own.

What a request gets is kept per query (``view``) as long as the read it was grouped from serves, and
no longer: a view is at most one read period (REUSE) old.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import heapq
import time
from typing import Any, Callable

from p3s import diagnosis, slices, states
from p3s.models import utcnow

REUSE = 5.0                  # seconds one read serves every errors view
TIERS = (1, 24, 168)         # hours a read covers: the smallest holding the windows asked for
READ_SLICE = 250             # jobs read between pauses (each has its stderr searched for the error line)
MAX_KEPT = 16                # reads kept (one for all job types, the others for one type each)
MAX_VIEWS = 64               # grouped views kept (one per query: window, grouping, job type)
FIELDS = {"jobtype": 1, "state": 1, "exit_code": 1, "host": 1, "error": 1, "stderr_tail": 1, "ts_sto": 1,
          "name": 1}


def _naive(when: _dt.datetime) -> _dt.datetime:
    return when.replace(tzinfo=None) if when.tzinfo else when


class Read:
    """The newest failures of ``hours`` (at most MAX_SCAN), newest first, as of ``at``."""

    def __init__(self, hours: int, at: float, since: _dt.datetime, rows: list[tuple], truncated: bool) -> None:
        self.hours, self.at, self.since, self.rows, self.truncated = hours, at, since, rows, truncated

    def holds(self, since: _dt.datetime) -> bool:
        """Whether every failure since ``since`` is among the rows."""
        if _naive(since) < _naive(self.since):
            return False
        return not self.truncated or not self.rows or _naive(since) > _naive(self.rows[-1][5])


class FailureReads:
    """The reads of failed jobs the errors view groups (see the module's docstring)."""

    def __init__(self, jobs: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.jobs = jobs                                            # the jobs collection
        self.clock = clock                                          # seconds (tests drive it)
        self.views: dict[tuple, tuple[float, Any]] = {}             # query -> (its read's ``at``, rendered view)
        self.reads: dict[str | None, Read] = {}                     # job type (None: all) -> read
        self.pending: dict[tuple[str | None, int], asyncio.Future] = {}
        self.documents = 0                                          # documents read, ever

    async def _read(self, jobtype: str | None, hours: int) -> Read:
        since = utcnow() - _dt.timedelta(hours=hours)
        query: dict[str, Any] = {"state": {"$in": sorted(states.JOB_UNSUCCESSFUL)}, "ts_sto": {"$gte": since}}
        if jobtype:
            query["jobtype"] = jobtype
        lazy = getattr(self.jobs, "_iter_documents", None)
        # The embedded engine filters every document before its find() returns the first: its lazy
        # iteration is read instead, all of the window, in slices, keeping the newest MAX_SCAN + 1.
        docs = lazy(query) if lazy is not None else \
            self.jobs.find(query, FIELDS).sort("ts_sto", -1).limit(diagnosis.MAX_SCAN + 1).batch_size(slices.SCAN)
        newest: list[tuple] = []            # a min-heap on the end time: (end, n, job's fields)
        n = 0
        for n, job in enumerate(docs, 1):
            item = (_naive(job["ts_sto"]), n, {k: job.get(k) for k in (*FIELDS, "_id")})
            if len(newest) <= diagnosis.MAX_SCAN:
                heapq.heappush(newest, item)
            elif item[0] > newest[0][0]:
                heapq.heapreplace(newest, item)
            if n % READ_SLICE == 0:
                await slices.pause()
        self.documents += n
        rows: list[tuple] = []
        for _, _, job in sorted(newest, key=lambda item: (item[0], -item[1]), reverse=True):
            rows.append((job.get("jobtype") or "", job["state"], job.get("exit_code"), job.get("host") or "",
                         diagnosis.error_line(job), job["ts_sto"], job["_id"], job.get("name") or ""))
            if len(rows) % READ_SLICE == 0:
                await slices.pause()
        truncated = len(rows) > diagnosis.MAX_SCAN
        return Read(hours, self.clock(), since, rows[:diagnosis.MAX_SCAN], truncated)

    async def _fresh(self, jobtype: str | None, hours: int) -> Read:
        """A read for ``jobtype`` holding ``hours`` or more, at most REUSE seconds old."""
        now = self.clock()
        old = self.reads.get(jobtype)
        if old is not None and now - old.at < REUSE and old.hours >= hours:
            return old
        wanted = max(hours, old.hours if old is not None and now - old.at < REUSE else 0)
        tier = next((t for t in TIERS if t >= wanted), wanted)
        key = (jobtype, tier)
        future = self.pending.get(key)
        if future is None:
            future = self.pending[key] = asyncio.ensure_future(self._read(jobtype, tier))
            future.add_done_callback(lambda _f: self.pending.pop(key, None))
        read = await asyncio.shield(future)
        if len(self.reads) >= MAX_KEPT and jobtype not in self.reads:
            self.reads = {k: v for k, v in self.reads.items() if k is None}
        self.reads[jobtype] = read
        return read

    async def errors(self, hours: int, by: tuple[str, ...], jobtype: str | None = None) -> dict[str, Any]:
        """Unsuccessful jobs of the last ``hours`` (of ``jobtype``) grouped by job type, end state
        and ``by``: each group's count, first and last end, and up to diagnosis.EXAMPLES example
        jobs, newest first."""
        return (await self._grouped(hours, by, jobtype))[1]

    async def _grouped(self, hours: int, by: tuple[str, ...], jobtype: str | None) -> tuple[Read, dict[str, Any]]:
        read = await self._fresh(None, hours)
        since = utcnow() - _dt.timedelta(hours=hours)       # after the read, which began its window earlier
        if jobtype and not read.holds(since):
            read = await self._fresh(jobtype, hours)
            since = utcnow() - _dt.timedelta(hours=hours)
        return read, group(read, since, hours * 3600, by, jobtype)

    async def view(self, hours: int, by: tuple[str, ...], jobtype: str | None,
                   render: Callable[[dict], Any]) -> Any:
        """``render`` of ``errors(hours, by, jobtype)``, kept for the same query until the read it
        was grouped from is REUSE seconds old (then the next request groups a newer read)."""
        key = (hours, by, jobtype)
        hit = self.views.get(key)
        if hit is None or self.clock() - hit[0] >= REUSE:
            read, view = await self._grouped(hours, by, jobtype)
            if len(self.views) >= MAX_VIEWS:
                self.views.clear()
            hit = self.views[key] = (read.at, render(view))
        return hit[1]


def group(read: Read, since: _dt.datetime, seconds: int, by: tuple[str, ...], jobtype: str | None) -> dict[str, Any]:
    """The rows of ``read`` ending since ``since`` (of ``jobtype``), grouped as the errors view shows."""
    cut = _naive(since)
    groups: dict[tuple, dict] = {}
    total = 0
    for row in read.rows:
        kind, state, exit_code, host, line, ts_sto, uuid, name = row
        if _naive(ts_sto) < cut:
            break                                    # newest first: the rest is older still
        if jobtype and kind != jobtype:
            continue
        total += 1
        values = {"exit_code": exit_code, "error_line": line, "host": host}
        key = (kind, state, *(values[b] for b in by))
        found = groups.get(key)
        if found is None:
            found = groups[key] = {"jobtype": kind, "state": state, **{b: values[b] for b in by}, "count": 0,
                                   "last": ts_sto, "first": ts_sto, "examples": []}
        found["count"] += 1
        found["first"] = ts_sto
        if len(found["examples"]) < diagnosis.EXAMPLES:
            found["examples"].append({"uuid": uuid, "name": name, "error_line": line})
    items = sorted(groups.values(), key=lambda g: (-g["count"], g["jobtype"]))
    return {"since": since, "seconds": seconds, "by": list(by), "total": total,
            "truncated": not read.holds(since), "items": items}
