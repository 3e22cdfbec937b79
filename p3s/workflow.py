"""Workflows: DAG templates stored by name and version, instances created all-or-nothing, and
their advancement as jobs end.

Advancement takes per-job atomic counters and never a workflow-wide lock or a scan of the
workflow's jobs: when a job finishes, each child's ``n_parents_done`` is incremented in one
conditional write, and the child becomes ``defined`` (a NOOP: ``finished``) when the count
reaches its number of parents — so a child waits for all of its parents (joins), any number of
roots start together, and chains of NOOPs finish at once. A job that ends unsuccessfully (and
will not be retried) fails its workflow and cancels what depends on it; jobs on other branches go
on. The workflow's own counter of finished jobs tells when it is finished.
"""
from __future__ import annotations

import collections
import logging
import os
import uuid as _uuid
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from p3s import dag, events, faults, models, schema, states
from p3s.diagnosis import failure_reason
from p3s.errors import ApiError, invalid, not_found
from p3s.figures import epoch
from p3s.fastpath import ByIdCollection
from p3s.jobs import JobService
from p3s.lifecycle import Lifecycle, Listener, build_update, job_filter, will_retry
from p3s.models import utcnow
from p3s.states import IllegalTransition
from p3s.pilot.ids import new as new_id

log = logging.getLogger("p3s.workflow")
FILENAME_POLICIES = ("generated", "template", "derived")


class TemplateStore:
    """DAG templates by name; a template some workflow used is immutable (add a new version)."""

    def __init__(self) -> None:
        self.collection = models.DagTemplate._get_collection()

    def parse(self, body: dict) -> dag.Template:
        datatypes = {d["_id"] for d in models.DataType._get_collection().find({}, {"_id": 1})}
        try:
            if body.get("yaml") is not None:
                template = dag.load_yaml(body["yaml"], body.get("filename") or "<yaml>", datatypes)
            else:
                template = dag.load_graphml(body["graphml"], body.get("filename") or "<graphml>",
                                            name=body.get("name"), datatypes=datatypes)
        except dag.DagError as exc:
            raise ApiError(422, str(exc), "template") from None
        if body.get("name"):
            template.name = body["name"]
        return template

    def latest(self, name: str) -> dict | None:
        found = list(self.collection.find({"name": name}).sort("version", -1).limit(1))
        return found[0] if found else None

    def add(self, body: dict, user: str) -> dict:
        """Store a template; replacing an unused one keeps its version, a used one needs new_version."""
        template = self.parse(body)
        latest = self.latest(template.name)
        version = 1
        if latest is not None:
            if latest["workflows"] and not body.get("new_version"):
                raise ApiError(409, f"template {template.name!r} version {latest['version']} is used by "
                                    f"{latest['workflows']} workflow(s); add it with new_version=true", "name")
            version = latest["version"] + 1 if body.get("new_version") else latest["version"]
        spec = template.to_dict()
        doc = {"_id": f"{template.name}:{version}", "name": template.name, "version": version,
               "description": template.description, "user": user, "spec": spec,
               "nvertices": len(template.vertices), "nedges": len(template.edges), "workflows": 0, "ts_def": utcnow()}
        if latest is not None and version == latest["version"]:
            if self.collection.replace_one({"_id": doc["_id"], "workflows": 0}, doc).matched_count == 0:
                raise ApiError(409, f"template {template.name!r} was used meanwhile; add it with new_version=true")
        else:
            self.collection.insert_one(doc)
        return doc

    def get(self, name: str, version: int | None = None) -> dict:
        doc = self.latest(name) if version is None else self.collection.find_one({"_id": f"{name}:{version}"})
        if doc is None:
            raise not_found("template", name if version is None else f"{name} version {version}")
        return doc

    def listing(self) -> list[dict]:
        latest: dict[str, dict] = {}
        for doc in self.collection.find({}, {"spec": 0}):
            if doc["name"] not in latest or doc["version"] > latest[doc["name"]]["version"]:
                latest[doc["name"]] = doc
        return [latest[name] for name in sorted(latest)]

    def delete(self, name: str) -> list[str]:
        used = self.collection.find_one({"name": name, "workflows": {"$gt": 0}}, {"version": 1})
        if used is not None:
            raise ApiError(409, f"template {name!r} version {used['version']} has workflows; delete them first")
        keys = [d["_id"] for d in self.collection.find({"name": name}, {"_id": 1})]
        if not keys:
            raise not_found("template", name)
        self.collection.delete_many({"_id": {"$in": keys}, "workflows": 0})
        return keys


class WorkflowEngine(Listener):
    """Creates workflows from templates and moves them on as their jobs change state."""

    def __init__(self, lifecycle: Lifecycle, jobs: JobService, templates: TemplateStore) -> None:
        self.lifecycle, self.jobs, self.templates = lifecycle, jobs, templates
        self.collection = ByIdCollection(models.Workflow._get_collection())
        self.data = models.DataFile._get_collection()
        self._pending: collections.deque = collections.deque()
        self._draining = False
        self.freshness: Any = None           # p3s.freshness.Freshness, set by the server
        lifecycle.listeners.append(self)

    # --- instantiation ------------------------------------------------------------------------
    def instantiate(self, body: dict, user: str) -> dict:
        """Create a workflow, its jobs and its data records together; on any error none remains."""
        tdoc = self.templates.get(body["template"], body["version"])
        template = dag.Template.from_dict(tdoc["spec"])
        overrides = self._overrides(template, body["overrides"])
        inputs = self._inputs(template, body["inputs"])
        wf_uuid = body.get("uuid") or str(_uuid.uuid4())
        if body.get("uuid") and self.collection.find_one({"_id": wf_uuid}, {"_id": 1}):
            raise ApiError(409, f"workflow {wf_uuid} exists already", "uuid")
        job_ids = {name: new_id() for name in template.vertices}     # time-ordered, as all job ids
        exts = {d["_id"]: d.get("ext", "") for d in models.DataType._get_collection().find({}, {"ext": 1})}
        now = utcnow()
        arrived = body.get("arrived") or self._arrival(inputs) or now
        stem = self._stem(inputs, body["name"] or template.name)
        data_docs, paths = [], {}
        for edge in template.edges:
            given = inputs.get(edge.id)
            if given is not None:
                dirpath, name = os.path.split(given)
            else:
                dirpath = body["dirpath"] or edge.dirpath
                name = self._filename(body["filenames"], edge, stem, exts.get(edge.datatype, ""))
            paths[edge.id] = os.path.join(dirpath, name) if dirpath else name
            data_docs.append({
                "_id": str(_uuid.uuid4()), "name": name, "dirpath": dirpath, "datatype": edge.datatype,
                "state": "ready" if given is not None else "template", "comment": edge.comment, "metadata": {},
                "size": None, "workflow": wf_uuid, "datatag": edge.datatag or None, "edge": edge.id,
                "source": edge.source, "target": edge.target, "source_job": job_ids[edge.source],
                "target_job": job_ids[edge.target], "ts_reg": now, "ts_upd": now, "owner": user,
                "arrived": arrived if given is not None else None})
        job_docs = []
        for name, vertex in template.vertices.items():
            wiring = {e.datatag: paths[e.id] for e in template.edges if e.datatag and name in (e.source, e.target)}
            if inputs:     # the original's convention: every job of the workflow knows its input file
                wiring.setdefault("P3S_INPUT_FILE", next(iter(inputs.values())))
            extra = overrides.get(name, {})
            clean = schema.JOB_CREATE.validate({
                "uuid": job_ids[name], "name": name, "payload": extra.get("payload", vertex.payload) or "",
                "jobtype": extra.get("jobtype", "noop" if vertex.noop else vertex.jobtype),
                "env": {**vertex.env, **extra.get("env", {}), **wiring}, "priority": extra.get("priority", vertex.priority),
                "timelimit": extra.get("timelimit", vertex.timelimit) or self.jobs.config.default_timelimit,
                "eta": extra.get("eta", vertex.eta),
                "state": states.TEMPLATE, "user": body["user"] or user, "secret_env": extra.get("secret_env", []),
                "input_file": next(iter(inputs.values()), "") if inputs else ""})
            children = sorted({job_ids[e.target] for e in template.edges if e.source == name})
            job_docs.append(self.jobs.new_job(clean, user, workflow=wf_uuid, vertex=name, noop=vertex.noop,
                                              children=children, n_parents=len(template.parents(name)),
                                              arrived=arrived))
        roots = [job_ids[name] for name in template.roots()]
        workflow = {"_id": wf_uuid, "name": body["name"] or template.name, "description": body["description"],
                    "user": body["user"] or user, "owner": user, "template": template.name, "template_version": tdoc["version"],
                    "state": states.WF_TEMPLATE, "njobs": len(job_docs), "ndone": 0, "vertices": job_ids,
                    "roots": roots, "error": None, "ts_def": now, "ts_sta": None, "ts_sto": None, "arrived": arrived}
        try:
            self.collection.insert_one(workflow)
        except DuplicateKeyError:
            raise ApiError(409, f"workflow {wf_uuid} exists already", "uuid") from None
        try:
            self.lifecycle.insert_jobs(job_docs)     # on failure it removes what it inserted itself
        except Exception:
            self.collection.delete_one({"_id": wf_uuid, "vertices": job_ids})
            raise
        try:
            if data_docs:
                self.data.insert_many(data_docs)
            self.templates.collection.update_one({"_id": tdoc["_id"]}, {"$inc": {"workflows": 1}})
        except Exception:
            # Remove only what this request inserted: another request may hold the same workflow uuid.
            self.data.delete_many({"_id": {"$in": [d["_id"] for d in data_docs]}})
            self.lifecycle.remove_inserted(job_docs)
            self.collection.delete_one({"_id": wf_uuid, "vertices": job_ids})
            raise
        for listener in self.lifecycle.listeners:
            listener.workflow_moved(workflow)
        if body["state"] == states.WF_DEFINED:
            return self.start(wf_uuid)
        return workflow

    @staticmethod
    def _overrides(template: dag.Template, overrides: dict) -> dict:
        checked = {}
        for vertex, changes in overrides.items():
            if vertex not in template.vertices:
                raise invalid(f"overrides.{vertex}", f"no vertex {vertex!r} in template {template.name!r}")
            checked[vertex] = schema.VERTEX_OVERRIDE.validate(changes, f"overrides.{vertex}")
        return checked

    def _arrival(self, inputs: dict[str, str]):
        """The earliest arrival recorded for the input files (registered data records by path)."""
        earliest = None
        for path in set(inputs.values()):
            dirpath, name = os.path.split(path)
            for doc in self.data.find({"name": name, "workflow": None}, {"dirpath": 1, "arrived": 1, "ts_reg": 1}):
                if (doc.get("dirpath") or "") != dirpath:
                    continue
                moment = doc.get("arrived") or doc.get("ts_reg")
                if moment is not None and (earliest is None or moment < earliest):
                    earliest = moment
        return earliest

    @staticmethod
    def _inputs(template: dag.Template, inputs: dict) -> dict[str, str]:
        """Input file paths by edge id; keys may be edge ids or data tags."""
        by_key: dict[str, str] = {}
        for key, path in inputs.items():
            if not isinstance(path, str) or not path:
                raise invalid(f"inputs.{key}", "must be a file path")
            edges = [e for e in template.edges if key in (e.id, e.datatag)]
            if not edges:
                raise invalid(f"inputs.{key}", f"no edge or data tag {key!r} in template {template.name!r}")
            for edge in edges:
                by_key[edge.id] = path
        return by_key

    @staticmethod
    def _stem(inputs: dict[str, str], fallback: str) -> str:
        if inputs:
            return os.path.splitext(os.path.basename(next(iter(inputs.values()))))[0]
        return fallback

    @staticmethod
    def _filename(policy: str, edge: dag.Edge, stem: str, ext: str) -> str:
        if policy == "template" and edge.name:
            return edge.name
        if policy == "derived":
            return f"{stem}.{edge.source}.{edge.datatag or edge.id}{ext}"
        return f"{_uuid.uuid4()}{ext}"

    def _remove(self, wf_uuid: str) -> None:
        self.lifecycle.delete_jobs({"workflow": wf_uuid})
        self.data.delete_many({"workflow": wf_uuid})
        self.collection.delete_one({"_id": wf_uuid})

    # --- control ------------------------------------------------------------------------------
    def get(self, uuid: str) -> dict:
        doc = self.collection.find_one({"_id": uuid})
        if doc is None:
            raise not_found("workflow", uuid)
        return doc

    def move(self, uuid: str, target: str, set_: dict | None = None) -> dict:
        """Move a workflow to ``target`` in one conditional write (409 when not allowed)."""
        query = {"_id": uuid, "state": {"$in": sorted(states.workflow_sources(target))}}
        after = self.collection.find_one_and_update(query, build_update({"state": target, **(set_ or {})}),
                                                    return_document=ReturnDocument.AFTER)
        if after is None:
            current = self.get(uuid)
            raise IllegalTransition("workflow", uuid, current["state"], target)
        for listener in self.lifecycle.listeners:
            listener.workflow_moved(after)
        return after

    def start(self, uuid: str) -> dict:
        """Define a workflow's root jobs (NOOP roots finish at once)."""
        workflow = self.move(uuid, states.WF_DEFINED)
        shed = []
        for root in self.jobs.collection.find({"_id": {"$in": workflow["roots"]}},
                                              {"noop": 1, "jobtype": 1, "priority": 1, "deadline": 1, "site": 1}):
            reason = None
            if self.freshness is not None and not root.get("noop"):
                reason = self.freshness.shed_reason(root.get("jobtype", ""), root.get("priority", 0),
                                                    epoch(root.get("deadline")), site=root.get("site") or "")
            if reason is None:
                self._release(root["_id"], root.get("noop", False))
                continue
            try:        # dropped at admission: what depends on it is cancelled, the workflow dropped
                shed.append(self.lifecycle.move_job(root["_id"], states.STALE, sources={states.TEMPLATE},
                                                    set_={"ts_sto": utcnow(), "error": reason, "dropped": "shed"}))
            except (IllegalTransition, ApiError):
                pass
        if shed:
            self.freshness.record_shed({**j, "workflow": uuid} for j in shed)
        self._drain()
        return self.get(uuid)

    def cancel(self, uuid: str, by: str = "") -> dict:
        """Cancel a workflow: its waiting jobs are cancelled, its running ones killed through their pilots."""
        reason = f"cancelled on request of {by}" if by else "cancelled on request"
        workflow = self.move(uuid, states.WF_CANCELLED, {"ts_sto": utcnow(), "error": reason})
        for job in self.jobs.collection.find({"workflow": uuid, "state": {"$in": [states.TEMPLATE, states.DEFINED,
                                                                                   *states.JOB_ACTIVE]}},
                                             {"state": 1}):
            try:
                self.jobs.kill(job["_id"])
            except (IllegalTransition, ApiError):
                continue
        events.record("workflow.cancelled", f"workflow {uuid} ({workflow['name']}) {reason}")
        return self.get(uuid)

    def delete(self, uuid: str) -> None:
        self.get(uuid)
        active = self.jobs.collection.find_one({"workflow": uuid, "state": {"$in": sorted(states.JOB_ACTIVE)}},
                                               {"_id": 1})
        if active is not None:
            raise ApiError(409, f"workflow {uuid} has running jobs; cancel it and wait for them to stop")
        workflow = self.get(uuid)
        self._remove(uuid)
        self.templates.collection.update_one({"_id": f"{workflow['template']}:{workflow['template_version']}"},
                                             {"$inc": {"workflows": -1}})

    # --- advancement (listener) ---------------------------------------------------------------
    def job_moved(self, before: dict, after: dict) -> None:
        if after.get("workflow"):
            self._pending.append(after)
            self._drain()




    def _drain(self) -> None:
        """Handle queued job changes one by one (a NOOP chain is a loop here, not a recursion)."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._pending:
                job = self._pending.popleft()
                try:
                    self._advance(job)
                except Exception:
                    log.exception("advancing workflow %s after job %s failed", job.get("workflow"), job["_id"])
        finally:
            self._draining = False

    def _advance(self, job: dict) -> None:
        state, wf_uuid = job["state"], job["workflow"]
        if state == states.RUNNING:
            try:
                self.move(wf_uuid, states.WF_RUNNING, {"ts_sta": utcnow()})
            except IllegalTransition:
                pass
        elif state == states.FINISHED:
            self.data.update_many({"workflow": wf_uuid, "source_job": job["_id"]},
                                  {"$set": {"state": "ready", "ts_upd": utcnow()}})
            for child in job.get("children") or ():
                self._parent_done(child)
            workflow = self.collection.find_one_and_update(
                {"_id": wf_uuid, "state": {"$in": [states.WF_DEFINED, states.WF_RUNNING]}},
                {"$inc": {"ndone": 1}}, projection={"ndone": 1, "njobs": 1}, return_document=ReturnDocument.AFTER)
            if workflow is not None and workflow["ndone"] >= workflow["njobs"]:
                try:
                    self.move(wf_uuid, states.WF_FINISHED, {"ts_sto": utcnow()})
                    events.record("workflow.finished", f"workflow {wf_uuid} finished")
                except IllegalTransition:
                    pass
        elif state in states.JOB_UNSUCCESSFUL and not will_retry(job):
            self._fail(wf_uuid, job)
        elif state in states.JOB_DROPPED:
            self._fail(wf_uuid, job, dropped=True)

    def settle(self, wf_uuid: str, job: dict) -> None:
        """End a workflow, and cancel what depends on ``job``, for a job of it that ended
        unsuccessfully for good or was dropped (start-up repair after a crash between the two)."""
        self._fail(wf_uuid, job, dropped=job["state"] in states.JOB_DROPPED)

    def _parent_done(self, child: str) -> None:
        doc = self.jobs.collection.find_one_and_update(
            job_filter(child, {states.TEMPLATE}), {"$inc": {"n_parents_done": 1}},
            projection={"n_parents": 1, "n_parents_done": 1, "noop": 1}, return_document=ReturnDocument.AFTER)
        if doc is not None and doc["n_parents_done"] >= doc["n_parents"]:
            self._release(child, doc.get("noop", False))

    def _release(self, uuid: str, noop: bool) -> None:
        """All parents of job ``uuid`` finished: define it, or finish it if it is a NOOP."""
        now = utcnow()
        try:
            if noop:
                self.lifecycle.move_job(uuid, states.FINISHED, sources={states.TEMPLATE},
                                        set_={"ts_dis": now, "ts_sta": now, "ts_sto": now, "exit_code": 0})
            else:
                self.lifecycle.move_job(uuid, states.DEFINED, sources={states.TEMPLATE}, set_={"ts_def": now})
        except (IllegalTransition, ApiError):
            pass     # cancelled meanwhile

    def _fail(self, wf_uuid: str, job: dict, dropped: bool = False) -> None:
        """A job ended unsuccessfully (the workflow fails) or was dropped (stale or shed: the workflow
        is dropped); what depends on it is cancelled with the reason."""
        reason = f"job {job.get('vertex')} ({job['_id']}) ended {job['state']}"
        if dropped and job.get("error"):
            reason += f" ({job['error']})"
        elif job.get("error") or job.get("stderr_tail"):
            why = failure_reason(job)
            if why and why != job["state"]:
                reason += f": {why}"
        target = states.WF_DROPPED if dropped else states.WF_FAILED
        faults.crash_point("workflow_end")      # the job ended; the workflow not yet (p3s.reconcile repairs)
        try:
            self.move(wf_uuid, target, {"ts_sto": utcnow(), "error": reason})
            events.record(f"workflow.{target}", f"workflow {wf_uuid} {target}: {reason}", job=job["_id"],
                          severity="warning")
        except IllegalTransition:
            pass                 # failed or cancelled already; still cancel what depends on this job
        seen: set[str] = set()
        todo = list(job.get("children") or ())
        while todo:
            uuid = todo.pop()
            if uuid in seen:
                continue
            seen.add(uuid)
            doc = self.jobs.collection.find_one({"_id": uuid}, {"state": 1, "children": 1})
            if doc is None:
                continue
            if doc["state"] in (states.TEMPLATE, states.DEFINED):
                try:
                    self.lifecycle.move_job(uuid, states.CANCELLED, sources={doc["state"]},
                                            set_={"ts_sto": utcnow(), "error": f"cancelled: upstream {reason}"})
                except IllegalTransition:
                    pass
            todo.extend(doc.get("children") or ())
