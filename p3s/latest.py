"""The newest finished job of every job type, kept in memory for ``GET /results/latest``.

Finding it by a query costs the embedded store every finished job of the type (its engine plans
through hash indexes only, and sorts in memory), on the event loop, at every request. So it is
kept here instead: the lifecycle tells of every job that finishes, or leaves ``finished`` (a
rerun), or is deleted (retention, DELETE); a type whose newest job went away is looked up again.

- Embedded store: the database is read once, lazily and in slices that let the loop run (one
  pass over the finished jobs); a type whose newest job went away is re-read the same way.
- MongoDB (``shared``): another server may finish jobs too, so a type is re-read by its indexed
  query (``jobtype, state, -ts_sto``, limit 1: one index probe) when it was last read more than
  ``REREAD`` seconds ago.

A request costs one read by id per type shown (the job's current fields), never a scan.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import time
from typing import Any

from p3s import slices, states
from p3s.lifecycle import Listener

REREAD = 5.0                 # seconds a type's newest finished job, read from MongoDB, is trusted
FIELDS = {"jobtype": 1, "state": 1, "output_dir": 1, "ts_sto": 1, "name": 1, "workflow": 1}
_EPOCH = _dt.datetime(1970, 1, 1)


def _later(a: Any, b: Any) -> bool:
    """Whether end time ``a`` is later than ``b`` (a missing time is the earliest)."""
    return (a or _EPOCH).replace(tzinfo=None) > (b or _EPOCH).replace(tzinfo=None)


class LatestFinished(Listener):
    """Per job type, the id and end time of its newest finished job."""

    def __init__(self, jobs: Any, shared: bool) -> None:
        self.jobs = jobs                                   # the jobs collection
        self.shared = shared
        self.newest: dict[str, tuple[Any, str]] = {}       # jobtype -> (ts_sto, uuid)
        self.read_at: dict[str, float] = {}                # jobtype -> monotonic time of its last read
        self.stale: set[str] = set()                       # types whose newest job went away
        self.seeded = False
        self._seeding: asyncio.Future | None = None

    # --- listener ------------------------------------------------------------------------------
    def job_moved(self, before: dict, after: dict) -> None:
        jobtype = after.get("jobtype") or before.get("jobtype") or ""
        if after.get("state") == states.FINISHED and before.get("state") != states.FINISHED:
            self._offer(jobtype, after.get("ts_sto"), after["_id"])
        elif before.get("state") == states.FINISHED and after.get("state") != states.FINISHED:
            self._forget(jobtype, after["_id"])

    def job_created(self, doc: dict) -> None:
        if doc.get("state") == states.FINISHED:         # imported as already finished
            self._offer(doc.get("jobtype") or "", doc.get("ts_sto"), doc["_id"])

    def job_removed(self, doc: dict) -> None:
        if doc.get("state") == states.FINISHED:
            self._forget(doc.get("jobtype") or "", doc["_id"])

    def _offer(self, jobtype: str, ts_sto: Any, uuid: str) -> None:
        if jobtype == "noop":
            return
        current = self.newest.get(jobtype)
        if current is None or not _later(current[0], ts_sto):
            self.newest[jobtype] = (ts_sto, uuid)

    def _forget(self, jobtype: str, uuid: str) -> None:
        current = self.newest.get(jobtype)
        if current is not None and current[1] == uuid:
            del self.newest[jobtype]
            self.stale.add(jobtype)

    # --- reading the database ------------------------------------------------------------------
    def _read_type(self, jobtype: str) -> None:
        """One indexed query: the type's newest finished job (MongoDB)."""
        found = list(self.jobs.find({"jobtype": jobtype, "state": states.FINISHED}, {"ts_sto": 1})
                     .sort("ts_sto", -1).limit(1))
        self.newest.pop(jobtype, None)
        if found:
            self._offer(jobtype, found[0].get("ts_sto"), found[0]["_id"])
        self.read_at[jobtype] = time.monotonic()
        self.stale.discard(jobtype)

    async def _scan(self, query: dict) -> None:
        """Offer every finished job matching ``query``, with a pause every slices.SCAN documents
        (embedded store: its lazy iteration, as p3s.slices.scan_ids)."""
        lazy = getattr(self.jobs, "_iter_documents", None)
        docs = lazy(query) if lazy is not None else self.jobs.find(query, {"jobtype": 1, "ts_sto": 1})
        for n, doc in enumerate(docs, 1):
            self._offer(doc.get("jobtype") or "", doc.get("ts_sto"), doc["_id"])
            if n % slices.SCAN == 0:
                await slices.pause()

    async def _seed(self) -> None:
        await self._scan({"state": states.FINISHED})
        self.seeded = True

    async def refresh(self, jobtypes: list[str]) -> None:
        """Bring the newest job of ``jobtypes`` up to date (see the module's docstring)."""
        if self.shared:
            now = time.monotonic()
            for jobtype in jobtypes:
                if jobtype in self.stale or now - self.read_at.get(jobtype, -REREAD) >= REREAD:
                    self._read_type(jobtype)
            return
        if not self.seeded:
            if self._seeding is None or self._seeding.done():    # first use, or a failed pass
                self._seeding = asyncio.ensure_future(self._seed())
            await asyncio.shield(self._seeding)
        for jobtype in sorted(self.stale & set(jobtypes)):
            self.stale.discard(jobtype)
            await self._scan({"jobtype": jobtype, "state": states.FINISHED})

    async def latest(self, jobtypes: list[str]) -> list[dict]:
        """The newest finished job (FIELDS) of each of ``jobtypes`` that has one, in that order."""
        found: dict[str, dict] = {}
        pending = list(jobtypes)
        for _ in range(2):          # a job deleted or rerun meanwhile is looked up again once
            await self.refresh(pending)
            gone = []
            for jobtype in pending:
                known = self.newest.get(jobtype)
                if known is None:
                    continue
                doc = self.jobs.find_one({"_id": known[1]}, FIELDS)
                if doc is None or doc.get("state") != states.FINISHED:
                    self._forget(jobtype, known[1])
                    gone.append(jobtype)
                else:
                    found[jobtype] = doc
            if not gone:
                break
            pending = gone
        return [found[t] for t in jobtypes if t in found]
