"""The one place where jobs and pilots change state.

Every change is one conditional atomic write: the filter holds the document's id and the states
the transition table (``p3s.states``) allows to precede the target, so a change that is not
allowed, or that lost a race, matches nothing and writes nothing. The pre-image the write returns
keeps the counters exact and tells the listeners (broker, reaper, live pages) what moved.
"""
from __future__ import annotations

import collections
import logging
from typing import Any, Iterable

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from p3s import creations, fastinsert, faults, models, slices, states
from p3s.errors import ApiError, not_found
from p3s.fastpath import ByIdCollection
from p3s.models import utcnow
from p3s.states import IllegalTransition

log = logging.getLogger("p3s.lifecycle")

# Fields of a job the listeners need to know about (broker queue, limits, deadlines).
JOB_BRIEF = {"state": 1, "jobtype": 1, "priority": 1, "seq": 1, "site": 1, "timelimit": 1,
             "pilot": 1, "workflow": 1, "attempts": 1, "max_attempts": 1, "ts_def": 1, "ts_dis": 1, "ts_sta": 1,
             "host": 1, "noop": 1, "children": 1, "vertex": 1, "name": 1, "arrived": 1, "deadline": 1, "dropped": 1}
PILOT_BRIEF = {"state": 1, "site": 1, "host": 1, "job": 1}

# What a retry resets, so that the job looks as it did when it was first defined.
RETRY_RESET = {"pilot": None, "host": None, "pilot_site": None, "pid": None, "exit_code": None,
               "ts_dis": None, "ts_sta": None, "ts_sto": None, "kill_requested": False}


def build_update(set_: dict | None = None, **operators: dict | None) -> dict:
    """An update document, refusing two operators on one path (MongoDB rejects it with code 40)."""
    update: dict[str, dict] = {}
    seen: list[str] = []
    for op, fields in (("$set", set_), *((f"${k}", v) for k, v in operators.items())):
        if not fields:
            continue
        for path in fields:
            for other in seen:
                if path == other or path.startswith(other + ".") or other.startswith(path + "."):
                    raise ValueError(f"update touches {path!r} twice ({op} and another operator)")
            seen.append(path)
        update[op] = dict(fields)
    return update


# Filters of the writes by id. The embedded engine plans an equality or ``$in`` through a hash
# index by collecting every matching document before intersecting with the id: a condition like
# state ∈ {defined} or pilot == P would cost as many documents as are defined, or as the pilot
# ever ran. Written as ``$nin`` of the other states and as a one-value range, the conditions mean
# the same on every engine and leave the plan to the ``_id`` index.
def state_in(allowed: Iterable[str], universe: Iterable[str]) -> dict:
    """A filter condition: the state is one of ``allowed`` (states are always from ``universe``)."""
    return {"$nin": sorted(set(universe) - set(allowed))}


def equals(value: Any) -> dict:
    """A filter condition: the field equals ``value`` (see above for why it is a range)."""
    return {"$gte": value, "$lte": value}


def job_filter(uuid: str, allowed: Iterable[str], **fields: Any) -> dict:
    """Filter for one job by id, in one of the ``allowed`` states, with the given field values."""
    return {"_id": uuid, "state": state_in(allowed, states.JOB_STATES), **{k: equals(v) for k, v in fields.items()}}


def pilot_filter(uuid: str, allowed: Iterable[str]) -> dict:
    return {"_id": uuid, "state": state_in(allowed, states.PILOT_STATES)}


def will_retry(job: dict) -> bool:
    """Whether a job that has just ended this way goes back to ``defined`` for another attempt."""
    return job["state"] in states.JOB_RETRYABLE and (job.get("attempts") or 0) < (job.get("max_attempts") or 1)


class Listener:
    """Told of every change the lifecycle writes; subclasses override what they care about."""

    def job_moved(self, before: dict, after: dict) -> None:
        """A job changed state (or fields, see change_job)."""

    def job_created(self, doc: dict) -> None:
        """A job was inserted."""

    def job_removed(self, doc: dict) -> None:
        """A job was deleted."""

    def pilot_moved(self, before: dict, after: dict) -> None:
        """A pilot was registered or changed state."""

    def workflow_moved(self, after: dict) -> None:
        """A workflow changed state or was created."""


class Counters:
    """Jobs by (state, jobtype) and pilots by (state, site), kept in memory from every change."""

    def __init__(self) -> None:
        self.jobs: collections.Counter[tuple[str, str]] = collections.Counter()
        self.pilots: collections.Counter[tuple[str, str]] = collections.Counter()

    def load(self) -> None:
        """Count the database once (at start, and now and then when another server may write)."""
        jobs: collections.Counter = collections.Counter()
        for row in models.Job._get_collection().aggregate(
                [{"$group": {"_id": {"s": "$state", "t": "$jobtype"}, "n": {"$sum": 1}}}]):
            jobs[(row["_id"]["s"], row["_id"].get("t") or "")] = row["n"]
        pilots: collections.Counter = collections.Counter()
        for row in models.Pilot._get_collection().aggregate(
                [{"$group": {"_id": {"s": "$state", "t": "$site"}, "n": {"$sum": 1}}}]):
            pilots[(row["_id"]["s"], row["_id"].get("t") or "")] = row["n"]
        self.jobs, self.pilots = jobs, pilots

    def active(self, jobtype: str) -> int:
        """Jobs of ``jobtype`` dispatched or running: what a jobtype limit counts."""
        return self.jobs[(states.DISPATCHED, jobtype)] + self.jobs[(states.RUNNING, jobtype)]

    def summary(self) -> dict[str, Any]:
        jobs = {s: 0 for s in states.JOB_STATES}
        by_type: dict[str, dict[str, int]] = {}
        for (state, jobtype), n in self.jobs.items():
            if n:
                jobs[state] = jobs.get(state, 0) + n
                by_type.setdefault(jobtype, {})[state] = n
        pilots = {s: 0 for s in states.PILOT_STATES}
        by_site: dict[str, dict[str, int]] = {}
        for (state, site), n in self.pilots.items():
            if n:
                pilots[state] = pilots.get(state, 0) + n
                by_site.setdefault(site, {})[state] = n
        return {"jobs": jobs, "jobs_total": sum(jobs.values()), "jobs_by_type": by_type,
                "pilots": pilots, "pilots_total": sum(pilots.values()), "pilots_by_site": by_site}


class Lifecycle:
    """Writes state changes, keeps the counters, and tells the listeners."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.listeners: list[Listener] = []
        self.jobs = ByIdCollection(models.Job._get_collection())
        self.pilots = ByIdCollection(models.Pilot._get_collection())

    # --- jobs ---------------------------------------------------------------------------------
    def move_job(self, uuid: str, target: str, *, sources: Iterable[str] | None = None,
                 set_: dict | None = None, inc: dict | None = None, push: dict | None = None,
                 max_: dict | None = None, where: dict | None = None, full: bool = False,
                 via: dict | None = None) -> dict:
        """Move job ``uuid`` to ``target`` in one conditional write; return the document after.

        ``sources`` narrows the table's allowed predecessors; ``where`` adds conditions.
        With ``full`` the whole document is returned, else the fields in JOB_BRIEF.
        ``via`` (a state and its fields) is a state the job passes through in the same write (an
        unsuccessful end retried at once): the table must allow both moves, and the counters and
        listeners see both.
        Raises IllegalTransition (the job is in another state) or ApiError 404.
        """
        allowed = states.job_sources(target)
        if via is not None:
            if via["state"] not in allowed:
                raise IllegalTransition("job", uuid, via["state"], target)
            allowed = states.job_sources(via["state"])
        if sources is not None:
            allowed = allowed & frozenset(sources)
        query = {**job_filter(uuid, allowed), **(where or {})}
        changes = {"state": target, **(set_ or {})}
        update = build_update(changes, inc=inc, push=push, max=max_)
        if full and len(allowed) == 1 and via is None:
            # One predecessor: the state before is known, so one call can return the whole job.
            after = self.jobs.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
            if after is None:
                raise self._refusal("job", self.jobs, uuid, target)
            before = {**after, "state": next(iter(allowed))}
            full = False
        else:
            before = self.jobs.find_one_and_update(query, update, projection=JOB_BRIEF,
                                                   return_document=ReturnDocument.BEFORE)
            if before is None:
                raise self._refusal("job", self.jobs, uuid, target if via is None else via["state"])
            after = {**before, **changes}
            for field, amount in (inc or {}).items():
                after[field] = (before.get(field) or 0) + amount
        moves = [(before, after)]
        if via is not None:
            passing = {**before, **via}
            moves = [(before, passing), (passing, after)]
        for old, new in moves:
            self.counters.jobs[(old["state"], before.get("jobtype", ""))] -= 1
            self.counters.jobs[(new["state"], before.get("jobtype", ""))] += 1
            for listener in self.listeners:
                listener.job_moved(old, new)
        if full:
            return self.jobs.find_one({"_id": uuid}) or after
        return after

    def change_job(self, uuid: str, set_: dict, in_states: Iterable[str]) -> dict:
        """Change fields (not the state) of a job in one of ``in_states``; return it after."""
        query = job_filter(uuid, in_states)
        after = self.jobs.find_one_and_update(query, build_update(set_), return_document=ReturnDocument.AFTER)
        if after is None:
            current = self.jobs.find_one({"_id": uuid}, {"state": 1})
            if current is None:
                raise not_found("job", uuid)
            raise IllegalTransition("job", uuid, current["state"], f"changed while {current['state']}")
        before = {**after, **{k: None for k in set_}}
        for listener in self.listeners:
            listener.job_moved(before, after)
        return after

    def end_job(self, uuid: str, target: str, *, sources: Iterable[str] | None = None,
                set_: dict | None = None, where: dict | None = None, **more: Any) -> dict:
        """Move a job to an end state; one that may be retried (``will_retry``) goes on to ``defined``
        in the same write, so that no kill -9 can leave it ended with attempts left."""
        ended = {"ts_sto": utcnow(), **(set_ or {})}
        if target in states.JOB_RETRYABLE:
            # The write checks that the attempts read here are still the job's (unless the caller's
            # own condition on them, a pilot's reported attempt, is checked instead).
            job = self.jobs.find_one({"_id": uuid}, {"attempts": 1, "max_attempts": 1})
            if job is not None and will_retry({**job, "state": target}):
                after = self.move_job(uuid, states.DEFINED, sources=sources, via={"state": target, **ended},
                                      set_={**ended, **RETRY_RESET},
                                      where={"attempts": equals(job.get("attempts") or 0), **(where or {})},
                                      **more)
                faults.crash_point("job_ended")
                from p3s import events
                events.record("job.retry", f"job {uuid} ended {target}; retrying "
                              f"(attempt {after.get('attempts', 0) + 1} of {after.get('max_attempts')})",
                              job=uuid, severity="warning")
                return after
        after = self.move_job(uuid, target, sources=sources, set_=ended, where=where, **more)
        faults.crash_point("job_ended")
        return after

    def release_job(self, uuid: str, pilot: str, why: str, *, sources: Iterable[str] = states.JOB_ACTIVE,
                    where: dict | None = None) -> dict | None:
        """Give a job its pilot does not (or will not) run back to ``defined``, its attempt uncounted.

        One conditional write: only while the job is in ``sources`` and still owned by ``pilot``.
        Returns the job after, or None when it had moved on (nothing written).
        """
        try:
            after = self.move_job(uuid, states.DEFINED, sources=sources,
                                  where={"pilot": equals(pilot), **(where or {})},
                                  set_=dict(RETRY_RESET), inc={"attempts": -1})
        except (IllegalTransition, ApiError):
            return None
        from p3s import events
        events.record("job.released", f"job {uuid} given back to the queue ({why}); no attempt counted",
                      job=uuid, pilot=pilot, severity="warning")
        return after

    def insert_jobs(self, docs: list[dict]) -> None:
        """Insert new jobs all together; on any error none remains."""
        try:
            self.jobs.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            # Ordered: exactly the first nInserted went in. A uuid another server took between the
            # check and the insert stops it there; that server's job is not touched.
            self.remove_inserted(docs[:exc.details.get("nInserted", len(docs))])
            if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
                raise DuplicateKeyError("a job with one of these uuids exists already") from None
            raise
        except Exception:
            self.remove_inserted(docs)
            raise
        for doc in docs:
            self.counters.jobs[(doc["state"], doc["jobtype"])] += 1
            for listener in self.listeners:
                listener.job_created(doc)

    async def insert_jobs_in_slices(self, docs: list[dict], rows: list | None = None) -> None:
        """``insert_jobs`` for many jobs, in slices that let the loop run. Nobody hears of the jobs
        (the broker cannot offer them) until all are in; on any error those inserted are removed.
        ``rows``: the embedded store's rows of each slice of PREPARED_SLICE jobs (p3s.jobs.prepared)."""
        inserted: list[dict] = []
        size = slices.INSERT_SLICE if rows is None else slices.PREPARED_SLICE
        token = creations.begin(docs) if len(docs) > size else None    # a kill -9 meanwhile: undone at start
        try:
            for n, chunk in enumerate(slices.chunks(docs, size)):
                try:
                    if rows is None or fastinsert.write(fastinsert.store_of(self.jobs.collection), *rows[n]) is None:
                        self.jobs.insert_many(list(chunk), ordered=True)
                except BulkWriteError as exc:
                    # Ordered: exactly the first nInserted went in; a uuid another server took
                    # between the check and the insert stops it there (that job is not touched).
                    inserted += chunk[:exc.details.get("nInserted", len(chunk))]
                    if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
                        raise DuplicateKeyError("a job with one of these uuids exists already") from None
                    raise
                inserted += chunk
                faults.crash_point("create_slice")
                await slices.pause()
        except BaseException:
            for part in slices.chunks(inserted):
                self.remove_inserted(list(part))
            if token is not None:
                creations.end(token)
            raise
        if token is not None:
            creations.end(token)
        for chunk in slices.chunks(docs, slices.PREPARED_SLICE):     # ~0.01 ms each
            for doc in chunk:
                self.counters.jobs[(doc["state"], doc["jobtype"])] += 1
                for listener in self.listeners:
                    listener.job_created(doc)
            await slices.pause()
        slices.finished(len(docs))

    async def delete_jobs_in_slices(self, query: dict) -> list[str]:
        """``delete_jobs`` for any number of jobs: O(n), in slices that let the loop run. Each slice
        deletes only jobs that still match ``query`` and are still not dispatched or running."""
        ids = await slices.scan_ids(models.Job._get_collection(),
                                    {"$and": [query, {"state": {"$nin": sorted(states.JOB_ACTIVE)}}]})
        deleted: list[str] = []
        for chunk in slices.chunks(ids, slices.DELETE_SLICE):
            deleted += self.delete_jobs(slices.among(chunk, query))
            await slices.pause()
        slices.finished(len(ids))
        return deleted
    def remove_inserted(self, docs: list[dict]) -> None:
        """Delete the jobs this request inserted (``docs``), and nothing another request inserted
        under the same uuid: a job is ours only if its ``seq`` is one of ours too."""
        if docs:
            self.jobs.delete_many({"_id": {"$in": [d["_id"] for d in docs]},
                                   "seq": {"$in": sorted({d["seq"] for d in docs})}})

    def delete_jobs(self, query: dict) -> list[str]:
        """Delete the jobs matching ``query`` that are not dispatched or running; return their ids."""
        query = dict(query)
        by_id = query.pop("_id", None)      # kept at the top, where the engine plans it by the id index
        query = {"$and": [query, {"state": {"$nin": sorted(states.JOB_ACTIVE)}}]}
        if by_id is not None:
            query["_id"] = by_id
        doomed = list(self.jobs.find(query, JOB_BRIEF))
        if not doomed:
            return []
        ids = [d["_id"] for d in doomed]
        result = self.jobs.delete_many({"_id": {"$in": ids}, "state": {"$nin": sorted(states.JOB_ACTIVE)}})
        if getattr(result, "deleted_count", len(ids)) != len(ids):
            # Dispatched meanwhile (another server, or a claim while this waited on MongoDB): kept.
            kept = {d["_id"] for d in self.jobs.find({"_id": {"$in": ids}}, {"_id": 1})}
            doomed = [d for d in doomed if d["_id"] not in kept]
            ids = [d["_id"] for d in doomed]
        for doc in doomed:
            self.counters.jobs[(doc["state"], doc.get("jobtype", ""))] -= 1
            for listener in self.listeners:
                listener.job_removed(doc)
        return ids

    # --- pilots -------------------------------------------------------------------------------
    def move_pilot(self, uuid: str, target: str, *, set_: dict | None = None, inc: dict | None = None,
                   where: dict | None = None, projection: dict | None = None) -> dict:
        """Move pilot ``uuid`` to ``target`` (or keep it there) in one conditional write."""
        query = {**pilot_filter(uuid, states.pilot_sources(target)), **(where or {})}
        changes = {"state": target, **(set_ or {})}
        proj = {**PILOT_BRIEF, **(projection or {})}
        before = self.pilots.find_one_and_update(query, build_update(changes, inc=inc), projection=proj,
                                                 return_document=ReturnDocument.BEFORE)
        if before is None:
            raise self._refusal("pilot", self.pilots, uuid, target)
        after = {**before, **changes}
        if before["state"] != target:
            self.counters.pilots[(before["state"], before.get("site", ""))] -= 1
            self.counters.pilots[(target, before.get("site", ""))] += 1
        for listener in self.listeners:
            listener.pilot_moved(before, after)
        return after

    def insert_pilot(self, doc: dict) -> None:
        self.pilots.insert_one(doc)
        self.counters.pilots[(doc["state"], doc["site"])] += 1
        for listener in self.listeners:
            listener.pilot_moved({**doc, "state": None}, doc)

    async def delete_pilots_in_slices(self, query: dict, each: Any = None) -> list[str]:
        """``delete_pilots`` for any number of pilots, in slices that let the loop run; ``each`` is
        called with the uuids each slice deleted."""
        ids = await slices.scan_ids(models.Pilot._get_collection(),
                                    {"$and": [query, {"state": {"$nin": sorted(states.PILOT_ALIVE)}}]})
        deleted: list[str] = []
        for chunk in slices.chunks(ids, slices.DELETE_SLICE):
            gone = self.delete_pilots(slices.among(chunk, query))
            if each is not None:
                each(gone)
            deleted += gone
            await slices.pause()
        slices.finished(len(ids))
        return deleted

    def delete_pilots(self, query: dict) -> list[str]:
        """Delete pilots matching ``query`` that are stopped or lost."""
        query = dict(query)
        by_id = query.pop("_id", None)      # kept at the top, where the engine plans it by the id index
        query = {"$and": [query, {"state": {"$nin": sorted(states.PILOT_ALIVE)}}]}
        if by_id is not None:
            query["_id"] = by_id
        doomed = list(self.pilots.find(query, PILOT_BRIEF))
        ids = [d["_id"] for d in doomed]
        if ids:
            self.pilots.delete_many({"_id": {"$in": ids}, "state": {"$nin": sorted(states.PILOT_ALIVE)}})
        for doc in doomed:
            self.counters.pilots[(doc["state"], doc.get("site", ""))] -= 1
        return ids

    @staticmethod
    def _refusal(kind: str, collection: Any, uuid: str, target: str) -> Exception:
        current = collection.find_one({"_id": uuid}, {"state": 1})
        if current is None:
            return not_found(kind, uuid)
        return IllegalTransition(kind, uuid, current["state"], target)
