"""API routes of the control room: alarm acknowledgements, hosts (black holes, drain, clear), the
errors view, and bulk actions on jobs (rerun, kill). Mounted under /api/v1 and described in the
same OpenAPI document."""
from __future__ import annotations

import json
from typing import Any

from p3s import actions, auth, diagnosis
from p3s.errors import ApiError, invalid
from p3s.schema import Body, Field, state_pattern
from p3s.server.base import ApiHandler, jsonable
from p3s.server.handlers import JOB_FILTERS, job_query
from p3s.server.openapi import EXTRA_SCHEMAS
from p3s.web import alarms, loginlink

ALARM_ACK = Body("AlarmAck", (
    Field("alarm", "str", "The alarm's key (e.g. failure_rate:reco).", required=True, max_length=300),
    Field("reason", "str", "Why it is silenced (shown to everyone).", required=True, max_length=500,
          pattern=r"^[^\u0000]*[^\s\u0000][^\u0000]*$"),
    Field("minutes", "int", "How long it stays silenced.", minimum=1, maximum=alarms.MAX_ACK_MINUTES, default=60),
))
ALARM_UNACK = Body("AlarmUnack", (Field("alarm", "str", "The alarm's key.", required=True, max_length=300),))
HOST_DRAIN = Body("HostDrain", (Field("reason", "str", "Why (shown on the hosts view).", default="", max_length=500),))
BULK = Body("BulkJobs", (
    Field("dry_run", "bool", "Only count the jobs that match (for a confirmation).", default=False),
))

SCHEMAS: dict[str, dict] = {
    "AlarmList": {"type": "object", "properties": {
        "firing": {"type": "integer", "description": "Firing and not silenced."},
        "silenced": {"type": "integer"}, "as_of": {"type": "string", "format": "date-time"},
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Alarm"}}}},
    "Alarm": {"type": "object", "properties": {
        "key": {"type": "string"}, "name": {"type": "string"}, "checks": {"type": "string"},
        "status": {"type": "string", "enum": ["ok", "alarm"]}, "value": {}, "threshold": {"type": "string"},
        "message": {"type": "string"}, "since": {"type": "string", "format": "date-time", "nullable": True},
        "silenced": {"type": "boolean"},
        "ack": {"type": "object", "nullable": True, "properties": {
            "by": {"type": "string"}, "reason": {"type": "string"},
            "at": {"type": "string", "format": "date-time"}, "until": {"type": "string", "format": "date-time"}}}}},
    "HostList": {"type": "object", "properties": {"items": {"type": "array", "items": {
        "$ref": "#/components/schemas/Host"}}}},
    "Host": {"type": "object", "properties": {
        "host": {"type": "string"}, "streak": {"type": "integer"}, "flagged": {"type": "boolean"},
        "drained": {"type": "boolean"}, "since": {"type": "string", "nullable": True},
        "by": {"type": "string", "nullable": True}, "reason": {"type": "string", "nullable": True},
        "recent_ok": {"type": "integer"}, "recent_bad": {"type": "integer"},
        "last_end": {"type": "string", "nullable": True}, "last_job": {"type": "string", "nullable": True},
        "pilots": {"type": "object"}}},
    "ErrorGroups": {"type": "object", "properties": {
        "since": {"type": "string", "format": "date-time"}, "seconds": {"type": "integer"},
        "by": {"type": "array", "items": {"type": "string"}}, "total": {"type": "integer"},
        "truncated": {"type": "boolean"}, "items": {"type": "array", "items": {"type": "object"}}}},
    "BulkResult": {"type": "object", "properties": {
        "matched": {"type": "integer"}, "done": {"type": "array", "items": {"type": "string"}},
        "skipped": {"type": "array", "items": {"type": "object"}}}},
}
EXTRA_SCHEMAS.update(SCHEMAS)
EXTRA_SCHEMAS.update(loginlink.SCHEMAS)


def alarm_list(server: Any) -> dict:
    items = server.alarms.check()
    return jsonable({"items": items, **alarms.summary(items), "as_of": server.alarms.as_of})


class AlarmsHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Every alarm rule's findings, firing first: what it checks, value, threshold, "
                              "since when it fires, acknowledgement", "response": "AlarmList"}}

    def get(self) -> None:
        self.reply(alarm_list(self.server))


class AlarmAckHandler(ApiHandler):
    roles = {"POST": auth.READ}
    doc = {"POST": {"summary": "Silence an alarm for some minutes, saying why (shown to all, stored)",
                    "body": ALARM_ACK, "response": "Alarm"}}

    def post(self) -> None:
        body = ALARM_ACK.validate(self.body())
        self.reply(jsonable(self.server.alarms.acknowledge(body["alarm"], self.user or self.role or "?",
                                                           body["reason"], body["minutes"])))


class AlarmUnackHandler(ApiHandler):
    roles = {"POST": auth.READ}
    doc = {"POST": {"summary": "Withdraw an alarm's acknowledgement", "body": ALARM_UNACK, "response": "Alarm"}}

    def post(self) -> None:
        body = ALARM_UNACK.validate(self.body())
        self.reply(jsonable(self.server.alarms.unacknowledge(body["alarm"], self.user or self.role or "?")))


def live_pilots_by_host(server: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for info in server.registry.pilots.values():
        counts = out.setdefault(info.host, {})
        counts[info.state] = counts.get(info.state, 0) + 1
    return out


class HostsHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Worker hosts seen lately: live pilots, recent job outcomes, run of "
                              "unsuccessful jobs, black-hole flag and drain", "response": "HostList"}}

    def get(self) -> None:
        self.reply(jsonable({"items": self.server.hosts.listing(live_pilots_by_host(self.server))}))


class HostClearHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": "Clear a host's black-hole flag and drain: its pilots get work again",
                    "response": "Host"}}

    def post(self, host: str) -> None:
        self.reply(jsonable(self.server.hosts.clear(host, self.user or "admin")))


class HostDrainHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": "Drain a host: its pilots get no new work until it is cleared",
                    "body": HOST_DRAIN, "response": "Host"}}

    def post(self, host: str) -> None:
        body = HOST_DRAIN.validate(self.object_body(optional=True))
        self.server.hosts.drain(host, self.user or "admin", body["reason"])
        self.reply(jsonable(self.server.hosts.row(host)))


class ErrorsHandler(ApiHandler):
    roles = {"GET": auth.READ}
    query_schemas = {"by": {"type": "string", "pattern": state_pattern(diagnosis.GROUPINGS)}}
    doc = {"GET": {"summary": "Unsuccessful jobs of the last hour (or ?hours=N), grouped by job type, end state "
                              "and the ?by= fields (exit_code, error_line, host), with example jobs "
                              "(the failed jobs are read at most every 5 s, for every query)",
                   "query": {"hours": "Window in hours (1–168, default 1).",
                             "by": "Comma-separated: exit_code, error_line, host (default exit_code,host).",
                             "jobtype": "Only this job type."},
                   "response": "ErrorGroups"}}

    async def get(self) -> None:
        hours = self.query_int("hours")
        by = tuple(b.strip() for b in (self.arg("by") or "exit_code,host").split(",") if b.strip())
        for b in by:
            if b not in diagnosis.GROUPINGS:
                raise invalid("by", f"cannot group by {b!r} (choose from {', '.join(diagnosis.GROUPINGS)})")
        by = tuple(dict.fromkeys(by))           # a field named twice is grouped by once
        # One read of the failed jobs (p3s.failures) serves every window and grouping for a few
        # seconds; what is grouped from it is kept per query while that read serves.
        text = await self.server.failure_reads.view(hours, by, self.arg("jobtype"),
                                                    lambda view: json.dumps(jsonable(view)))
        self.set_status(200)
        self.finish(text)


class _Bulk(ApiHandler):
    roles = {"POST": auth.ADMIN}
    action: Any = None

    async def post(self) -> None:
        body = BULK.validate(self.object_body(optional=True))
        query = job_query(self)
        if not query:
            raise invalid("query", "give a filter (state, jobtype, user, workflow, site, pilot, host, q)")
        self.reply(await type(self).action(self.server.jobs, query, self.user or "admin", body["dry_run"]))


class JobsRerunHandler(_Bulk):
    action = staticmethod(actions.rerun)
    query_schemas = {"state": {"type": "string", "pattern": state_pattern(actions.RERUNNABLE)}}
    doc = {"POST": {"summary": "Rerun every unsuccessful or cancelled job matching the filter, as a new attempt "
                               "(workflow jobs are skipped: resume the workflow); dry_run only counts",
                    "query": JOB_FILTERS, "body": BULK, "response": "BulkResult",
                    "x-requires-one-of": list(JOB_FILTERS)}}


class JobsKillHandler(_Bulk):
    action = staticmethod(actions.kill)
    query_schemas = {"state": {"type": "string", "pattern": state_pattern(actions.KILLABLE)}}
    doc = {"POST": {"summary": "Kill every job matching the filter: waiting ones cancelled, dispatched and "
                               "running ones stopped by their pilots; dry_run only counts",
                    "query": JOB_FILTERS, "body": BULK, "response": "BulkResult",
                    "x-requires-one-of": list(JOB_FILTERS)}}


class JobRerunHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": "Rerun one unsuccessful or cancelled job as a new attempt", "response": "BulkResult"}}

    async def post(self, uuid: str) -> None:
        job = self.server.jobs.get(uuid)
        if job["state"] not in actions.RERUNNABLE:
            raise ApiError(409, f"job {uuid} is {job['state']}; only {', '.join(sorted(actions.RERUNNABLE))} "
                                "jobs can be rerun", "state")
        result = await actions.rerun(self.server.jobs, {"_id": uuid}, self.user or "admin")
        if not result["done"]:
            raise ApiError(409, result["skipped"][0]["reason"] if result["skipped"] else f"job {uuid} changed meanwhile")
        self.reply(result)


ROUTES = [
    ("/alarms", AlarmsHandler),
    ("/alarms/ack", AlarmAckHandler),
    ("/alarms/unack", AlarmUnackHandler),
    ("/hosts", HostsHandler),
    ("/hosts/{host}/clear", HostClearHandler),
    ("/hosts/{host}/drain", HostDrainHandler),
    ("/errors", ErrorsHandler),
    ("/jobs/rerun", JobsRerunHandler),
    ("/jobs/kill", JobsKillHandler),
    ("/jobs/{uuid}/rerun", JobRerunHandler),
]
