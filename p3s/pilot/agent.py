"""The pilot: registers, asks for work (long poll), runs payloads, heartbeats, reports, stops.

Standard library (psutil when present) and the rest of ``p3s.pilot`` only: it runs on bare worker nodes. A finished job
is reported in the same request that asks for the next one, so a busy pilot costs one request
per job; a payload that runs longer than ``first_report`` seconds is reported started, then
heartbeats every ``beat`` seconds with the resource usage of its process tree.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import secrets
import signal
import socket
import time
import uuid as _uuid
from pathlib import Path
from typing import Any

from p3s import __version__
from p3s.pilot.client import Client, P3SError
from p3s.pilot.guard import OrphanGuard
from p3s.pilot import spawn
from p3s.pilot.payload import NonStarter, Payload
from p3s.pilot.spares import Spares

log = logging.getLogger("p3s.pilot")

EXIT_OK = 0
EXIT_REGISTRATION = 3     # could not register before the deadline
EXIT_OUTAGE = 4           # the server stayed unreachable longer than the allowed outage
EXIT_REFUSED = 5          # the server refused the pilot (e.g. it was declared lost: its credential is revoked)


@dataclasses.dataclass
class PilotOptions:
    server: str = "http://127.0.0.1:8470"
    token: str | None = None
    site: str = ""
    host: str = dataclasses.field(default_factory=socket.getfqdn)
    logdir: Path = Path("/tmp/p3s/pilots")
    joblogdir: Path = Path("/tmp/p3s/jobs")
    workdir: Path = Path("/tmp/p3s/work")
    resultdir: Path = Path("/tmp/p3s/results")   # parent of each job's $P3S_OUTPUT_DIR
    cycles: int = 3                    # consecutive idle requests before stopping; 0 = never
    period: float = 10.0               # seconds one idle request waits for work (long poll)
    beat: float = 10.0                 # heartbeat seconds while a payload runs
    first_report: float = 1.0          # a payload running this long is reported started
    extra: str = ""
    jobtypes: list[str] = dataclasses.field(default_factory=list)
    register_deadline: float = 300.0   # keep trying to register this long
    outage: float = 600.0              # tolerate an unreachable server this long while working
    grace: float = 10.0                # SIGTERM -> SIGKILL
    max_nonstarters: int = 5           # consecutive payloads that cannot start before stopping
    shell: bool = False                # run every payload through the shell
    site_env: dict[str, str] = dataclasses.field(default_factory=dict)


class PilotStop(Exception):
    """Raised out of a blocking call when the pilot is told to stop by a signal."""


class Pilot:
    def __init__(self, options: PilotOptions, client: Client | None = None) -> None:
        self.options = options
        self.uuid = str(_uuid.uuid4())
        self._key = secrets.token_hex(32)     # becomes this pilot's credential; a retry proves it is us
        self.client = client or Client(options.server, options.token, timeout=30, retries=0)
        self.payload: Payload | None = None
        self.stop_requested = False
        self.stop_reason = ""
        self.pending_report: dict | None = None
        self.jobs_run = 0
        self.guard = OrphanGuard(self.uuid)
        self.log_dir = str(options.joblogdir.resolve())     # reported with every job
        self._unreachable_since: float | None = None
        self.max_retry_delay = 30.0        # lowered at registration: the server must hear from us in time
        self.spares = Spares()             # the empty leftovers of the last job, reused by the next
        self._env: dict[str, str] | None = None   # the payloads' base environment, built once
        self._resultroot = options.resultdir

    # --- signals ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True
        self.stop_reason = f"signal {signal.Signals(signum).name}"
        if self.payload is None:
            raise PilotStop(self.stop_reason)      # interrupt a long poll at once

    # --- talking to the server ----------------------------------------------------------------
    def _call(self, what: str, func, *args: Any, **kwargs: Any) -> Any:
        """A call that rides out server outages until ``outage`` seconds; 4xx errors are raised."""
        delay = 0.5
        while True:
            try:
                result = func(*args, **kwargs)
                if self._unreachable_since is not None:
                    log.info("server reachable again after %.0f s", time.monotonic() - self._unreachable_since)
                self._unreachable_since = None
                return result
            except P3SError as exc:
                if exc.status != 0 and exc.status < 500:
                    raise
                now = time.monotonic()
                if self._unreachable_since is None:
                    self._unreachable_since = now
                    log.warning("%s: %s; retrying", what, exc)
                if now - self._unreachable_since > self.options.outage:
                    raise
                if self.payload is not None and self.payload.poll() is None:
                    return None        # a payload is running: don't block it, try at the next beat
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self.max_retry_delay)

    def register(self) -> None:
        deadline = time.monotonic() + self.options.register_deadline
        delay = 0.5
        while True:
            try:
                reply = self.client.register_pilot(
                    uuid=self.uuid, host=self.options.host, site=self.options.site, pid=os.getpid(),
                    extra=self.options.extra, jobtypes=self.options.jobtypes, version=__version__, key=self._key)
                break
            except P3SError as exc:
                if (exc.status != 0 and exc.status < 500) or time.monotonic() > deadline:
                    raise
                log.warning("registration failed: %s; retrying in %.1f s", exc, delay)
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 30)
        # From now on the pilot speaks with its own credential, good for this pilot only; the
        # bootstrap token is forgotten.
        self.client.token = reply.get("credential") or self._key
        self.options.token = None
        settings = reply.get("settings", {})
        self.long_poll_max = float(settings.get("long_poll_max", self.options.period))
        # After an outage the server gives live pilots pilot_lost_timeout seconds to call again.
        self.max_retry_delay = max(0.5, min(30.0, float(settings.get("pilot_lost_timeout", 90)) / 3))
        log.info("registered as %s on %s (site %s)", self.uuid, self.options.host, self.options.site or "-")

    # --- main loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Register, work until cycles are exhausted, a kill, or a signal; returns the exit code."""
        spawn.seal_descriptors()           # nothing the pilot inherited reaches its payloads
        try:
            self.register()
        except PilotStop:
            return EXIT_OK
        except P3SError as exc:
            log.error("cannot register with %s: %s", self.options.server, exc)
            return EXIT_REGISTRATION
        try:
            return self._run_registered()
        finally:
            self.guard.close()
            self.spares.close()

    def _run_registered(self) -> int:
        self.guard.start()
        code = EXIT_OK
        try:
            code = self._work()
        except PilotStop:
            log.info("stopping: %s", self.stop_reason)
        except P3SError as exc:
            if exc.status == 0:
                log.error("server unreachable for more than %.0f s: %s", self.options.outage, exc)
                code = EXIT_OUTAGE
            elif exc.status == 401:
                # The pilot's credential no longer authenticates: the server ended this pilot (it
                # stopped, or was declared lost while out of reach). Nothing it sends will be taken.
                log.error("stopping: the server no longer accepts this pilot's credential: %s", exc.message)
                code = EXIT_REFUSED
            else:
                log.error("server refused the pilot: %s", exc)
                code = EXIT_REFUSED
        finally:
            if self.payload is not None:          # never leave a payload behind
                self.payload.stop(self.options.grace)
                self.guard.unwatch()
                self.payload.close()
                self.payload = None
        if code != EXIT_REFUSED:
            self._say_stopped()
        return code

    def _say_stopped(self) -> None:
        if self.pending_report is not None:
            try:
                self._call("report", self.client.report, self.uuid, **self.pending_report)
            except (P3SError, PilotStop) as exc:
                log.warning("could not report job %s: %s", self.pending_report["job"], exc)
            self.pending_report = None
        try:
            self.client.report(self.uuid, "stopped", message=self.stop_reason or "done")
        except (P3SError, PilotStop) as exc:
            log.warning("could not report the stop: %s", exc)

    def _work(self) -> int:
        idle = 0
        nonstarters = 0
        while not self.stop_requested:
            if self.options.cycles and idle >= self.options.cycles:
                self.stop_reason = f"no work in {idle} consecutive requests"
                log.info(self.stop_reason)
                return EXIT_OK
            wait = min(self.options.period, self.long_poll_max)
            asked = time.monotonic()
            reply = self._call("job request", self.client.request_job, self.uuid, wait, self.pending_report)
            self.pending_report = None
            if reply.get("report_refused"):
                log.warning("the server did not take the last report: %s", reply["report_refused"])
            if reply.get("kill"):
                self.stop_reason = "stop requested by the server"
                return EXIT_OK
            job = reply.get("job")
            if job is None:
                idle += 1
                remaining = self.options.period - (time.monotonic() - asked)
                if remaining > 0.05 and self.options.cycles and idle < self.options.cycles:
                    time.sleep(remaining)       # the server's bound was shorter than our period
                continue
            idle = 0
            report = self._run(job)
            nonstarters = nonstarters + 1 if report["event"] == "nonstarter" else 0
            self.pending_report = report
            if self.stop_requested:
                return EXIT_OK
            if nonstarters:
                if nonstarters >= self.options.max_nonstarters:
                    self.stop_reason = f"{nonstarters} payloads in a row could not start on this node"
                    log.error(self.stop_reason)
                    return EXIT_OK
                time.sleep(min(2 ** nonstarters * 0.1, self.options.period))   # don't spin through the queue
        return EXIT_OK

    # --- one job ------------------------------------------------------------------------------
    def _run(self, job: dict) -> dict:
        """Run one job to its end; returns the report for the server (sent with the next request)."""
        opts = self.options
        log.info("job %s (%s): %s", job["uuid"], job.get("jobtype"), job.get("payload"))
        if self._env is None:
            self._env = {**os.environ, **opts.site_env}
            self._resultroot = opts.resultdir.resolve()
        payload = Payload(job, self.uuid, self._env, opts.joblogdir, opts.workdir, opts.shell,
                          resultroot=self._resultroot, spares=self.spares)
        where = {"log_dir": self.log_dir, "output_dir": str(payload.output_dir)}
        try:
            payload.start()
        except NonStarter as exc:
            log.warning("job %s could not start: %s", job["uuid"], exc)
            return {"event": "nonstarter", "job": job["uuid"], "attempt": job.get("attempt"),
                    "message": str(exc)[:4000], **where, **payload.tails()}
        self.payload = payload
        self.guard.watch(payload.pid)
        self.jobs_run += 1
        timelimit = float(job.get("timelimit") or 0)
        next_report = min(opts.first_report, opts.beat)
        started_reported = False
        outcome: tuple[str, str] | None = None      # (event, message) when it did not end by itself
        try:
            while True:
                step = min(0.25, max(0.0, next_report - payload.elapsed()))
                if timelimit:
                    step = min(step, max(0.0, timelimit - payload.elapsed()))
                code = payload.wait(step if step > 0 else 0.01)
                if code is not None:
                    break
                if timelimit and payload.elapsed() >= timelimit:
                    outcome = ("timelimit", f"ran past its time limit of {timelimit:g} s")
                    break
                if self.stop_requested:
                    outcome = ("killed", f"pilot stopped ({self.stop_reason})")
                    break
                if payload.elapsed() >= next_report:
                    event = "heartbeat" if started_reported else "jobstart"
                    try:
                        reply = self._call(event, self.client.report, self.uuid, event, job=job["uuid"],
                                           attempt=job.get("attempt"), pid=payload.pid, ts=time.time(),
                                           usage=payload.usage(), **where)
                    except P3SError as exc:
                        # Only an explicit order stops a payload: the server saying this pilot must
                        # stop, or kill_job in a reply. Any other refusal (e.g. of a repeated
                        # report) leaves it running; its end is reported as usual.
                        if exc.status in (0, 401) or exc.field == "pilot":
                            raise
                        log.warning("%s for job %s not taken: %s; the payload goes on", event, job["uuid"], exc)
                        reply = None
                        started_reported = True
                    if reply is not None:
                        started_reported = True
                        if reply.get("kill"):
                            outcome = ("killed", "pilot stopped on request")
                            self.stop_requested, self.stop_reason = True, "stop requested by the server"
                            break
                        if reply.get("kill_job") == job["uuid"]:
                            outcome = ("killed", "killed on request")
                            break
                    next_report = payload.elapsed() + opts.beat
        finally:
            if outcome is not None or payload.poll() is None:
                payload.usage()
                beats = _StopBeats(self, job, where, next_report) if started_reported else None
                code = payload.stop(opts.grace, beats)
            else:
                code = payload.poll()
            usage = payload.final_usage()
            self.guard.unwatch()
            self.payload = None
        report: dict[str, Any] = {"job": job["uuid"], "attempt": job.get("attempt"), "exit_code": code,
                                  "started": payload.started_wall,
                                  "usage": usage, **where, **payload.tails(recycle=outcome is None)}
        if outcome is None:
            report["event"] = "jobstop"
            log.info("job %s ended with exit code %s after %.2f s", job["uuid"], code, payload.elapsed())
        else:
            report["event"], report["message"] = outcome
            log.warning("job %s %s: %s", job["uuid"], outcome[0], outcome[1])
        return report


class _StopBeats:
    """Heartbeats while a payload is being stopped (up to ``grace`` seconds and more): a pilot
    silent that long could be declared lost. Each is one try with a short timeout (the SIGKILL must
    not wait for an unreachable server); what the reply orders is noted, the stop goes on."""

    def __init__(self, pilot: Pilot, job: dict, where: dict, next_report: float) -> None:
        self.pilot, self.job, self.where, self.next_report = pilot, job, where, next_report

    def __call__(self) -> None:
        pilot, payload = self.pilot, self.pilot.payload
        if payload is None or payload.elapsed() < self.next_report:
            return
        beat = pilot.options.beat
        self.next_report = payload.elapsed() + beat
        body = {"event": "heartbeat", "job": self.job["uuid"], "attempt": self.job.get("attempt"),
                "pid": payload.pid, "ts": time.time(), "usage": payload.usage(), **self.where}
        try:
            reply = pilot.client.call("POST", f"/pilots/{pilot.uuid}/events", body, timeout=min(5.0, max(1.0, beat)))
        except P3SError as exc:
            log.info("heartbeat while stopping job %s not taken: %s", self.job["uuid"], exc)
            return
        if reply and reply.get("kill") and not pilot.stop_requested:
            pilot.stop_requested, pilot.stop_reason = True, "stop requested by the server"


def bootstrap_site(client: Client, options: PilotOptions, explicit: set[str]) -> None:
    """Take period, beat, cycles, server and env from the site record, where not given as flags."""
    site = client.call("GET", f"/sites/{options.site}")
    for field in ("period", "beat", "cycles"):
        if field not in explicit and site.get(field) is not None:
            setattr(options, field, site[field])
    if "server" not in explicit and site.get("server"):
        options.server = site["server"]
        client.url = site["server"].rstrip("/")
    options.site_env = dict(site.get("env") or {})
