"""What pilots do through the server: register, ask for work, report, and get told to stop.

The live pilots are also kept in memory (``Registry``) so that matching, kill delivery and the
reaper need no query; their contacts are written in batches (``p3s.contacts``), and so are the
usage samples of their jobs' heartbeats (``p3s.usage``).
"""
from __future__ import annotations

import datetime as _dt
import logging
import uuid as _uuid
from typing import Any

from tornado.ioloop import IOLoop

from p3s import events, faults, models, schema, states
from p3s.admission import PilotGate
from p3s.broker import Broker, PilotInfo
from p3s.contacts import Contacts
from p3s.auth import Identity
from p3s.config import Config
from p3s.credentials import PILOT as PILOT_CREDENTIAL, CredentialStore
from p3s.errors import ApiError, invalid, not_found
from p3s.fastpath import ByIdCollection
from p3s.lifecycle import Lifecycle, equals, pilot_filter
from p3s.models import utcnow
from p3s.states import IllegalTransition
from p3s.usage import UsageBuffer

log = logging.getLogger("p3s.pilots")

# The part of a job a pilot needs to run it.
JOB_FOR_PILOT = ("name", "jobtype", "payload", "params", "env", "timelimit", "priority", "workflow", "input_file")
# What a job request's offer adds: the attempt, which the pilot echoes so a repeated report is recognised.
JOB_OFFER_FIELDS = {k: 1 for k in (*JOB_FOR_PILOT, "state", "pilot", "attempts")}

def _from_epoch(value: float | None) -> _dt.datetime | None:
    if value is None:
        return None
    moment = _dt.datetime.fromtimestamp(value, _dt.timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Registry:
    """The live pilots, by uuid, as the broker and the reaper see them."""

    def __init__(self) -> None:
        self.pilots: dict[str, PilotInfo] = {}

    def load(self) -> None:
        """Load live pilots; each gets a fresh grace period (the server may have been down).

        A pilot's current job is read from the jobs (the claim wrote the owner there), never from
        the pilot's own document, which a crash may have left behind.
        """
        now = IOLoop.current().time()
        held = {doc["pilot"]: doc["_id"] for doc in models.Job._get_collection().find(
            {"state": {"$in": sorted(states.JOB_ACTIVE)}}, {"pilot": 1}) if doc.get("pilot")}
        self.pilots = {}
        for doc in models.Pilot._get_collection().find({"state": {"$in": sorted(states.PILOT_ALIVE)}}):
            self.pilots[doc["_id"]] = self._info(doc, now, held.get(doc["_id"]))

    @staticmethod
    def held_job(uuid: str) -> str | None:
        """The job the database says pilot ``uuid`` holds (dispatched to it or running on it)."""
        doc = models.Job._get_collection().find_one(
            {"pilot": uuid, "state": {"$in": sorted(states.JOB_ACTIVE)}}, {"_id": 1})
        return doc["_id"] if doc else None

    @staticmethod
    def _info(doc: dict, now: float, job: str | None) -> PilotInfo:
        return PilotInfo(uuid=doc["_id"], host=doc.get("host", ""), site=doc.get("site", ""),
                         jobtypes=frozenset(doc.get("jobtypes") or ()), state=doc["state"], last_seen=now,
                         job=job, kill=bool(doc.get("kill_requested")),
                         kill_job=doc.get("kill_job") if job and doc.get("kill_job") == job else None)

    def get(self, uuid: str) -> PilotInfo:
        """The live pilot ``uuid``; 404 if unknown, 409 if it has stopped or been declared lost."""
        info = self.pilots.get(uuid)
        if info is not None:
            return info
        doc = models.Pilot._get_collection().find_one({"_id": uuid})
        if doc is None:
            raise not_found("pilot", uuid)
        if doc["state"] not in states.PILOT_ALIVE:
            raise ApiError(409, f"pilot {uuid} is {doc['state']}; it must stop (register anew to work again)", "pilot")
        info = self.pilots[uuid] = self._info(doc, IOLoop.current().time(), self.held_job(uuid))
        return info

    def forget(self, uuid: str) -> None:
        self.pilots.pop(uuid, None)

    def record(self, uuid: str) -> dict | None:
        """Pilot ``uuid``'s state (and why it ended): from memory while it is alive here, else read
        (what authenticates its credential, p3s.auth); None when it has no record."""
        info = self.pilots.get(uuid)
        if info is not None:
            return {"state": info.state}
        return models.Pilot._get_collection().find_one({"_id": uuid}, {"state": 1, "reason": 1})


class PilotService:
    """Registration, job requests, reports and kill requests of pilots."""

    def __init__(self, lifecycle: Lifecycle, broker: Broker, registry: Registry, config: Config) -> None:
        self.lifecycle, self.broker, self.registry, self.config = lifecycle, broker, registry, config
        self.collection = ByIdCollection(models.Pilot._get_collection())
        self.jobs = ByIdCollection(models.Job._get_collection())
        self.credentials: CredentialStore | None = None     # set by the server once the store is open
        self.admission: PilotGate | None = None              # max_pilots of bootstrap tokens (p3s.admission)
        self.contacts = Contacts(lifecycle, registry)
        self.usage = UsageBuffer(self.jobs, config.usage_points, self._refused_usage)
        lifecycle.listeners.append(self.usage)

    def flush(self) -> None:
        """Write what is kept in memory: the jobs' usage samples, then the pilots' contacts."""
        self.usage.flush(self.registry.pilots)
        self.contacts.flush()

    # --- registration -------------------------------------------------------------------------
    def register(self, body: dict, who: Identity | None = None) -> tuple[dict, str]:
        """Register a pilot; returns its document and its credential (the only time it is shown).

        A bootstrap token limited to a site registers pilots of that site only, and no more than
        its ``max_pilots`` live at once. A live uuid is never registered again, except by the same
        pilot retrying (it proves that with the same ``key``)."""
        who = who or Identity("admin", "admin")
        key = body.get("key")
        if key is not None and len(key) < 32:
            raise invalid("key", "must be at least 32 characters (a random secret)")
        site = body["site"]
        if who.role == "pilot" and who.site is not None:
            if site and site != who.site:
                raise ApiError(403, f"this pilot token registers pilots of site {who.site!r} only, not {site!r}",
                               "site")
            site = who.site
        now = utcnow()
        uuid = body.get("uuid") or str(_uuid.uuid4())
        credentials = self.credentials
        existing = self.collection.find_one({"_id": uuid}, {"state": 1})
        if existing is not None:
            if existing["state"] not in states.PILOT_ALIVE:
                raise ApiError(409, f"pilot {uuid} is {existing['state']}; a pilot id cannot be reused", "uuid")
            if key is None or credentials is None or not credentials.owns(key, pilot=uuid):
                raise ApiError(409, f"pilot {uuid} is registered and alive; it cannot be registered again", "uuid")
            doc = self.collection.find_one({"_id": uuid})   # a retried registration: same pilot, same key
            credential = key
        else:
            limited = who.role == "pilot" and who.max_pilots is not None and self.admission is not None
            took = limited and self.admission.take(who.name, who.max_pilots, uuid)   # 403 at the limit
            faults.crash_point("pilot_admitted")
            doc = {"_id": uuid, "host": body["host"], "site": site, "pid": body["pid"],
                   "extra": body["extra"], "jobtypes": body["jobtypes"], "version": body["version"],
                   "state": states.IDLE, "job": None, "njobs": 0, "kill_requested": False, "kill_job": None,
                   "ts_reg": now, "ts_lhb": now, "ts_stop": None, "usage": {}, "reason": None,
                   "registrar": who.name}
            # The credential is written first: interrupted before the pilot's record, a retry with
            # the same key finds it bound to this uuid and goes on.
            credential = key or ""
            try:
                if credentials is not None:
                    if key is not None and credentials.taken(key):
                        if not credentials.owns(key, pilot=uuid):
                            raise ApiError(409, "that key is already in use; choose a fresh random one", "key")
                    else:
                        credential = credentials.issue(PILOT_CREDENTIAL, key, pilot=uuid, site=site)
                self.lifecycle.insert_pilot(doc)
            except BaseException:
                if took:
                    self.admission.give_back(uuid)    # a place taken by this request
                raise
            events.record("pilot.registered", f"pilot {uuid} registered on {doc['host']} (site {doc['site'] or '-'})",
                          pilot=uuid, site=doc["site"] or None)
        self.registry.pilots[uuid] = self.registry._info(
            doc, IOLoop.current().time(), self.registry.held_job(uuid) if existing is not None else None)
        return doc, credential

    def settings(self) -> dict[str, Any]:
        """Server settings a pilot follows."""
        return {"heartbeat": self.config.heartbeat, "long_poll_max": self.config.long_poll_max,
                "long_poll_wait": self.config.long_poll_wait, "pilot_lost_timeout": self.config.pilot_lost_timeout}

    # --- contact ------------------------------------------------------------------------------
    def instructions(self, pilot: PilotInfo) -> dict[str, Any]:
        return {"kill": pilot.kill, "kill_job": pilot.kill_job}

    # --- reports ------------------------------------------------------------------------------
    def report(self, uuid: str, body: dict) -> dict:
        """Handle one event from pilot ``uuid``; the reply carries any kill request."""
        pilot = self.registry.get(uuid)
        event = body["event"]
        if event == "stopped":
            self._stopped(pilot, body)
            return {"kill": False, "kill_job": None, "stopped": True}
        if event in ("heartbeat", "jobstart"):
            pilot_usage = event == "heartbeat" and not body["job"] and body["usage"]
            self.contacts.note(pilot, body["usage"] if pilot_usage else None)
            if event == "heartbeat" and not body["job"]:
                return self.instructions(pilot)
        if not body["job"]:
            raise invalid("job", f"is required with event {event}")
        handle = getattr(self, "_on_" + event)
        if event in ("heartbeat", "jobstart"):
            handle(pilot, body)
        else:
            try:
                handle(pilot, body)
            finally:
                self.contacts.note(pilot)      # the job's end frees the pilot, even when it was refused
        return self.instructions(pilot)

    def _own(self, pilot: PilotInfo, body: dict | None = None) -> dict:
        """Conditions that the job is this pilot's (and the attempt it reports, when it gives one)."""
        own = {"pilot": equals(pilot.uuid)}
        if body is not None and body.get("attempt") is not None:
            own["attempts"] = equals(body["attempt"])
        return own

    @staticmethod
    def _usage_fields(usage: dict) -> tuple[dict, dict]:
        """A usage report as ``$set`` fields of the job's summary and the ``$max`` of its peak RSS."""
        for key, value in usage.items():
            if not key.isidentifier() or isinstance(value, bool) or not isinstance(value, (int, float)):
                raise invalid(f"usage.{key}", "must be a number named by a plain identifier")
        peak = max(usage.get("peak_rss") or 0, usage.get("rss") or 0)
        return {f"usage.{k}": v for k, v in usage.items() if k != "peak_rss"}, {"usage.peak_rss": peak}

    def _holds(self, pilot: PilotInfo, job: str) -> None:
        """The pilot says it runs ``job``: any other job the server thought it held is released."""
        if pilot.job and pilot.job != job:
            self.lifecycle.release_job(pilot.job, pilot.uuid, f"pilot {pilot.uuid} runs {job} instead")
        pilot.job = job

    def _adopt(self, pilot: PilotInfo, body: dict, what: str, doc: dict | None = None) -> None:
        """A pilot runs a job the server does not record as its own (its claim was undone, e.g. by
        the dispatch timeout, while the pilot had started it). Still defined: it is the pilot's
        again (one conditional claim); otherwise the pilot is told to stop it (an explicit order)."""
        job = body["job"]
        if doc is None:
            doc = self.jobs.find_one({"_id": job}, {"state": 1, "pilot": 1, "attempts": 1})
        if doc is not None and doc["state"] == states.RUNNING and doc.get("pilot") == pilot.uuid:
            pilot.job = job               # a repeated jobstart (its reply was lost): already applied
            return
        if doc is not None and doc["state"] == states.DEFINED:
            try:
                self.lifecycle.move_job(job, states.DISPATCHED, sources={states.DEFINED},
                                        set_={"pilot": pilot.uuid, "host": pilot.host, "pilot_site": pilot.site,
                                              "ts_dis": utcnow()}, inc={"attempts": 1})
                self.lifecycle.move_job(job, states.RUNNING, where=self._own(pilot),
                                        set_={"ts_sta": _from_epoch(body["ts"]) or utcnow(), "pid": body["pid"],
                                              "log_dir": body["log_dir"], "output_dir": body["output_dir"]})
                self._holds(pilot, job)
                events.record("job.adopted", f"job {job} was given back to the queue but pilot {pilot.uuid} "
                                             f"runs it ({what}): it is that pilot's again",
                              job=job, pilot=pilot.uuid, severity="warning")
                return
            except (IllegalTransition, ApiError):
                pass
        if doc is not None and doc.get("pilot") == pilot.uuid and doc["state"] in states.JOB_ACTIVE:
            pilot.job = job
            return
        pilot.kill_job = job
        if pilot.job == job:
            pilot.job = None
        log.warning("pilot %s reports %s for job %s, which is %s (pilot %s): told to stop it", pilot.uuid, what,
                    job, doc["state"] if doc else "deleted", doc.get("pilot") if doc else None)

    def _on_heartbeat(self, pilot: PilotInfo, body: dict) -> None:
        """The sample is kept in memory (``p3s.usage``), no write; whether the job is the pilot's
        is known there, or read once: a job that is not is adopted or ordered stopped at once."""
        usage, job = body["usage"], body["job"]
        fields, peak = self._usage_fields(usage)
        sample = {"t": body["ts"] or utcnow().timestamp(), **usage}
        if not self.usage.holds(pilot.uuid, job):
            doc = self.jobs.find_one({"_id": job}, {"state": 1, "pilot": 1, "attempts": 1})
            if doc is None or doc["state"] not in states.JOB_ACTIVE or doc.get("pilot") != pilot.uuid:
                self._adopt(pilot, body, "heartbeat", doc)
                return
            self.usage.hold(pilot.uuid, job)
        if usage:          # a beat without usage (its payload's processes are gone) adds no sample
            self.usage.add(pilot.uuid, job, sample, fields, peak["usage.peak_rss"], body)
        self._holds(pilot, job)

    def _refused_usage(self, uuid: str, body: dict) -> None:
        """A flush of usage found the job no longer this pilot's: as for a heartbeat on it."""
        pilot = self.registry.pilots.get(uuid)
        if pilot is None:
            return
        self._adopt(pilot, body, "heartbeat")
        self.contacts.mark(pilot)          # its job or kill order may have changed

    def _on_jobstart(self, pilot: PilotInfo, body: dict) -> None:
        try:
            self.lifecycle.move_job(body["job"], states.RUNNING, where=self._own(pilot),
                                    set_={"ts_sta": _from_epoch(body["ts"]) or utcnow(), "pid": body["pid"],
                                          "log_dir": body["log_dir"], "output_dir": body["output_dir"]})
        except (IllegalTransition, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status != 404:
                raise
            self._adopt(pilot, body, "jobstart")
            return
        self._holds(pilot, body["job"])
        faults.crash_point("jobstart")

    def _end(self, pilot: PilotInfo, body: dict, target: str, error: str | None) -> None:
        fields: dict[str, Any] = {"exit_code": body["exit_code"], "error": error,
                                  "last_report": self._report_key(pilot, body, target)}
        for key in ("log_dir", "output_dir"):
            if body[key]:
                fields[key] = body[key]
        for key in ("stdout_tail", "stderr_tail"):
            if body[key] is not None:
                fields[key] = body[key]
        usage, peak = self._usage_fields(body["usage"])
        # The samples not yet written go in this same write.
        unwritten = self.usage.take(body["job"], pilot.uuid)
        fields = {**unwritten.get("set", {}), **fields, **usage}
        if unwritten:
            peak["usage.peak_rss"] = max(peak["usage.peak_rss"], unwritten["max"]["usage.peak_rss"])
        if body["started"] is not None:
            fields["ts_sta"] = _from_epoch(body["started"])
        sources = {states.DISPATCHED} if target == states.NONSTARTER else states.JOB_ACTIVE
        repeated = False
        try:
            self.lifecycle.end_job(body["job"], target, sources=sources, where=self._own(pilot, body), set_=fields,
                                   max_=peak, push=unwritten.get("push"))
            pilot.ended += 1
            faults.crash_point("end")
        except IllegalTransition:
            repeated = self._already_reported(pilot, body, target)
            if not repeated:
                raise
        finally:
            # A repeated report leaves the pilot's job alone: the same job, retried, may have been
            # offered to it again in the reply that was lost (checked when the pilot asks for work).
            if pilot.job == body["job"] and not repeated:
                pilot.job = None
            if pilot.kill_job == body["job"]:
                pilot.kill_job = None

    @staticmethod
    def _report_key(pilot: PilotInfo, body: dict, target: str) -> dict:
        """What identifies an end report: the pilot, the attempt it ran, the end it reports."""
        return {"pilot": pilot.uuid, "attempt": body.get("attempt"), "event": target}

    def _already_reported(self, pilot: PilotInfo, body: dict, target: str) -> bool:
        """A repeated report (its first reply was lost): the job already ended as reported, even
        if it has since been retried; or the server ended it the same way first (the reaper)."""
        doc = self.jobs.find_one({"_id": body["job"]}, {"pilot": 1, "state": 1, "last_report": 1})
        if doc is None:
            return False
        if doc.get("last_report") == self._report_key(pilot, body, target):
            return True
        return doc["state"] == target and doc.get("pilot") == pilot.uuid

    def _on_jobstop(self, pilot: PilotInfo, body: dict) -> None:
        code = body["exit_code"]
        if code is None:
            raise invalid("exit_code", "is required with event jobstop")
        target = states.end_state_for_exit(code)
        self._end(pilot, body, target, None if code == 0 else f"exit code {code}")

    def _on_timelimit(self, pilot: PilotInfo, body: dict) -> None:
        self._end(pilot, body, states.TIMELIMIT, body["message"] or "ran past its time limit")

    def _on_nonstarter(self, pilot: PilotInfo, body: dict) -> None:
        self._end(pilot, body, states.NONSTARTER, body["message"] or "the payload could not be started")
        events.record("job.nonstarter", f"job {body['job']} could not start on {pilot.host}: {body['message']}",
                      job=body["job"], pilot=pilot.uuid, severity="warning")

    def _on_killed(self, pilot: PilotInfo, body: dict) -> None:
        self._end(pilot, body, states.KILLED, body["message"] or "killed on request")

    def _stopped(self, pilot: PilotInfo, body: dict) -> None:
        self.broker.stop_waiting(pilot.uuid)
        for job in self.jobs.find({"pilot": pilot.uuid, "state": {"$in": sorted(states.JOB_ACTIVE)}}, {"state": 1}):
            if job["state"] == states.DISPATCHED:      # never started: another pilot may run it
                self.lifecycle.release_job(job["_id"], pilot.uuid, f"pilot {pilot.uuid} stopped before starting it",
                                           sources={states.DISPATCHED})
                continue
            unwritten = self.usage.take(job["_id"], pilot.uuid)
            try:
                self.lifecycle.end_job(job["_id"], states.PILOT_LOST, where=self._own(pilot),
                                       set_={**unwritten.get("set", {}), "error": "its pilot stopped without reporting it"},
                                       max_=unwritten.get("max"), push=unwritten.get("push"))
            except IllegalTransition:
                pass
        self.usage.forget_pilot(pilot.uuid)
        usage = self.contacts.discard(pilot.uuid)
        ended, pilot.ended = pilot.ended, 0
        self.lifecycle.move_pilot(pilot.uuid, states.STOPPED,
                                  set_={"ts_stop": utcnow(), "ts_lhb": utcnow(), "job": None,
                                        "reason": body["message"] or "stopped", **({"usage": usage} if usage else {})},
                                  inc={"njobs": ended} if ended else None)
        self.registry.forget(pilot.uuid)
        events.record("pilot.stopped", f"pilot {pilot.uuid} on {pilot.host} stopped: {body['message'] or 'done'}",
                      pilot=pilot.uuid, site=pilot.site or None)

    # --- job requests -------------------------------------------------------------------------
    async def request(self, uuid: str, body: dict, on_wait=None) -> dict:
        """Report (optional) then claim a job, waiting up to the asked-for seconds for one.

        A request says by itself that the pilot holds no job (apart from the one it reports): a job
        the server has dispatched to it is offered again (the reply of its claim was lost), and a
        job the server thinks it runs is released. The pilot's document is written once per
        request (twice when a wait ends with a job); the claim itself is the job's one write.
        """
        pilot = self.registry.get(uuid)
        extra = {}
        if body.get("report") is not None:
            report = schema.PILOT_EVENT.validate(body["report"], "report")
            if report["event"] in ("stopped", "heartbeat", "jobstart"):
                raise invalid("report.event", "only the end of a job can be reported with a request")
            if not report["job"]:
                raise invalid("report.job", "is required")
            try:
                getattr(self, "_on_" + report["event"])(pilot, report)
            except (IllegalTransition, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status != 409:
                    raise
                extra["report_refused"] = str(exc)   # e.g. the server ended the job already; go on
        held = self._held_job(pilot)
        if pilot.kill:
            if held is not None:
                self.lifecycle.release_job(held["uuid"], pilot.uuid, f"pilot {pilot.uuid} was told to stop",
                                           sources={states.DISPATCHED})
                pilot.job = None
            self.contacts.note(pilot)
            return {"job": None, **self.instructions(pilot), **extra}
        if held is not None:
            self.contacts.note(pilot)
            return {"job": held, **self.instructions(pilot), **extra}
        job = self.broker.claim(pilot)
        if job is None:
            wait = body.get("wait")
            wait = self.config.long_poll_wait if wait is None else min(wait, self.config.long_poll_max)
            self.contacts.note(pilot)
            if pilot.kill or wait <= 0:
                return {"job": None, **self.instructions(pilot), **extra}
            future = self.broker.wait(pilot, wait)
            if on_wait is not None:
                on_wait(pilot)
            result = await future
            pilot.last_seen = IOLoop.current().time()
            if isinstance(result, dict) and result.get("kill"):
                return {"job": None, "kill": True, "kill_job": None, **extra}
            job = result
            if job is None:
                return {"job": None, **self.instructions(pilot), **extra}
        pilot.job = job["_id"]
        faults.crash_point("claim")
        self.contacts.note(pilot)
        return {"job": self._job_for_pilot(job), **self.instructions(pilot), **extra}

    def _held_job(self, pilot: PilotInfo) -> dict | None:
        """The job dispatched to this pilot, to offer again; a job it runs (by the server's books,
        not by the pilot's) goes back to the queue."""
        if not pilot.job:
            return None
        doc = self.jobs.find_one({"_id": pilot.job}, JOB_OFFER_FIELDS)
        if doc is None or doc.get("pilot") != pilot.uuid or doc["state"] not in states.JOB_ACTIVE:
            pilot.job = None
            return None
        if doc["state"] == states.RUNNING:
            self.lifecycle.release_job(doc["_id"], pilot.uuid, f"pilot {pilot.uuid} asks for work, so it does not "
                                                               "run it", sources={states.RUNNING})
            pilot.job = None
            return None
        return self._job_for_pilot(doc)

    @staticmethod
    def _job_for_pilot(job: dict) -> dict:
        return {"uuid": job["_id"], **{k: job.get(k) for k in JOB_FOR_PILOT}, "attempt": job.get("attempts")}

    # --- kills --------------------------------------------------------------------------------
    def kill(self, selector: dict) -> list[str]:
        """Ask every live pilot matching all keys of ``selector`` to stop; returns their uuids."""
        if not selector:
            raise invalid("body", "give at least one of uuid, host, site, state")
        query: dict[str, Any] = {("_id" if k == "uuid" else k): v for k, v in selector.items()}
        if "state" in query and query["state"] not in states.PILOT_ALIVE:
            return []
        query = {"$and": [query, {"state": {"$in": sorted(states.PILOT_ALIVE)}}]}
        uuids = [d["_id"] for d in self.collection.find(query, {"_id": 1})]
        if uuids:
            self.collection.update_many({"_id": {"$in": uuids}}, {"$set": {"kill_requested": True}})
        for uuid in uuids:
            info = self.registry.pilots.get(uuid)
            if info is not None:
                info.kill = True
            self.broker.stop_waiting(uuid, {"kill": True})
        if uuids:
            events.record("pilot.kill", f"stop requested for {len(uuids)} pilot(s) matching {selector}",
                          data={"selector": selector, "pilots": uuids[:100]})
        return uuids

    def kill_job(self, job: dict) -> None:
        """Ask the pilot holding ``job`` to stop it (delivered in its next heartbeat reply)."""
        self.collection.update_one(pilot_filter(job["pilot"], states.PILOT_ALIVE),
                                   {"$set": {"kill_job": job["_id"]}})
        info = self.registry.pilots.get(job["pilot"])
        if info is not None:
            info.kill_job = job["_id"]
