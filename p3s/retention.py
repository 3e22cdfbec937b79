"""Retention: old records are archived to files (``p3s.archive``), then removed, a slice at a time.

The policy (``retain_<kind>_days`` and ``retain_<kind>_max`` in the configuration) applies to what
can no longer change: ended jobs that are not part of a workflow, stopped or lost pilots, ended
workflows (with their jobs and data records, in one archive line), data records outside any
workflow, and events. A record goes when it ended more than ``days`` ago, or when its collection
holds more than ``max`` records (the oldest removable ones go first); 0 turns either rule off.

The server runs one slice every ``retention_period`` seconds on its event loop: it reads at most a
few times ``retention_slice`` records, archives and syncs the ones that go, and deletes them, so a
slice holds the loop for milliseconds whatever the size of the database. Nothing changes between
the archive write and the delete of a slice (both run in one loop callback), and the delete comes
only after the archive is on disk: a kill at any point loses nothing (at worst a record is
archived twice; a restore skips ``_id``\\ s already present).

Jobs and pilots are deleted through ``p3s.lifecycle`` so the counters stay exact; what was removed
is added to the kept totals (``p3s.kept``; shown as ``archived`` in the summary).
On the embedded store the slices walk the SQLite rows in insertion order (no query over the whole
collection); on MongoDB they are ordinary queries with a limit.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as _dt
import logging
import time
from typing import Any, Callable, Iterable

import bson
from pymongo import ReturnDocument

from p3s import archive, kept, models, states
from p3s.config import Config
from p3s.errors import ApiError
from p3s.fastpath import _is_embedded
from p3s.models import utcnow

log = logging.getLogger("p3s.retention")
SCAN_FACTOR = 4          # rows read per slice, in multiples of the slice size


def _first(*fields: str) -> Callable[[dict], _dt.datetime | None]:
    def moment(doc: dict) -> _dt.datetime | None:
        for field in fields:
            if doc.get(field):
                return doc[field]
        return None
    return moment


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of record retention handles."""

    name: str
    model: Any
    ended: Callable[[dict], _dt.datetime | None]      # when it ended (its age and archive day)
    removable: Callable[[dict], bool]                  # can it go at all (ended, not part of a workflow)
    query: dict                                        # the same, as a MongoDB filter
    age_fields: tuple[str, ...]


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("jobs", models.Job, _first("ts_sto", "ts_def"),
         lambda d: d.get("state") in states.JOB_ENDED and not d.get("workflow"),
         {"state": {"$in": sorted(states.JOB_ENDED)}, "workflow": None}, ("ts_sto", "ts_def")),
    Kind("pilots", models.Pilot, _first("ts_stop", "ts_lhb", "ts_reg"),
         lambda d: d.get("state") not in states.PILOT_ALIVE,
         {"state": {"$nin": sorted(states.PILOT_ALIVE)}}, ("ts_stop", "ts_lhb")),
    Kind("workflows", models.Workflow, _first("ts_sto", "ts_def"),
         lambda d: d.get("state") in states.WORKFLOW_ENDED,
         {"state": {"$in": sorted(states.WORKFLOW_ENDED)}}, ("ts_sto", "ts_def")),
    Kind("data", models.DataFile, _first("ts_upd", "ts_reg"),
         lambda d: not d.get("workflow"), {"workflow": None}, ("ts_upd", "ts_reg")),
    Kind("events", models.Event, _first("ts"), lambda d: True, {}, ("ts",)),
)}


@dataclasses.dataclass
class Rule:
    days: float = 0.0        # archive what ended more than this many days ago (0: no age limit)
    keep: int = 0            # keep at most this many records of the kind (0: no count limit)

    @property
    def active(self) -> bool:
        return self.days > 0 or self.keep > 0


def policy(config: Config) -> dict[str, Rule]:
    """The configured rule of each kind."""
    return {name: Rule(float(config[f"retain_{name}_days"]), int(config[f"retain_{name}_max"])) for name in KINDS}


class Retention:
    """Applies the policy in slices, runs operator purges, and restores from the archive."""

    def __init__(self, server: Any, config: Config) -> None:
        self.server = server
        self.config = config
        self.rules = policy(config)
        self.slice = max(1, int(config.retention_slice))
        self.archive = archive.Archive(config.data_path / "archive")
        self._positions: dict[tuple[str, str], Any] = collections.defaultdict(int)
        self.removed: collections.Counter[str] = collections.Counter()    # by this process
        self.last_slice: float | None = None
        self._busy = False
        self._totals: dict[str, Any] = {}

    # --- kept totals --------------------------------------------------------------------------
    def load(self) -> None:
        """Read the kept totals (at start, and on a shared database now and then)."""
        self._totals = kept.kept_collection().find_one({"_id": "archived"}) or {}

    def totals(self) -> dict[str, Any]:
        """What retention removed so far, all processes and restarts included (restores subtracted)."""
        doc = self._totals
        out: dict[str, Any] = {name: 0 for name in KINDS}
        out["jobs_by_state"] = {s: n for s, n in doc.get("jobs_by_state", {}).items() if n}
        for key in KINDS:
            out[key] = doc.get(key, 0)
        return out

    def _add_totals(self, kind: str, docs: Iterable[dict], sign: int = 1) -> None:
        inc: collections.Counter[str] = collections.Counter()
        for doc in docs:
            inc[kind] += sign
            if kind == "jobs":
                inc[f"jobs_by_state.{doc.get('state')}"] += sign
        if inc:
            self._totals = kept.kept_collection().find_one_and_update(
                {"_id": "archived"}, {"$inc": dict(inc)}, upsert=True, return_document=ReturnDocument.AFTER)

    # --- periodic slices ----------------------------------------------------------------------
    def tick(self) -> None:
        """One slice for each kind whose rule is active (run by a PeriodicCallback)."""
        if self._busy:
            return
        try:
            for name, rule in self.rules.items():
                if rule.active:
                    self.run_slice(name, rule)
            self.last_slice = time.time()
        except Exception:
            log.exception("retention slice failed")

    def run_slice(self, name: str, rule: Rule) -> tuple[int, int, bool]:
        """Archive and remove one slice of ``name`` under ``rule``: (removed, archived bytes, more to do)."""
        kind = KINDS[name]
        excess = max(0, self._count(kind) - rule.keep) if rule.keep else 0
        cutoff = utcnow() - _dt.timedelta(days=rule.days) if rule.days > 0 else None
        doomed, more = self._select(kind, cutoff, excess)
        if not doomed:
            return 0, 0, more
        written = self._archive_and_remove(kind, doomed)
        return len(doomed), written, more

    def _count(self, kind: Kind) -> int:
        """How many records of the kind the database holds (without a query over them)."""
        counters = self.server.lifecycle.counters
        if kind.name == "jobs":
            return sum(counters.jobs.values())
        if kind.name == "pilots":
            return sum(counters.pilots.values())
        collection = kind.model._get_collection()
        if _is_embedded(collection):
            return len(collection._store._documents)          # SELECT count(*)
        return collection.estimated_document_count()

    def _old(self, kind: Kind, doc: dict, cutoff: _dt.datetime | None) -> bool:
        if cutoff is None:
            return False
        ended = kind.ended(doc)
        restored = doc.get("ts_restored")
        if restored and (ended is None or restored > ended):
            ended = restored
        return ended is not None and ended < cutoff

    def _select(self, kind: Kind, cutoff: _dt.datetime | None, excess: int) -> tuple[list[dict], bool]:
        """Up to one slice of records to remove, oldest first; and whether more may remain."""
        collection = kind.model._get_collection()
        if _is_embedded(collection):
            return self._select_rows(kind, collection, cutoff, excess)
        doomed: dict[Any, dict] = {}
        if excess:
            # Oldest first: MongoDB returns unsorted documents in no promised order.
            oldest = [(kind.age_fields[0], 1), ("_id", 1)]
            for doc in collection.find(kind.query).sort(oldest).limit(min(excess, self.slice)):
                doomed[doc["_id"]] = doc
        if cutoff is not None and len(doomed) < self.slice:
            aged = {"$and": [kind.query, {"$or": [
                {kind.age_fields[0]: {"$lt": cutoff}},
                *({kind.age_fields[0]: None, f: {"$lt": cutoff}} for f in kind.age_fields[1:])]}]}
            for doc in collection.find(aged).limit(self.slice - len(doomed)):
                if doc["_id"] not in doomed and self._old(kind, doc, cutoff):
                    doomed[doc["_id"]] = doc
        return list(doomed.values()), len(doomed) >= self.slice

    def _select_rows(self, kind: Kind, collection: Any, cutoff: _dt.datetime | None,
                     excess: int) -> tuple[list[dict], bool]:
        """The embedded store: walk the rows in insertion order from where the last slice stopped."""
        store = collection._store
        codec = store._documents._codec_options
        doomed: list[dict] = []
        chosen: set = set()
        more = False
        # Two walks: one for the count rule (from the oldest row, while there is excess), one for age.
        for walk, wanted in (("keep", excess), ("age", self.slice if cutoff is not None else 0)):
            key = (kind.name, walk)
            if not wanted:
                self._positions[key] = 0
                continue
            budget = self.slice * SCAN_FACTOR
            while budget > 0 and len(doomed) < self.slice and wanted > 0:
                rows = store._connection.execute(
                    "SELECT rowid, doc FROM documents WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (self._positions[key], min(budget, 1000))).fetchall()
                if not rows:
                    self._positions[key] = 0          # end of a pass: start again from the oldest
                    break
                budget -= len(rows)
                for rowid, blob in rows:
                    self._positions[key] = rowid
                    doc = bson.decode(blob, codec_options=codec)
                    if not kind.removable(doc) or doc["_id"] in chosen:
                        continue
                    if walk == "keep" or self._old(kind, doc, cutoff):
                        doomed.append(doc)
                        chosen.add(doc["_id"])
                        wanted -= 1
                        if len(doomed) >= self.slice or wanted <= 0:
                            break
            more = more or budget <= 0 or len(doomed) >= self.slice
        return doomed, more

    # --- archive, then remove -----------------------------------------------------------------
    def _archive_and_remove(self, kind: Kind, doomed: list[dict]) -> int:
        if kind.name == "workflows":
            return self._archive_workflows(doomed)
        written = self.archive.append(kind.name, archive.group_by_day(doomed, kind.ended))
        ids = [d["_id"] for d in doomed]
        lifecycle = self.server.lifecycle
        if kind.name == "jobs":
            gone = set(lifecycle.delete_jobs({"_id": {"$in": ids}}))
        elif kind.name == "pilots":
            gone = set(lifecycle.delete_pilots({"_id": {"$in": ids}}))
            authenticator = getattr(self.server, "authenticator", None)
            if authenticator is not None and authenticator.credentials is not None:
                authenticator.credentials.revoke_pilots(sorted(gone))      # their credentials go with them
        else:
            # Another server on the same MongoDB may have removed some first: count what this one did.
            deleted = kind.model._get_collection().delete_many({"_id": {"$in": ids}}).deleted_count
            gone = set(ids[:deleted])
        removed = [d for d in doomed if d["_id"] in gone]
        self._add_totals(kind.name, removed)
        self.removed[kind.name] += len(removed)
        return written

    def _archive_workflows(self, doomed: list[dict]) -> int:
        jobs = models.Job._get_collection()
        data = models.DataFile._get_collection()
        bundles = []
        for workflow in doomed:
            if jobs.find_one({"workflow": workflow["_id"], "state": {"$in": sorted(states.JOB_ACTIVE)}}, {"_id": 1}):
                continue                          # a branch still running: next pass
            bundles.append({"_id": workflow["_id"], "workflow": workflow,
                            "jobs": list(jobs.find({"workflow": workflow["_id"]})),
                            "data": list(data.find({"workflow": workflow["_id"]}))})
        written = self.archive.append("workflows", archive.group_by_day(bundles, lambda b: KINDS["workflows"].ended(
            b["workflow"])))
        removed = []
        for bundle in bundles:
            try:
                self.server.workflows.delete(bundle["_id"])
            except ApiError as exc:
                log.info("workflow %s kept: %s", bundle["_id"], exc.message)
                continue
            removed.append(bundle)
            self._add_totals("jobs", bundle["jobs"])
        self._add_totals("workflows", removed)
        self.removed["workflows"] += len(removed)
        return written

    # --- operator commands --------------------------------------------------------------------
    async def purge(self, kinds: Iterable[str], days: float | None = None, keep: int | None = None,
                    dry_run: bool = False) -> dict[str, dict[str, int]]:
        """Apply the policy (or ``days``/``keep`` instead) to ``kinds`` until nothing more goes,
        one slice at a time, yielding to the event loop between slices."""
        out = {}
        self._busy = True
        try:
            for name in kinds:
                rule = self.rules[name]
                if days is not None or keep is not None:
                    rule = Rule(days if days is not None else 0.0, keep if keep is not None else 0)
                removed = written = 0
                if rule.active and dry_run:
                    removed = await self.count_due(name, rule)
                elif rule.active:
                    for walk in ("keep", "age"):
                        self._positions[(name, walk)] = 0
                    while True:
                        n, w, more = self.run_slice(name, rule)
                        removed += n
                        written += w
                        await asyncio.sleep(0)
                        if not n and not more:
                            break
                out[name] = {"removed": removed, "archived_bytes": written}
        finally:
            self._busy = False
        return out

    async def count_due(self, name: str, rule: Rule) -> int:
        """How many records of ``name`` a purge under ``rule`` would remove now (one walk, nothing written)."""
        kind = KINDS[name]
        excess = max(0, self._count(kind) - rule.keep) if rule.keep else 0
        cutoff = utcnow() - _dt.timedelta(days=rule.days) if rule.days > 0 else None
        collection = kind.model._get_collection()
        rows = kept.walk(collection) if _is_embedded(collection) else collection.find(kind.query)
        due = 0
        for i, doc in enumerate(rows):
            if not kind.removable(doc):
                continue
            if excess > 0:
                excess -= 1
                due += 1
            elif self._old(kind, doc, cutoff):
                due += 1
            if i % 1000 == 999:
                await asyncio.sleep(0)
        return due

    async def restore(self, kind: str, days: list[str]) -> dict[str, int]:
        """Put archived records of ``kind`` from the day files back; ``_id``\\ s already present are skipped."""
        archive.check_kind(kind)
        for day in days:
            if not self.archive.path(kind, day).is_file():
                raise ApiError(404, f"no archive of {kind} for {day}", "days")
        restored = skipped = 0
        for day in days:
            batch: list[dict] = []
            for doc in self.archive.read(kind, day):
                batch.append(doc)
                if len(batch) >= self.slice:
                    r, s = self._restore_batch(kind, batch)
                    restored, skipped, batch = restored + r, skipped + s, []
                    await asyncio.sleep(0)
            r, s = self._restore_batch(kind, batch)
            restored, skipped = restored + r, skipped + s
        return {"restored": restored, "skipped": skipped}

    def _restore_batch(self, kind: str, batch: list[dict]) -> tuple[int, int]:
        if not batch:
            return 0, 0
        collection = KINDS[kind].model._get_collection()
        # One archive may hold a record twice (a kill between its sync and the delete): first wins.
        unique = list({doc["_id"]: doc for doc in reversed(batch)}.values())[::-1]
        present = {d["_id"] for d in collection.find({"_id": {"$in": [d["_id"] for d in unique]}}, {"_id": 1})}
        fresh = [d for d in unique if d["_id"] not in present]
        now = utcnow()
        lifecycle = self.server.lifecycle
        if kind == "workflows":
            for bundle in fresh:
                self._restore_workflow(bundle, now)
        elif fresh:
            for doc in fresh:
                doc["ts_restored"] = now
            if kind == "jobs":
                lifecycle.insert_jobs(fresh)
            else:
                collection.insert_many(fresh, ordered=True)
                if kind == "pilots":
                    for doc in fresh:
                        lifecycle.counters.pilots[(doc["state"], doc.get("site", ""))] += 1
            self._add_totals(kind, fresh, sign=-1)
        return len(fresh), len(batch) - len(fresh)

    def _restore_workflow(self, bundle: dict, now: _dt.datetime) -> None:
        workflow = {**bundle["workflow"], "ts_restored": now}
        jobs = [j for j in bundle["jobs"]
                if not models.Job._get_collection().find_one({"_id": j["_id"]}, {"_id": 1})]
        data = [d for d in bundle["data"]
                if not models.DataFile._get_collection().find_one({"_id": d["_id"]}, {"_id": 1})]
        if jobs:
            self.server.lifecycle.insert_jobs(jobs)
        if data:
            models.DataFile._get_collection().insert_many(data, ordered=True)
        models.Workflow._get_collection().insert_one(workflow)
        models.DagTemplate._get_collection().update_one(
            {"_id": f"{workflow.get('template')}:{workflow.get('template_version')}"}, {"$inc": {"workflows": 1}})
        self._add_totals("workflows", [workflow], sign=-1)
        self._add_totals("jobs", jobs, sign=-1)

    def status(self) -> dict[str, Any]:
        """The policy, what was archived, and the archive's files."""
        return {"policy": {name: dataclasses.asdict(rule) for name, rule in self.rules.items()},
                "period": self.config.retention_period, "slice": self.slice,
                "archived": self.totals(), "removed_since_start": dict(self.removed),
                "last_slice": self.last_slice, "archive_dir": str(self.archive.root),
                "files": self.archive.files()}
