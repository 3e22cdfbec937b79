"""The OpenAPI 3 document, built from the route table, the handlers' ``doc`` and ``roles``, the
request schemas of ``p3s.schema`` and the stored documents of ``p3s.models``."""
from __future__ import annotations

import functools
import re
from typing import Any

import mongoengine as me

from p3s import API_PREFIX, __version__, auth, models, schema, states

# Response schemas of routes defined outside p3s.server (the monitor's, the control room's).
EXTRA_SCHEMAS: dict[str, dict] = {}
ERRORS = {400: "Malformed JSON or request",
          401: "Missing, unknown or revoked token: a pilot's credential is revoked once its pilot has stopped or "
               "been declared lost, and the message says which",
          403: "Role not allowed (or, registering a pilot, its bootstrap token's site or max_pilots)",
          404: "Not found", 409: "Conflicts with the current state", 413: "Body too large",
          422: "Wrong, missing or unknown field"}


def _field_schema(field: me.fields.BaseField) -> dict:
    if isinstance(field, me.IntField):
        out: dict[str, Any] = {"type": "integer"}
    elif isinstance(field, me.BooleanField):
        out = {"type": "boolean"}
    elif isinstance(field, me.DateTimeField):
        out = {"type": "string", "format": "date-time"}
    elif isinstance(field, me.DictField):
        out = {"type": "object"}
    elif isinstance(field, me.ListField):
        out = {"type": "array", "items": _field_schema(field.field) if field.field else {}}
    else:
        out = {"type": "string"}
    if getattr(field, "null", False) or not isinstance(field, (me.ListField, me.DictField)):
        out["nullable"] = True
    return out


def _model_schema(model: type[me.Document], key: str) -> dict:
    props: dict[str, Any] = {key: {"type": "string"}}
    for name, field in model._fields.items():
        if name in ("id", model._meta.get("id_field")) or field.db_field == "_id":
            continue
        props[field.db_field] = _field_schema(field)
    return {"type": "object", "properties": props, "required": [key]}


def _list_of(ref: str) -> dict:
    return {"type": "object", "required": ["total", "offset", "limit", "items"],
            "properties": {"total": {"type": "integer"}, "offset": {"type": "integer"},
                           "limit": {"type": "integer"}, "items": {"type": "array", "items": _ref(ref)}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _components() -> dict:
    strings = {"type": "array", "items": {"type": "string"}}
    job_for_pilot = {"type": "object", "properties": {
        "uuid": {"type": "string"}, "name": {"type": "string"}, "jobtype": {"type": "string"},
        "payload": {"type": "string"}, "params": {"type": "string"}, "env": {"type": "object"},
        "timelimit": {"type": "integer"}, "priority": {"type": "integer"},
        "workflow": {"type": "string", "nullable": True}, "input_file": {"type": "string"}}}
    instructions = {"kill": {"type": "boolean"}, "kill_job": {"type": "string", "nullable": True}}
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "Job": _model_schema(models.Job, "uuid"),
        "Pilot": _model_schema(models.Pilot, "uuid"),
        "DataFile": _model_schema(models.DataFile, "uuid"),
        "DataType": _model_schema(models.DataType, "name"),
        "Site": _model_schema(models.Site, "name"),
        "Event": _model_schema(models.Event, "id"),
        "DagTemplate": {**_model_schema(models.DagTemplate, "key"), "description": "With ?format=yaml or "
                        "graphml, the text is under that key too."},
        "Workflow": _model_schema(models.Workflow, "uuid"),
        "WorkflowDetail": {"allOf": [_ref("Workflow"), {"type": "object", "properties": {
            "jobs": {"type": "array", "items": {"type": "object"}},
            "data": {"type": "array", "items": _ref("DataFile")}}}]},
        "JobType": {"type": "object", "properties": {
            "name": {"type": "string"}, "limit": {"type": "integer", "nullable": True},
            "comment": {"type": "string"}, "active": {"type": "integer"}, "defined": {"type": "integer"},
            "eta": {"type": "integer", "nullable": True}, "order": {"type": "string", "enum": ["fifo", "newest-first"]},
            "stale": {"type": "boolean"}, "stop_running": {"type": "boolean"}, "shed": {"type": "boolean"},
            "alarm_within_eta": {"type": "number", "nullable": True}}},
        "Freshness": {"type": "object", "required": ["types", "workflows", "injector_dropped"], "properties": {
            "types": {"type": "object", "description": "Per job type: policy, priority, backlog, runtime_s, "
                      "predicted_wait_s (-1: unbounded), windows {10m, 1h, 24h}: done, within_eta, "
                      "share_within_eta, turnaround_p50_s, turnaround_p95_s, dropped {stale, shed}."},
            "workflows": {"type": "object"}, "injector_dropped": {"type": "object"}}},
        "Admission": {"type": "object", "required": ["admit"], "properties": {
            "admit": {"type": "boolean"}, "reason": {"type": "string", "nullable": True},
            "jobtype": {"type": "string", "nullable": True}}},
        "Outputs": {"type": "object", "properties": {
            "job": {"type": "string"}, "output_dir": {"type": "string", "nullable": True},
            "readable": {"type": "boolean"}, "files": {"type": "array", "items": {"type": "object"}},
            "summary": {"nullable": True}, "data": {"type": "array", "items": {"type": "object"}},
            "age_s": {"type": "number", "nullable": True}}},
        "LatestResults": {"type": "object", "properties": {"items": {"type": "array", "items": _ref("Outputs")}}},
        "Summary": {"type": "object", "properties": {
            "jobs": counts, "jobs_total": {"type": "integer"}, "jobs_by_type": {"type": "object"},
            "pilots": counts, "pilots_total": {"type": "integer"}, "pilots_by_site": {"type": "object"},
            "queue": {"type": "object"}, "server": {"type": "object"}, "freshness": _ref("Freshness")}},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}, "version": {"type": "string"},
                                                    "database": {"type": "string"}, "auth": {"type": "boolean"},
                                                    "database_state": {"type": "object", "properties": {
                                                        "state": {"type": "string", "enum": ["ok", "unreachable"]},
                                                        "waiting_calls": {"type": "integer"},
                                                        "longest_wait": {"type": "number"},
                                                        "error": {"type": "string", "nullable": True}}}}},
        "Deleted": {"type": "object", "properties": {"deleted": strings}},
        "Killed": {"type": "object", "properties": {"killed": strings}},
        "Registration": {"type": "object", "properties": {
            "pilot": _ref("Pilot"), "settings": {"type": "object"},
            "credential": {"type": "string", "description": "The pilot's own bearer token for its /pilots/{uuid}/… "
                                                            "routes (shown only here; stored hashed). It authenticates "
                                                            "only while the pilot is alive: once the pilot has stopped "
                                                            "or been declared lost, every call with it is answered 401 "
                                                            "(field `pilot`) saying so, and the pilot must stop."}}},
        "Instructions": {"type": "object", "properties": {**instructions, "stopped": {"type": "boolean"}}},
        "JobForPilot": job_for_pilot,
        "JobOffer": {"type": "object", "properties": {
            "job": {"allOf": [_ref("JobForPilot")], "nullable": True}, **instructions,
            "report_refused": {"type": "string", "description": "Why the reported event was not taken."}}},
        "PilotRequest": {"type": "object", "additionalProperties": False, "properties": {
            **schema.PILOT_REQUEST.openapi()["properties"],
            "report": {"allOf": [_ref("PilotEvent")], "description": "An event to report first "
                                                                   "(e.g. the jobstop of the last job)."}}},
        "OpenAPI": {"type": "object"},
        "Stats": {"type": "object", "properties": {
            "windows": {"type": "object", "description": "1m, 10m, 1h, 24h: {total, by_type}: counts by event."},
            "series": {"type": "array", "items": {"type": "object"}, "description": "Per minute: t, finished, "
                       "started, failed, wait_p50_s, wait_p95_s, latency_p50_s, latency_p95_s (seconds)."},
            "limits": {"type": "object"}, "summary": _ref("Summary")}},
        "WhoAmI": {"type": "object", "properties": {"role": {"type": "string"}, "name": {"type": "string"},
                                                    "auth": {"type": "boolean"},
                                                    "address": {"type": "string", "description": "The caller's "
                                                                "address (from trusted_proxies' headers only)."}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                           "field": {"type": "string", "nullable": True}}}}},
    }


def _body_schema(spec: Any, schemas: dict) -> dict:
    if isinstance(spec, str):
        return _ref(spec)
    many = False
    if isinstance(spec, tuple):
        _kind, spec = spec
        many = True
    schemas[spec.title] = spec.openapi()
    if many:
        # anyOf: an object is never a list, and anyOf is much cheaper to generate examples from
        return {"anyOf": [_ref(spec.title), {"type": "array", "items": _ref(spec.title), "minItems": 1}]}
    return _ref(spec.title)


def _response_schema(spec: Any) -> dict:
    if isinstance(spec, tuple):
        kind, name = spec
        if kind == "list":
            return _list_of(name)
        return {"type": "object", "properties": {"items": {"type": "array", "items": _ref(name)}}}
    return _ref(spec)


# The states a route's ``state`` filter takes, by the first part of its path.
ROUTE_STATES = {"jobs": states.JOB_STATES, "pilots": states.PILOT_STATES, "workflows": states.WORKFLOW_STATES}


def _query_schema(name: str, path: str, handler: Any) -> dict:
    """A query parameter's schema, from the same tables the handlers check it with."""
    own = getattr(handler, "query_schemas", {})
    if name in own:
        return dict(own[name])
    if name in schema.QUERY_FIELDS:
        out = schema.QUERY_FIELDS[name].openapi()
        out.pop("description", None)
        return out
    if name == "sort" and getattr(handler, "sortable", None):
        fields = (*handler.sortable, "_id")
        return {"type": "string", "enum": [*fields, *(f"-{f}" for f in fields)]}
    allowed = ROUTE_STATES.get(path.strip("/").split("/")[0])
    if name == "state" and allowed:
        return {"type": "string", "pattern": schema.state_pattern(allowed)}
    return {"type": "string"}


# Path parameters whose values the handlers check against a fixed set.
PATH_CHOICES = {"stream": ("out", "err")}


def _path_schema(name: str) -> dict:
    if name == "name":
        return {"type": "string", "pattern": schema.NAME_RE.pattern}
    if name in PATH_CHOICES:
        return {"type": "string", "enum": list(PATH_CHOICES[name])}
    return {"type": "string"}


@functools.lru_cache(maxsize=4)
def _build(routes: tuple) -> dict:
    schemas = _components()
    paths: dict[str, Any] = {}
    for path, handler in routes:
        item: dict[str, Any] = {}
        params = re.findall(r"\{(\w+)\}", path)
        if params:
            item["parameters"] = [{"name": p, "in": "path", "required": True, "schema": _path_schema(p)}
                                  for p in params]
        for method, roles in handler.roles.items():
            doc = handler.doc[method]
            status = str(doc.get("status", 200))
            op: dict[str, Any] = {
                "summary": doc["summary"],
                "operationId": f"{method.lower()}_{re.sub(r'[^a-z]+', '_', path.lower()).strip('_')}",
                "tags": [path.strip("/").split("/")[0]],
                "responses": {status: {"description": "Success", "content": {
                    "application/json": {"schema": _response_schema(doc["response"])}}}},
            }
            if roles is auth.PUBLIC:
                op["security"] = []
            else:
                op["description"] = f"Roles: {', '.join(sorted(roles))}."
            for name, help_ in doc.get("query", {}).items():
                op.setdefault("parameters", []).append(
                    {"name": name, "in": "query", "required": False, "description": help_,
                     "schema": _query_schema(name, path, handler)})
            # Rules OpenAPI 3.0 cannot say (e.g. x-requires-one-of: the query parameters of which at
            # least one must be given, "name=value" for one that must have that value).
            op.update({k: v for k, v in doc.items() if k.startswith("x-")})
            if "body" in doc:
                op["requestBody"] = {"required": doc["body"] != "PilotRequest", "content": {
                    "application/json": {"schema": _body_schema(doc["body"], schemas)}}}
            for code, text in ERRORS.items():
                if code in (401, 403) and roles is auth.PUBLIC:
                    continue
                op["responses"][str(code)] = {"description": text, "content": {
                    "application/json": {"schema": _ref("Error")}}}
            item[method.lower()] = op
        paths[API_PREFIX + path] = item
    schemas.setdefault("PilotEvent", schema.PILOT_EVENT.openapi())
    for name, extra in EXTRA_SCHEMAS.items():
        schemas.setdefault(name, extra)
    return {
        "openapi": "3.0.3",
        "info": {"title": "p3s API", "version": __version__,
                 "description": "Jobs, pilots, data and sites of the p3s prompt-processing system. "
                                f"Job states: {', '.join(states.JOB_STATES)}. "
                                f"Pilot states: {', '.join(states.PILOT_STATES)}."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def build(routes: list) -> dict:
    """The OpenAPI document for ``routes`` (a list of (path template, handler class))."""
    return _build(tuple(routes))
