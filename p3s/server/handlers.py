"""API handlers, one class per resource path. Each parses, authorises, calls one service method.

``doc`` on each class describes its operations; ``p3s.server.openapi`` builds the OpenAPI document
from these and from the request schemas in ``p3s.schema``, so the document follows the code.
"""
from __future__ import annotations

import json
import re
from typing import Any

from p3s import API_PREFIX, __version__, auth, datafiles, faults, listing, models, offloop, schema, slices, states
from p3s.jobs import OFF_LOOP_JOBS
from p3s.errors import ApiError, invalid, not_found
from p3s.models import utcnow
from p3s.server.base import ApiHandler, decode_body, document

LIST_QUERY = {"limit": "Most items to return (1–1000, default 100).",
              "offset": "Items to skip (default 0).",
              "sort": "Field to sort by; prefix - for descending."}


def _states_arg(raw: str | None, allowed: tuple[str, ...]) -> list[str] | None:
    if raw is None:
        return None
    wanted = [s.strip() for s in raw.split(",") if s.strip()]
    for state in wanted:
        if state not in allowed:
            raise invalid("state", f"unknown state {state!r} (known: {', '.join(allowed)})")
    return wanted


class ListMixin:
    """Filtering, sorting and paging of a collection."""

    sortable: tuple[str, ...] = ()
    default_sort = "-_id"

    def page(self: Any, collection: Any, query: dict, key: str, heavy: bool = False, shown: Any = None) -> None:
        limit = self.query_int("limit")
        offset = self.query_int("offset")
        sort = self.arg("sort", self.default_sort)
        field = sort.lstrip("-")
        if field not in self.sortable and field != "_id":
            raise invalid("sort", f"cannot sort by {field!r} (sortable: {', '.join(self.sortable)})")
        found, total = listing.page(collection, query, {"usage_series": 0} if not heavy else None, field,
                                    sort.startswith("-"), offset, limit)
        items = [document(shown(d) if shown else d, key, heavy) for d in found]
        self.reply({"total": total, "offset": offset, "limit": limit, "items": items})


def _eq_filters(handler: ApiHandler, names: dict[str, str]) -> dict:
    query = {}
    for arg, field in names.items():
        value = handler.arg(arg)
        if value is not None:
            query[field] = value
    return query


# --- jobs -------------------------------------------------------------------------------------
def job_query(handler: ApiHandler) -> dict:
    query = _eq_filters(handler, {"jobtype": "jobtype", "user": "user", "workflow": "workflow",
                                  "pilot": "pilot", "host": "host"})
    wanted = _states_arg(handler.arg("state"), states.JOB_STATES)
    if wanted:
        query["state"] = {"$in": wanted}
    site = handler.arg("site")
    if site is not None:
        query["$or"] = [{"site": site}, {"pilot_site": site}]
    text = handler.arg("q")
    if text is not None:
        query["name"] = {"$regex": re.escape(text), "$options": "i"}
    return query


JOB_FILTERS = {"state": "Comma-separated states.", "jobtype": "Job type.", "user": "Submitter.",
               "workflow": "Workflow uuid.", "site": "Required or executing site.", "pilot": "Pilot uuid.",
               "host": "Executing host.", "q": "Text in the job name."}


OFF_LOOP_BYTES = 16384      # a body larger than this is decoded off the event loop


def rendered(docs: list[dict]) -> str:
    """The reply to a job creation: ``{"items": [job…]}`` (pure: runs off the loop for many jobs)."""
    return '{"items":[' + ",".join(json.dumps(document(d, "uuid"), separators=(",", ":"))
                                   for d in offloop.yielding(docs)) + "]}"


class JobsHandler(ListMixin, ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.SUBMIT, "DELETE": auth.ADMIN}
    sortable = ("ts_def", "ts_dis", "ts_sta", "ts_sto", "priority", "state", "jobtype", "name", "user", "seq")
    default_sort = "-ts_def"
    doc = {
        "GET": {"summary": "List jobs", "query": {**JOB_FILTERS, **LIST_QUERY}, "response": ("list", "Job")},
        "POST": {"summary": "Create one job, or a list of jobs (all or none)",
                 "body": ("one-or-list", schema.JOB_CREATE), "status": 201, "response": ("items", "Job")},
        "DELETE": {"summary": "Delete jobs matching a filter (not dispatched or running ones)",
                   "query": {**JOB_FILTERS, "all": "true to delete with no filter"}, "response": "Deleted",
                   "x-requires-one-of": [*JOB_FILTERS, "all=true"]},
    }

    def get(self) -> None:
        # Running jobs' usage figures kept in memory are shown too (p3s.usage).
        self.page(self.server.jobs.collection, job_query(self), "uuid", shown=self.server.pilot_service.usage.current)

    async def post(self) -> None:
        raw = self.raw_body()
        # a large body is decoded, and its reply rendered, off the loop (10,000 jobs take a while)
        body = await offloop.run(decode_body, raw, inline=len(raw) <= OFF_LOOP_BYTES)
        docs = await self.server.jobs.create(body, self.user)
        self.set_status(201)
        self.finish(await offloop.run(rendered, docs, inline=len(docs) < OFF_LOOP_JOBS))

    async def delete(self) -> None:
        query = job_query(self)
        if not query and self.arg("all") != "true":
            raise invalid("query", "give a filter, or all=true to delete every job")
        self.reply({"deleted": await self.server.jobs.delete_matching(query)})


class JobHandler(ApiHandler):
    roles = {"GET": auth.READ, "PATCH": auth.SUBMIT, "DELETE": auth.SUBMIT}
    doc = {
        "GET": {"summary": "Get one job", "response": "Job"},
        "PATCH": {"summary": "Adjust a job (priority, state, timelimit, env, …): one write or nothing",
                  "body": schema.JOB_PATCH, "response": "Job"},
        "DELETE": {"summary": "Delete a job that is not dispatched or running", "response": "Deleted"},
    }

    def get(self, uuid: str) -> None:
        self.server.pilot_service.usage.flush_job(uuid)      # its heartbeats' samples kept in memory
        self.reply(document(self.server.jobs.get(uuid)))

    def patch(self, uuid: str) -> None:
        changes = schema.JOB_PATCH.validate(self.body())
        self.require_owner(self.server.jobs.get(uuid), "job", uuid)
        self.reply(document(self.server.jobs.patch(uuid, changes)))

    def delete(self, uuid: str) -> None:
        job = self.server.jobs.get(uuid)
        self.require_owner(job, "job", uuid)
        deleted = self.server.jobs.delete({"_id": uuid})
        if not deleted:
            raise ApiError(409, f"job {uuid} is {job['state']}; kill it before deleting it", "state")
        self.reply({"deleted": deleted})


class JobKillHandler(ApiHandler):
    roles = {"POST": auth.SUBMIT}
    doc = {"POST": {"summary": "Cancel a job not yet dispatched, or ask its pilot to stop it",
                    "response": "Job", "status": 202}}

    def post(self, uuid: str) -> None:
        self.require_owner(self.server.jobs.get(uuid), "job", uuid)
        self.reply(document(self.server.jobs.kill(uuid)), 202)


class JobTypesHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "List job types with their limits and counts", "response": ("items", "JobType")}}

    def get(self) -> None:
        self.reply({"items": self.server.jobs.jobtypes()})


class JobTypeHandler(ApiHandler):
    roles = {"GET": auth.READ, "PUT": auth.ADMIN, "PATCH": auth.ADMIN, "DELETE": auth.ADMIN}
    doc = {
        "GET": {"summary": "Get one job type", "response": "JobType"},
        "PUT": {"summary": "Set a job type's limit on dispatched+running jobs and its freshness policies "
                           "(ETA, order, stale, stop_running, shed); what is not given is unset",
                "body": schema.JOBTYPE_SET, "response": "JobType"},
        "PATCH": {"summary": "Change some of a job type's settings", "body": schema.JOBTYPE_PATCH,
                  "response": "JobType"},
        "DELETE": {"summary": "Remove a job type's settings (its limit)", "response": "Deleted"},
    }

    def get(self, name: str) -> None:
        self.reply(self.server.jobs.jobtype(name))

    def put(self, name: str) -> None:
        schema.Field("name", "name", "").clean(name, "name")
        self.reply(self.server.jobs.set_jobtype(name, schema.JOBTYPE_SET.validate(self.body())))

    def patch(self, name: str) -> None:
        schema.Field("name", "name", "").clean(name, "name")
        self.reply(self.server.jobs.set_jobtype(name, schema.JOBTYPE_PATCH.validate(self.body()), replace=False))

    def delete(self, name: str) -> None:
        self.server.jobs.delete_jobtype(name)
        self.reply({"deleted": [name]})


# --- pilots -----------------------------------------------------------------------------------
def pilot_query(handler: ApiHandler) -> dict:
    query = _eq_filters(handler, {"site": "site", "host": "host", "job": "job"})
    wanted = _states_arg(handler.arg("state"), states.PILOT_STATES)
    if wanted:
        query["state"] = {"$in": wanted}
    return query


PILOT_FILTERS = {"state": "Comma-separated states.", "site": "Site.", "host": "Host.", "job": "Current job."}


class PilotsHandler(ListMixin, ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.PILOT, "DELETE": auth.ADMIN}
    sortable = ("ts_reg", "ts_lhb", "state", "host", "site", "njobs")
    default_sort = "-ts_reg"
    doc = {
        "GET": {"summary": "List pilots", "query": {**PILOT_FILTERS, **LIST_QUERY}, "response": ("list", "Pilot")},
        "POST": {"summary": "Register a pilot", "body": schema.PILOT_REGISTER, "status": 201,
                 "response": "Registration"},
        "DELETE": {"summary": "Delete stopped or lost pilots matching a filter", "query": PILOT_FILTERS,
                   "response": "Deleted"},
    }

    def get(self) -> None:
        self.server.pilot_service.contacts.flush()      # show the contacts kept in memory too
        self.page(self.server.pilot_service.collection, pilot_query(self), "uuid")

    def post(self) -> None:
        doc, credential = self.server.pilot_service.register(schema.PILOT_REGISTER.validate(self.body()),
                                                             self.identity)
        self.reply({"pilot": document(doc), "credential": credential,
                    "settings": self.server.pilot_service.settings()}, 201)

    async def delete(self) -> None:
        self.reply({"deleted": await self.server.lifecycle.delete_pilots_in_slices(
            pilot_query(self), self.server.authenticator.credentials.revoke_pilots)})


class PilotHandler(ApiHandler):
    roles = {"GET": auth.READ, "DELETE": auth.ADMIN}
    doc = {"GET": {"summary": "Get one pilot", "response": "Pilot"},
           "DELETE": {"summary": "Delete a stopped or lost pilot", "response": "Deleted"}}

    def get(self, uuid: str) -> None:
        self.server.pilot_service.contacts.flush()
        doc = self.server.pilot_service.collection.find_one({"_id": uuid})
        if doc is None:
            raise not_found("pilot", uuid)
        self.reply(document(doc))

    def delete(self, uuid: str) -> None:
        doc = self.server.pilot_service.collection.find_one({"_id": uuid}, {"state": 1})
        if doc is None:
            raise not_found("pilot", uuid)
        deleted = self.server.lifecycle.delete_pilots({"_id": uuid})
        if not deleted:
            raise ApiError(409, f"pilot {uuid} is {doc['state']}; kill it before deleting it", "state")
        self.server.authenticator.credentials.revoke_pilots(deleted)
        self.reply({"deleted": deleted})


class PilotRequestHandler(ApiHandler):
    roles = {"POST": auth.AGENT}
    doc = {"POST": {"summary": "Ask for a job, optionally reporting the last one first (one round trip); "
                               "waits up to `wait` seconds for work (long poll)",
                    "body": "PilotRequest", "response": "JobOffer"}}
    _waiting: str | None = None

    async def post(self, uuid: str) -> None:
        self.require_pilot(uuid)
        body = self.object_body(optional=True)
        unknown = set(body) - {"wait", "report"}
        if unknown:
            raise invalid(sorted(unknown)[0], "unknown field (accepted: wait, report)")
        clean = schema.PILOT_REQUEST.validate({k: v for k, v in body.items() if k == "wait"})
        clean["report"] = body.get("report")
        reply = await self.server.pilot_service.request(uuid, clean, on_wait=self._on_wait)
        self._waiting = None
        if self.request.connection.stream is None or self.request.connection.stream.closed():
            return
        self.reply(reply)

    def _on_wait(self, pilot: Any) -> None:
        self._waiting = pilot.uuid

    def on_connection_close(self) -> None:
        if self._waiting:
            self.server.broker.stop_waiting(self._waiting)


class PilotEventsHandler(ApiHandler):
    roles = {"POST": auth.AGENT}
    doc = {"POST": {"summary": "Report an event: heartbeat (with usage), jobstart, jobstop, timelimit, "
                               "nonstarter, killed, stopped; the reply carries kill requests",
                    "body": schema.PILOT_EVENT, "response": "Instructions"}}

    def post(self, uuid: str) -> None:
        self.require_pilot(uuid)
        self.reply(self.server.pilot_service.report(uuid, schema.PILOT_EVENT.validate(self.body())))


class PilotKillHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": "Ask one pilot to stop (delivered in its next reply)", "response": "Killed",
                    "status": 202}}

    def post(self, uuid: str) -> None:
        killed = self.server.pilot_service.kill({"uuid": uuid})
        if not killed:
            doc = self.server.pilot_service.collection.find_one({"_id": uuid}, {"state": 1})
            if doc is None:
                raise not_found("pilot", uuid)
            raise ApiError(409, f"pilot {uuid} is {doc['state']}; there is nothing to kill", "state")
        self.reply({"killed": killed}, 202)


class PilotsKillHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": "Ask every live pilot matching all given keys (uuid, host, site, state) to stop",
                    "body": schema.KILL_SELECTOR, "response": "Killed", "status": 202}}

    def post(self) -> None:
        selector = schema.KILL_SELECTOR.validate(self.body())
        selector = {k: v for k, v in selector.items() if v is not None}
        self.reply({"killed": self.server.pilot_service.kill(selector)}, 202)


# --- data -------------------------------------------------------------------------------------
def data_query(handler: ApiHandler) -> dict:
    query = _eq_filters(handler, {"name": "name", "dirpath": "dirpath", "datatype": "datatype", "state": "state",
                                  "workflow": "workflow"})
    text = handler.arg("q")
    if text is not None:
        query.setdefault("name", {"$regex": re.escape(text), "$options": "i"})
    return query


DATA_FILTERS = {"name": "File name (exact: the de-duplication look-up).", "q": "Text in the file name.",
                "dirpath": "Directory.",
                "datatype": "Data type.", "state": "State.", "workflow": "Workflow uuid."}


def _check_datatype(datatype: str, where: str) -> None:
    if datatype and models.DataType._get_collection().find_one({"_id": datatype}, {"_id": 1}) is None:
        raise invalid(where, f"unknown data type {datatype!r} (register it first)")


class DataListHandler(ListMixin, ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.SUBMIT, "DELETE": auth.ADMIN}
    sortable = ("ts_reg", "ts_upd", "name", "state", "datatype", "size")
    default_sort = "-ts_reg"
    doc = {
        "GET": {"summary": "List data files; ?name= looks a file up by name",
                "query": {**DATA_FILTERS, **LIST_QUERY}, "response": ("list", "DataFile")},
        "POST": {"summary": "Register one file or a list (all or none)", "body": ("one-or-list", schema.DATA_CREATE),
                 "status": 201, "response": ("items", "DataFile")},
        "DELETE": {"summary": "Delete data records matching a filter", "query": {**DATA_FILTERS, "all": "true for all"},
                   "x-requires-one-of": [*DATA_FILTERS, "all=true"],
                   "response": "Deleted"},
    }

    def get(self) -> None:
        self.page(models.DataFile._get_collection(), data_query(self), "uuid")

    async def post(self) -> None:
        body = self.body()
        items = body if isinstance(body, list) else [body]
        if not items:
            raise invalid("body", "the list of files is empty")
        docs = await datafiles.create(items, isinstance(body, list), self.user, _check_datatype)
        parts = []
        for chunk in slices.chunks(docs, 250):
            parts.append(",".join(json.dumps(document(d), separators=(",", ":")) for d in chunk))
            await slices.pause()
        self.set_status(201)
        self.finish('{"items":[' + ",".join(parts) + "]}")

    async def delete(self) -> None:
        query = data_query(self)
        if not query and self.arg("all") != "true":
            raise invalid("query", "give a filter, or all=true to delete every data record")
        self.reply({"deleted": await datafiles.delete(query)})


class DataHandler(ApiHandler):
    roles = {"GET": auth.READ, "PATCH": auth.SUBMIT, "DELETE": auth.SUBMIT}
    doc = {"GET": {"summary": "Get one data file", "response": "DataFile"},
           "PATCH": {"summary": "Adjust a data file", "body": schema.DATA_PATCH, "response": "DataFile"},
           "DELETE": {"summary": "Delete a data file record", "response": "Deleted"}}

    def get(self, uuid: str) -> None:
        doc = models.DataFile._get_collection().find_one({"_id": uuid})
        if doc is None:
            raise not_found("data file", uuid)
        self.reply(document(doc))

    def patch(self, uuid: str) -> None:
        changes = schema.DATA_PATCH.validate(self.body())
        self._owned(uuid)
        if "datatype" in changes:
            _check_datatype(changes["datatype"], "datatype")
        doc = models.DataFile._get_collection().find_one_and_update(
            {"_id": uuid}, {"$set": {**changes, "ts_upd": utcnow()}}, return_document=True)
        if doc is None:
            raise not_found("data file", uuid)
        self.reply(document(doc))

    def delete(self, uuid: str) -> None:
        self._owned(uuid)
        if models.DataFile._get_collection().delete_one({"_id": uuid}).deleted_count == 0:
            raise not_found("data file", uuid)
        self.reply({"deleted": [uuid]})

    def _owned(self, uuid: str) -> None:
        doc = models.DataFile._get_collection().find_one({"_id": uuid}, {"owner": 1})
        if doc is None:
            raise not_found("data file", uuid)
        self.require_owner(doc, "data file", uuid)


class DataTypesHandler(ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.SUBMIT}
    doc = {"GET": {"summary": "List data types", "response": ("items", "DataType")},
           "POST": {"summary": "Register a data type", "body": schema.DATATYPE_CREATE, "status": 201,
                    "response": "DataType"}}

    def get(self) -> None:
        items = [document(d, "name") for d in models.DataType._get_collection().find().sort("_id", 1)]
        self.reply({"items": items})

    def post(self) -> None:
        clean = schema.DATATYPE_CREATE.validate(self.body())
        collection = models.DataType._get_collection()
        if collection.find_one({"_id": clean["name"]}, {"_id": 1}):
            raise ApiError(409, f"data type {clean['name']!r} exists already", "name")
        doc = {"_id": clean.pop("name"), **clean}
        collection.insert_one(doc)
        self.reply(document(doc, "name"), 201)


class DataTypeHandler(ApiHandler):
    roles = {"GET": auth.READ, "PATCH": auth.ADMIN, "DELETE": auth.ADMIN}
    doc = {"GET": {"summary": "Get a data type", "response": "DataType"},
           "PATCH": {"summary": "Adjust a data type", "body": schema.DATATYPE_PATCH, "response": "DataType"},
           "DELETE": {"summary": "Delete a data type no file uses", "response": "Deleted"}}

    def get(self, name: str) -> None:
        doc = models.DataType._get_collection().find_one({"_id": name})
        if doc is None:
            raise not_found("data type", name)
        self.reply(document(doc, "name"))

    def patch(self, name: str) -> None:
        changes = schema.DATATYPE_PATCH.validate(self.body())
        doc = models.DataType._get_collection().find_one_and_update({"_id": name}, {"$set": changes},
                                                                    return_document=True)
        if doc is None:
            raise not_found("data type", name)
        self.reply(document(doc, "name"))

    def delete(self, name: str) -> None:
        user = models.DataFile._get_collection().find_one({"datatype": name}, {"_id": 1})
        if user is not None:
            raise ApiError(409, f"data type {name!r} is used by data file {user['_id']}")
        if models.DataType._get_collection().delete_one({"_id": name}).deleted_count == 0:
            raise not_found("data type", name)
        self.reply({"deleted": [name]})


# --- sites, events, summary -------------------------------------------------------------------
class SitesHandler(ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.ADMIN}
    doc = {"GET": {"summary": "List sites", "response": ("items", "Site")},
           "POST": {"summary": "Define a site", "body": schema.SITE_CREATE, "status": 201, "response": "Site"}}

    def get(self) -> None:
        self.reply({"items": [document(d, "name") for d in models.Site._get_collection().find().sort("_id", 1)]})

    def post(self) -> None:
        clean = schema.SITE_CREATE.validate(self.body())
        collection = models.Site._get_collection()
        if collection.find_one({"_id": clean["name"]}, {"_id": 1}):
            raise ApiError(409, f"site {clean['name']!r} exists already (PATCH it)", "name")
        doc = {"_id": clean.pop("name"), **clean}
        collection.insert_one(doc)
        self.reply(document(doc, "name"), 201)


class SiteHandler(ApiHandler):
    roles = {"GET": auth.PILOT_OR_READ, "PATCH": auth.ADMIN, "DELETE": auth.ADMIN}
    doc = {"GET": {"summary": "Get a site (pilots bootstrap from it)", "response": "Site"},
           "PATCH": {"summary": "Adjust a site", "body": schema.SITE_PATCH, "response": "Site"},
           "DELETE": {"summary": "Delete a site", "response": "Deleted"}}

    def get(self, name: str) -> None:
        self.require_site(name)
        doc = models.Site._get_collection().find_one({"_id": name})
        if doc is None:
            raise not_found("site", name)
        self.reply(document(doc, "name"))

    def patch(self, name: str) -> None:
        changes = schema.SITE_PATCH.validate(self.body())
        doc = models.Site._get_collection().find_one_and_update({"_id": name}, {"$set": changes},
                                                                return_document=True)
        if doc is None:
            raise not_found("site", name)
        self.reply(document(doc, "name"))

    def delete(self, name: str) -> None:
        if models.Site._get_collection().delete_one({"_id": name}).deleted_count == 0:
            raise not_found("site", name)
        self.reply({"deleted": [name]})


class EventsHandler(ListMixin, ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.SUBMIT}
    sortable = ("ts", "kind", "severity")
    default_sort = "-ts"
    doc = {"GET": {"summary": "List events (newest first)",
                   "query": {"kind": "Kind, e.g. pilot.lost.", "severity": "info, warning or error.",
                             "job": "Job uuid.", "pilot": "Pilot uuid.", "site": "Site.",
                             "source": "Who reported it (server, injector, client…).", **LIST_QUERY},
                   "response": ("list", "Event")},
           "POST": {"summary": "Record an event (operators, injector, cron jobs)", "body": schema.EVENT_CREATE,
                    "status": 201, "response": "Event"}}

    def get(self) -> None:
        query = _eq_filters(self, {"kind": "kind", "severity": "severity", "job": "job", "pilot": "pilot",
                                   "site": "site", "source": "source"})
        self.page(models.Event._get_collection(), query, "id")

    def post(self) -> None:
        from p3s import events
        clean = schema.EVENT_CREATE.validate(self.body())
        message = clean.pop("message")
        doc = events.record(clean.pop("kind"), message, **clean)
        self.reply(document(doc, "id"), 201)


# --- templates and workflows ------------------------------------------------------------------
def _template_doc(doc: dict, fmt: str | None = None) -> dict:
    from p3s import dag

    out = document(doc, "key")
    if fmt in ("yaml", "graphml"):
        template = dag.Template.from_dict(doc["spec"])
        out[fmt] = template.to_yaml() if fmt == "yaml" else template.to_graphml()
    return out


class TemplatesHandler(ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.SUBMIT}
    doc = {"GET": {"summary": "List DAG templates (latest version of each)", "response": ("items", "DagTemplate")},
           "POST": {"summary": "Add a DAG template (YAML or the original GraphML); validated, stored by name",
                    "body": schema.TEMPLATE_ADD, "status": 201, "response": "DagTemplate"}}

    def get(self) -> None:
        self.reply({"items": [document(d, "key") for d in self.server.templates.listing()]})

    def post(self) -> None:
        body = schema.TEMPLATE_ADD.validate(self.body())
        if (body["yaml"] is None) == (body["graphml"] is None):
            raise invalid("yaml", "give the template as exactly one of yaml or graphml")
        self.reply(_template_doc(self.server.templates.add(body, self.user)), 201)


class TemplateHandler(ApiHandler):
    roles = {"GET": auth.READ, "DELETE": auth.ADMIN}
    doc = {"GET": {"summary": "Get a template; ?format=yaml or graphml adds its text (export)",
                   "query": {"version": "Version (default: latest).", "format": "yaml or graphml."},
                   "response": "DagTemplate"},
           "DELETE": {"summary": "Delete a template no workflow uses (all its versions)", "response": "Deleted"}}

    def get(self, name: str) -> None:
        version = self.query_int("version")
        fmt = self.arg("format")
        if fmt not in (None, "yaml", "graphml", "json"):
            raise invalid("format", f"must be yaml, graphml or json, got {fmt!r}")
        self.reply(_template_doc(self.server.templates.get(name, version or None), fmt))

    def delete(self, name: str) -> None:
        self.reply({"deleted": self.server.templates.delete(name)})


WORKFLOW_FILTERS = {"state": "Comma-separated states.", "template": "Template name.", "user": "Owner.",
                    "q": "Text in the workflow name."}
JOB_BRIEF_FIELDS = {"vertex": 1, "state": 1, "jobtype": 1, "exit_code": 1, "pilot": 1, "host": 1, "ts_sta": 1,
                    "ts_sto": 1, "noop": 1, "children": 1, "error": 1, "name": 1}


class WorkflowsHandler(ListMixin, ApiHandler):
    roles = {"GET": auth.READ, "POST": auth.SUBMIT}
    sortable = ("ts_def", "ts_sta", "ts_sto", "state", "name", "template")
    default_sort = "-ts_def"
    doc = {"GET": {"summary": "List workflows", "query": {**WORKFLOW_FILTERS, **LIST_QUERY},
                   "response": ("list", "Workflow")},
           "POST": {"summary": "Instantiate a template: the workflow, its jobs and data, all or none",
                    "body": schema.WORKFLOW_CREATE, "status": 201, "response": "Workflow"}}

    def get(self) -> None:
        query = _eq_filters(self, {"template": "template", "user": "user"})
        wanted = _states_arg(self.arg("state"), states.WORKFLOW_STATES)
        if wanted:
            query["state"] = {"$in": wanted}
        if self.arg("q") is not None:
            query["name"] = {"$regex": re.escape(self.arg("q")), "$options": "i"}
        self.page(self.server.workflows.collection, query, "uuid")

    def post(self) -> None:
        body = schema.WORKFLOW_CREATE.validate(self.body())
        self.reply(document(self.server.workflows.instantiate(body, self.user)), 201)


class WorkflowHandler(ApiHandler):
    roles = {"GET": auth.READ, "DELETE": auth.SUBMIT}
    doc = {"GET": {"summary": "Get a workflow with its jobs, data files and DAG edges", "response": "WorkflowDetail"},
           "DELETE": {"summary": "Delete a workflow with its jobs and data (none may be running)",
                      "response": "Deleted"}}

    def get(self, uuid: str) -> None:
        workflow = self.server.workflows.get(uuid)
        out = document(workflow)
        out["jobs"] = [document(j) for j in self.server.jobs.collection.find({"workflow": uuid}, JOB_BRIEF_FIELDS)]
        out["data"] = [document(d) for d in models.DataFile._get_collection().find({"workflow": uuid})]
        self.reply(out)

    def delete(self, uuid: str) -> None:
        self.require_owner(self.server.workflows.get(uuid), "workflow", uuid)
        self.server.workflows.delete(uuid)
        self.reply({"deleted": [uuid]})


class WorkflowStartHandler(ApiHandler):
    roles = {"POST": auth.SUBMIT}
    doc = {"POST": {"summary": "Start a workflow created in state template", "response": "Workflow"}}

    def post(self, uuid: str) -> None:
        self.require_owner(self.server.workflows.get(uuid), "workflow", uuid)
        self.reply(document(self.server.workflows.start(uuid)))


class WorkflowCancelHandler(ApiHandler):
    roles = {"POST": auth.SUBMIT}
    doc = {"POST": {"summary": "Cancel a workflow: waiting jobs cancelled, running ones killed via their pilots",
                    "response": "Workflow", "status": 202}}

    def post(self, uuid: str) -> None:
        self.require_owner(self.server.workflows.get(uuid), "workflow", uuid)
        self.reply(document(self.server.workflows.cancel(uuid, self.user)), 202)


class SummaryHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Counts of jobs and pilots by state, from counters the server keeps",
                   "response": "Summary"}}

    def get(self) -> None:
        faults.stall_point()
        self.reply({**self.server.summary(), "freshness": self.server.freshness.report()})


class StatusHandler(ApiHandler):
    roles = {"GET": auth.PUBLIC}
    doc = {"GET": {"summary": "Liveness and version (no token needed)", "response": "Status"}}

    def get(self) -> None:
        self.reply({"status": "ok", "version": __version__, "database": self.server.db.description,
                    "database_state": self.server.database_status(), "auth": not self.server.authenticator.disabled})


class OpenApiHandler(ApiHandler):
    roles = {"GET": auth.PUBLIC}
    doc = {"GET": {"summary": "This API described in OpenAPI 3", "response": "OpenAPI"}}

    def get(self) -> None:
        from p3s.server.openapi import build
        self.reply(build(self.server.api_routes))


ROUTES: list[tuple[str, type[ApiHandler]]] = [
    ("/jobs", JobsHandler),
    ("/jobs/{uuid}", JobHandler),
    ("/jobs/{uuid}/kill", JobKillHandler),
    ("/jobtypes", JobTypesHandler),
    ("/jobtypes/{name}", JobTypeHandler),
    ("/pilots", PilotsHandler),
    ("/pilots/kill", PilotsKillHandler),
    ("/pilots/{uuid}", PilotHandler),
    ("/pilots/{uuid}/request", PilotRequestHandler),
    ("/pilots/{uuid}/events", PilotEventsHandler),
    ("/pilots/{uuid}/kill", PilotKillHandler),
    ("/data", DataListHandler),
    ("/data/{uuid}", DataHandler),
    ("/datatypes", DataTypesHandler),
    ("/datatypes/{name}", DataTypeHandler),
    ("/sites", SitesHandler),
    ("/sites/{name}", SiteHandler),
    ("/templates", TemplatesHandler),
    ("/templates/{name}", TemplateHandler),
    ("/workflows", WorkflowsHandler),
    ("/workflows/{uuid}", WorkflowHandler),
    ("/workflows/{uuid}/start", WorkflowStartHandler),
    ("/workflows/{uuid}/cancel", WorkflowCancelHandler),
    ("/events", EventsHandler),
    ("/summary", SummaryHandler),
    ("/status", StatusHandler),
    ("/openapi.json", OpenApiHandler),
]


def url_specs(server: Any, routes: list) -> list:
    """Tornado URL specs for ``routes``: ``{uuid}`` becomes a named group passed as ``uuid=``."""
    return [(API_PREFIX + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$", handler, {"server": server})
            for path, handler in routes]
