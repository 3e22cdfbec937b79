"""What clients do with jobs: submit, list, adjust, kill, delete; and the per-jobtype limits."""
from __future__ import annotations

import time
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from p3s import events, fastinsert, freshness, models, offloop, schema, slices, states
from p3s.broker import Broker
from p3s.config import Config
from p3s.errors import ApiError, invalid, not_found
from p3s.fastpath import ByIdCollection
from p3s.lifecycle import RETRY_RESET, Lifecycle
from p3s.models import utcnow
from p3s.pilot import ids as jobids
from p3s.pilots import PilotService
from p3s.states import IllegalTransition

MAX_JOBS_PER_REQUEST = 10000
OFF_LOOP_JOBS = 20         # a request of this many jobs or more is validated and built off the loop
FIELDS_ONLY_BEFORE_DISPATCH = frozenset({states.TEMPLATE, states.DEFINED})
_last_seq = 0


def next_seq() -> int:
    """FIFO order within a priority: microseconds since the epoch (exact in JSON), strictly increasing."""
    return reserve_seqs(1)


def reserve_seqs(count: int) -> int:
    """The first of ``count`` consecutive new seq values, the others kept for its caller (on the
    loop: the documents are then built off it, with these)."""
    global _last_seq
    first = max(time.time_ns() // 1000, _last_seq + 1)
    _last_seq = first + count - 1
    return first


def validated(items: list, listed: bool) -> tuple[list[dict], set[str], list[str]]:
    """The cleaned items (JOB_CREATE), their job types and the uuids the client gave; 422 naming
    the first bad item by its index in a list (pure: runs off the loop)."""
    cleans, given = [], []
    validate = schema.JOB_CREATE.validate
    for i, item in enumerate(offloop.yielding(items)):
        clean = validate(item, f"[{i}]" if listed else "")
        cleans.append(clean)
        if clean.get("uuid"):
            given.append(clean["uuid"])
    if len(set(given)) != len(given):
        raise invalid("uuid", "the same uuid is given to two jobs")
    return cleans, {clean["jobtype"] for clean in cleans}, given


def job_document(clean: dict, user: str, timelimit: int, seq: int, fields: dict | None = None) -> dict:
    """A complete job document (without the freshness fields) from validated fields (pure)."""
    clean = dict(clean)
    return {
        "_id": clean.pop("uuid", None) or jobids.new(),
        **clean,
        "timelimit": clean.get("timelimit") or timelimit,
        "user": clean.get("user") or user,
        "owner": user,
        "input_file": clean.get("input_file") or clean["env"].get("P3S_INPUT_FILE", ""),
        "seq": seq, "workflow": None, "vertex": None, "noop": False, "children": [], "n_parents": 0,
        "n_parents_done": 0, "attempts": 0, "pilot": None, "host": None, "pilot_site": None, "pid": None,
        "exit_code": None, "error": None, "kill_requested": False, "ts_def": utcnow(), "ts_dis": None,
        "ts_sta": None, "ts_sto": None, "usage": {}, "usage_series": [], "stdout_tail": None,
        "stderr_tail": None, **(fields or {}),
    }


def built(cleans: list[dict], user: str, timelimit: int, first_seq: int, etas: dict | None,
          layout: fastinsert.Layout | None) -> tuple[list[dict], list | None]:
    """The job documents of ``cleans`` (seq from ``first_seq`` on, stamped with their type's ETA
    from ``etas`` unless None) and, given the embedded store's ``layout``, their rows by insert
    slice (pure: runs off the loop)."""
    docs = []
    for n, clean in enumerate(offloop.yielding(cleans)):
        doc = job_document(clean, user, timelimit, first_seq + n)
        docs.append(doc if etas is None else freshness.stamped(doc, etas[doc["jobtype"]]))
    return docs, None if layout is None else prepared(layout, docs)


def prepared(layout: fastinsert.Layout, docs: list[dict]) -> list:
    """The rows of ``docs`` by insert slice (pure): (layout, rows or None: the engine's own way)."""
    return [(layout, fastinsert.prepare(layout, offloop.yielding(chunk)))
            for chunk in slices.chunks(docs, slices.PREPARED_SLICE)]


class JobService:
    def __init__(self, lifecycle: Lifecycle, broker: Broker, pilots: PilotService, config: Config) -> None:
        self.lifecycle, self.broker, self.pilots, self.config = lifecycle, broker, pilots, config
        self.collection = ByIdCollection(models.Job._get_collection())
        self.freshness: Any = None           # p3s.freshness.Freshness, set by the server

    async def create(self, body: Any, user: str) -> list[dict]:
        """Create one job (an object) or several (a list): all of them, or none.

        The event loop keeps only what needs it: the database calls and the in-memory queues.
        Validating the items, building the documents and (on the embedded store) their rows run
        off the loop (p3s.offloop); the rows are then written in slices that let the loop run."""
        items = body if isinstance(body, list) else [body]
        if not items:
            raise invalid("body", "the list of jobs is empty")
        if len(items) > MAX_JOBS_PER_REQUEST:
            raise ApiError(413, f"at most {MAX_JOBS_PER_REQUEST} jobs per request, got {len(items)}")
        small = len(items) < OFF_LOOP_JOBS
        cleans, jobtypes, given = await offloop.run(validated, items, isinstance(body, list), inline=small)
        policies = {t: self.freshness.policy(t) for t in jobtypes} if self.freshness is not None else {}
        etas = {t: policy.eta for t, policy in policies.items()}
        layout = fastinsert.layout(self.lifecycle.jobs.collection)
        docs, rows = await offloop.run(built, cleans, user, self.config.default_timelimit, reserve_seqs(len(cleans)),
                                       etas if self.freshness is not None else None, layout, inline=small)
        for chunk in slices.chunks(given, 500):
            taken = self.collection.find_one({"_id": {"$in": list(chunk)}}, {"_id": 1})
            if taken:
                raise ApiError(409, f"job {taken['_id']} exists already", "uuid")
        shed = []
        if any(policy.shed for policy in policies.values()):
            shed = self.freshness.admit(docs)
            if shed and layout is not None:          # their state changed: their rows too
                rows = await offloop.run(prepared, layout, docs, inline=small)
        try:
            await self.lifecycle.insert_jobs_in_slices(docs, rows)
        except DuplicateKeyError:      # taken by another server since the check above
            raise ApiError(409, "a job with one of these uuids exists already", "uuid") from None
        if shed:
            self.freshness.record_shed(shed)
        return docs

    def new_job(self, clean: dict, user: str, **fields: Any) -> dict:
        """A complete job document from validated fields (JOB_CREATE) and workflow ``fields``."""
        doc = job_document(clean, user, self.config.default_timelimit, next_seq(), fields)
        return doc if self.freshness is None else self.freshness.stamp(doc)

    def get(self, uuid: str) -> dict:
        doc = self.collection.find_one({"_id": uuid})
        if doc is None:
            raise not_found("job", uuid)
        return doc

    def patch(self, uuid: str, changes: dict) -> dict:
        """Adjust a job; a state change and the other fields are one write, or nothing."""
        fields = {k: v for k, v in changes.items() if k != "state"}
        target = changes.get("state")
        if target is None:
            try:
                return self.lifecycle.change_job(uuid, fields, FIELDS_ONLY_BEFORE_DISPATCH)
            except IllegalTransition as exc:
                raise ApiError(409, f"job {uuid} is {exc.current}; {', '.join(fields)} can only change "
                                    "before it is dispatched") from None
        sources = None
        if target == states.DEFINED:
            current = self.get(uuid)["state"]
            if current != states.TEMPLATE:       # a rerun of an ended job: it starts afresh
                fields = {**RETRY_RESET, "error": None, "attempts": 0, **fields}
                if current == states.STALE:      # an operator wants it run, late or not
                    fields.update(deadline=None, dropped=None)
            sources = {current} & states.JOB_RERUN_SOURCES
        elif fields:
            sources = FIELDS_ONLY_BEFORE_DISPATCH
        return self.lifecycle.move_job(uuid, target, sources=sources, set_=fields, full=True)

    def kill(self, uuid: str) -> dict:
        """Cancel a job that has not been dispatched; ask the pilot to stop one that has."""
        job = self.get(uuid)
        if job["state"] in FIELDS_ONLY_BEFORE_DISPATCH:
            return self.lifecycle.move_job(uuid, states.CANCELLED, sources={job["state"]},
                                           set_={"ts_sto": utcnow(), "error": "cancelled on request"}, full=True)
        if job["state"] in states.JOB_ACTIVE:
            self.lifecycle.change_job(uuid, {"kill_requested": True}, states.JOB_ACTIVE)
            self.pilots.kill_job(job)
            events.record("job.kill", f"stop requested for job {uuid} on pilot {job['pilot']}",
                          job=uuid, pilot=job["pilot"])
            return self.get(uuid)
        raise ApiError(409, f"job {uuid} is {job['state']}; there is nothing to kill")

    def delete(self, query: dict) -> list[str]:
        return self.lifecycle.delete_jobs(query)

    async def delete_matching(self, query: dict) -> list[str]:
        """Delete any number of jobs matching ``query`` (not dispatched or running), in slices."""
        return await self.lifecycle.delete_jobs_in_slices(query)

    # --- job types ----------------------------------------------------------------------------
    def jobtypes(self) -> list[dict]:
        stored = {d["_id"]: d for d in models.JobType._get_collection().find()}
        names = set(stored) | {t for (_s, t), n in self.lifecycle.counters.jobs.items() if n}
        return [self.jobtype(name, stored.get(name)) for name in sorted(names)]

    def jobtype(self, name: str, stored: dict | None = None) -> dict:
        """A job type's limit and counts; 404 for a type with neither settings nor jobs."""
        counters = self.lifecycle.counters
        if stored is None:
            stored = models.JobType._get_collection().find_one({"_id": name}) or {}
            if not stored and not any(n for (_s, t), n in counters.jobs.items() if t == name):
                raise not_found("job type", name)
        out = {"name": name, "limit": stored.get("limit"), "comment": stored.get("comment", ""),
               "active": counters.active(name), "defined": counters.jobs[(states.DEFINED, name)]}
        if self.freshness is not None:
            out.update(self.freshness.describe(name))
        return out

    def set_jobtype(self, name: str, body: dict, replace: bool = True) -> dict:
        """Set a job type's settings: all of them (PUT: what is not given is unset) or those given."""
        collection = models.JobType._get_collection()
        after = collection.find_one_and_update({"_id": name}, {"$set": body}, upsert=True,
                                               return_document=ReturnDocument.AFTER)
        self.broker.limits[name] = after.get("limit")
        if self.broker.slots is not None and after.get("limit") is not None:
            self.broker.slots.seed(name)
        if self.freshness is not None:
            self.freshness.set_stored(name, after)
        self.broker.schedule_serve()
        changed = ", ".join(f"{k} {'none' if v is None else v}" for k, v in body.items() if k != "comment")
        events.record("jobtype.settings", f"job type {name}: {changed}")
        return self.jobtype(name)

    def delete_jobtype(self, name: str) -> None:
        if models.JobType._get_collection().delete_one({"_id": name}).deleted_count == 0:
            raise not_found("job type", name)
        self.broker.limits.pop(name, None)
        if self.freshness is not None:
            self.freshness.set_stored(name, None)
        self.broker.schedule_serve()
