"""Running jobs' resource usage kept in memory and written to the jobs in batches.

A heartbeat of a job's pilot carries a usage sample (CPU, RSS, processes…). Writing it to the job
at once was one database write per heartbeat that nothing needs at once: the reaper judges pilots
by their contacts (``p3s.contacts``) and jobs by their start and time limit, never by usage. So a
heartbeat only adds its sample here, and the job gets all of them in one write (``$push`` with
``$each``/``$slice``, ``$set`` of the latest figures, ``$max`` of the peaks):

- every ``contact_write_period`` seconds, with the pilots' contacts (``flush``), and at shutdown;
- in the write that ends the job when its pilot reports the end (``take``: no extra write);
- right after any other change that takes the job from its pilot (the reaper, a release, another
  pilot's stop), from the lifecycle's listener (``job_moved``);
- before the API shows one job (``flush_job``); lists of jobs show the unwritten figures too
  (``current``), without a write.

Whether a heartbeat's job is its pilot's is known in memory (``holds``): this server's own writes
tell the listener which pilot holds which job; a job not known so is read once from the database.
A flush that finds a job no longer its pilot's (another server sharing the MongoDB ended or
released it) hands it back to the pilot service, which does what a heartbeat on such a job does.

kill -9 loses at most one period of samples; another server sharing the MongoDB shows a running
job's usage at most one period old.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable

from p3s import states
from p3s.lifecycle import Listener, build_update, job_filter

log = logging.getLogger("p3s.usage")


@dataclasses.dataclass
class Pending:
    """A job's samples and figures not yet written, from heartbeats of pilot ``pilot``."""

    pilot: str
    samples: list[dict] = dataclasses.field(default_factory=list)
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)   # ``$set`` paths: usage.<name>
    peak: float = 0
    body: dict = dataclasses.field(default_factory=dict)              # the last heartbeat (for a refusal)


class UsageBuffer(Listener):
    """Heartbeats' usage samples of running jobs, by job, until they are written."""

    def __init__(self, jobs: Any, points: int, refused: Callable[[str, dict], None]) -> None:
        self.jobs, self.points, self.refused = jobs, points, refused
        self.pending: dict[str, Pending] = {}
        self.holding: dict[str, str] = {}        # pilot uuid -> the job it holds, by this server's writes
        self.writes = 0                          # usage writes of jobs (for tests and benches)

    # --- who holds what -----------------------------------------------------------------------
    def holds(self, pilot: str, job: str) -> bool:
        """Whether this server knows ``job`` as dispatched to or running on ``pilot``."""
        return self.holding.get(pilot) == job

    def hold(self, pilot: str, job: str) -> None:
        """``pilot`` holds ``job`` (read from the database)."""
        self.holding[pilot] = job

    def forget_pilot(self, pilot: str) -> None:
        """``pilot`` is no longer alive: nothing it holds is known any more."""
        self.holding.pop(pilot, None)

    def job_moved(self, before: dict, after: dict) -> None:
        job = after["_id"]
        owner = after.get("pilot") if after.get("state") in states.JOB_ACTIVE else None
        if owner:
            self.holding[owner] = job
        for pilot in (before.get("pilot"), after.get("pilot")):
            if pilot and pilot != owner and self.holding.get(pilot) == job:
                del self.holding[pilot]
        entry = self.pending.get(job)
        if entry is not None and entry.pilot != owner:
            # Taken from its pilot by the server (reaper, release, a stop): its samples go with it,
            # as they would have gone one by one.
            del self.pending[job]
            self.jobs.update_one({"_id": job}, self._update(entry))
            self.writes += 1

    def job_removed(self, doc: dict) -> None:
        self.pending.pop(doc["_id"], None)

    # --- samples ------------------------------------------------------------------------------
    def add(self, pilot: str, job: str, sample: dict, fields: dict, peak: float, body: dict) -> None:
        """One heartbeat's sample of ``job`` from its pilot (validated by the caller)."""
        entry = self.pending.get(job)
        if entry is None or entry.pilot != pilot:
            entry = self.pending[job] = Pending(pilot)
        entry.samples.append(sample)
        if self.points > 0 and len(entry.samples) > self.points:
            del entry.samples[:-self.points]
        entry.fields.update(fields)
        entry.peak = max(entry.peak, peak)
        entry.body = body

    def take(self, job: str, pilot: str) -> dict[str, dict]:
        """The unwritten usage of ``job`` as parts of the write that ends it: ``push``, ``set``
        (before the end report's own figures) and ``max``; empty when nothing is pending."""
        entry = self.pending.get(job)
        if entry is None or entry.pilot != pilot:
            return {}
        del self.pending[job]
        return {"push": self._push(entry), "set": entry.fields, "max": {"usage.peak_rss": entry.peak}}

    def current(self, doc: dict) -> dict:
        """``doc`` (a job as read) with the usage figures not yet written."""
        entry = self.pending.get(doc.get("_id", ""))
        if entry is None or not isinstance(doc.get("usage"), dict):
            return doc
        usage = {**doc["usage"], **{k[len("usage."):]: v for k, v in entry.fields.items()}}
        usage["peak_rss"] = max(usage.get("peak_rss") or 0, entry.peak)
        return {**doc, "usage": usage}

    # --- writes -------------------------------------------------------------------------------
    def _push(self, entry: Pending) -> dict:
        return {"usage_series": {"$each": entry.samples, "$slice": -self.points}}

    def _update(self, entry: Pending) -> dict:
        return build_update(entry.fields, push=self._push(entry), max={"usage.peak_rss": entry.peak})

    def flush(self, alive: Iterable[str] | None = None) -> int:
        """Write every job's pending usage (one conditional write each); returns how many.
        ``alive``: the live pilots' uuids (what else is held is forgotten)."""
        if alive is not None:
            live = set(alive)
            for pilot in [p for p in self.holding if p not in live]:
                del self.holding[pilot]
        if not self.pending:
            return 0
        pending, self.pending = list(self.pending.items()), {}
        for done, (job, entry) in enumerate(pending):
            try:
                self._write(job, entry)
            except Exception:
                for later, unwritten in pending[done:]:    # kept for the next flush (the database failed)
                    self._restore(later, unwritten)
                raise
        return len(pending)

    def flush_job(self, job: str) -> None:
        """Write ``job``'s pending usage now (before it is shown)."""
        entry = self.pending.pop(job, None)
        if entry is not None:
            try:
                self._write(job, entry)
            except Exception:
                self._restore(job, entry)
                raise

    def _restore(self, job: str, entry: Pending) -> None:
        newer = self.pending.get(job)
        if newer is not None and newer.pilot == entry.pilot:
            entry.samples.extend(newer.samples)
            entry.fields.update(newer.fields)
            entry.peak, entry.body = max(entry.peak, newer.peak), newer.body
        if newer is None or newer.pilot == entry.pilot:
            self.pending[job] = entry
            if self.points > 0:
                del entry.samples[:-self.points]

    def _write(self, job: str, entry: Pending, again: bool = True) -> None:
        update = self._update(entry)
        result = self.jobs.update_one(job_filter(job, states.JOB_ACTIVE, pilot=entry.pilot), update)
        self.writes += 1
        if result.matched_count:
            return
        if self.holding.get(entry.pilot) != job:
            # This server took the job from its pilot while the write was on its way (MongoDB: the
            # loop serves requests meanwhile), e.g. the pilot's end report: the samples go with the
            # job, as the listener's do, and the end was dealt with there.
            self.jobs.update_one({"_id": job}, update)
            self.writes += 1
            return
        # No longer the pilot's through another server sharing the database: what a heartbeat on
        # such a job does (adopt it, or tell the pilot to stop it).
        del self.holding[entry.pilot]
        self.refused(entry.pilot, entry.body)
        if again and self.holds(entry.pilot, job):       # adopted: it is the pilot's again
            self._write(job, entry, again=False)
