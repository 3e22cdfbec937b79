"""What clients do with jobs: submit, list, adjust, kill, delete; and the per-jobtype limits."""
from __future__ import annotations

import time
import uuid as _uuid
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from p3s import events, models, schema, slices, states
from p3s.broker import Broker
from p3s.config import Config
from p3s.errors import ApiError, invalid, not_found
from p3s.fastpath import ByIdCollection
from p3s.lifecycle import RETRY_RESET, Lifecycle
from p3s.models import utcnow
from p3s.pilots import PilotService
from p3s.states import IllegalTransition

MAX_JOBS_PER_REQUEST = 10000
FIELDS_ONLY_BEFORE_DISPATCH = frozenset({states.TEMPLATE, states.DEFINED})
_last_seq = 0


def next_seq() -> int:
    """FIFO order within a priority: microseconds since the epoch (exact in JSON), strictly increasing."""
    global _last_seq
    _last_seq = max(time.time_ns() // 1000, _last_seq + 1)
    return _last_seq


class JobService:
    def __init__(self, lifecycle: Lifecycle, broker: Broker, pilots: PilotService, config: Config) -> None:
        self.lifecycle, self.broker, self.pilots, self.config = lifecycle, broker, pilots, config
        self.collection = ByIdCollection(models.Job._get_collection())
        self.freshness: Any = None           # p3s.freshness.Freshness, set by the server

    async def create(self, body: Any, user: str) -> list[dict]:
        """Create one job (an object) or several (a list): all of them, or none. Done in slices
        that let the event loop run (see p3s.slices)."""
        items = body if isinstance(body, list) else [body]
        if not items:
            raise invalid("body", "the list of jobs is empty")
        if len(items) > MAX_JOBS_PER_REQUEST:
            raise ApiError(413, f"at most {MAX_JOBS_PER_REQUEST} jobs per request, got {len(items)}")
        docs = []
        for i, item in enumerate(items):
            clean = schema.JOB_CREATE.validate(item, f"[{i}]" if isinstance(body, list) else "")
            docs.append(self.new_job(clean, user))
            if i % slices.SLICE == slices.SLICE - 1:
                await slices.pause()
        ids = [d["_id"] for d in docs]
        if len(set(ids)) != len(ids):
            raise invalid("uuid", "the same uuid is given to two jobs")
        for chunk in slices.chunks(ids):
            taken = self.collection.find_one({"_id": {"$in": list(chunk)}}, {"_id": 1})
            if taken:
                raise ApiError(409, f"job {taken['_id']} exists already", "uuid")
        shed = self.freshness.admit(docs) if self.freshness is not None else []
        try:
            await self.lifecycle.insert_jobs_in_slices(docs)
        except DuplicateKeyError:      # taken by another server since the check above
            raise ApiError(409, "a job with one of these uuids exists already", "uuid") from None
        if shed:
            self.freshness.record_shed(shed)
        return docs

    def new_job(self, clean: dict, user: str, **fields: Any) -> dict:
        """A complete job document from validated fields (JOB_CREATE) and workflow ``fields``."""
        clean = dict(clean)
        doc = {
            "_id": clean.pop("uuid", None) or str(_uuid.uuid4()),
            **clean,
            "timelimit": clean.get("timelimit") or self.config.default_timelimit,
            "user": clean.get("user") or user,
            "owner": user,
            "input_file": clean.get("input_file") or clean["env"].get("P3S_INPUT_FILE", ""),
            "seq": next_seq(), "workflow": None, "vertex": None, "noop": False, "children": [], "n_parents": 0,
            "n_parents_done": 0, "attempts": 0, "pilot": None, "host": None, "pilot_site": None, "pid": None,
            "exit_code": None, "error": None, "kill_requested": False, "ts_def": utcnow(), "ts_dis": None,
            "ts_sta": None, "ts_sto": None, "usage": {}, "usage_series": [], "stdout_tail": None,
            "stderr_tail": None, **fields,
        }
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
