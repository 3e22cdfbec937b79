"""The server process: opens the database, rebuilds the in-memory state, serves the API."""
from __future__ import annotations

import collections
import functools
import logging
import socket
import time
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.ioloop import PeriodicCallback

from p3s import API_PREFIX, creations, schema
from p3s.auth import Authenticator
from p3s.broker import Broker
from p3s import checkpoints
from p3s.config import Config
from p3s.freshness import Freshness
from p3s import gcpolicy
from p3s.jobs import JobService
from p3s.dbcalls import OffLoop
from p3s.failures import FailureReads
from p3s.latest import LatestFinished
from p3s.lifecycle import Lifecycle
from p3s.loopwatch import LoopWatch
from p3s.limits import SlotGate
from p3s.admission import PilotGate
from p3s import models
from p3s.pilots import PilotService, Registry
from p3s import kept
from p3s.reaper import Reaper
from p3s.reconcile import reconcile, reconcile_workflows, retry_interrupted
from p3s.retention import Retention
from p3s.server import admin
from p3s.server import connections, exposure, proxies
from p3s.server.base import NotFoundHandler
from p3s.sessions import Sessions
from p3s import events
from p3s.server.handlers import ROUTES, url_specs
from p3s.hosts import HostWatch
from p3s.web import api as web_api
from p3s.web import control as web_control
from p3s.web import loginlink
from p3s.web.alarms import AlarmBoard
from p3s.web import pages, results
from p3s.web.live import Broadcaster
from p3s.web.stats import Stats
from p3s.store import Database
from p3s.workflow import TemplateStore, WorkflowEngine

log = logging.getLogger("p3s.server")
COUNTS_PERIOD = 10.0     # seconds between recounts of the state counters on a shared MongoDB
ALARM_PERIOD = 2.0       # seconds between alarm checks (since-when and events need no viewer)


class P3SServer:
    """Everything one server process holds; handlers reach the services through it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.offloop: OffLoop | None = None
        self.admission: PilotGate | None = None
        # Refused here, before anything is opened: an unsafe exposure or an unusable certificate.
        self.open_warning = exposure.check_no_auth(config)
        self.ssl_context = exposure.ssl_context(config)
        try:
            self.trusted_proxies = proxies.networks(config.trusted_proxies)
        except ValueError as exc:
            raise exposure.ExposureError(str(exc)) from None
        self.db = Database(config.db, config.data_path, config.db_name)
        self.started = time.time()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.request_seconds: collections.Counter[str] = collections.Counter()
        self._callbacks: list[PeriodicCallback] = []
        self.http: tornado.httpserver.HTTPServer | None = None
        self.loop_watch = LoopWatch()
        self.port: int | None = None

    # --- life cycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open the database and rebuild the in-memory state (must run on the loop's thread)."""
        self.authenticator = Authenticator(self.config)
        schema.LIMITS["max_timelimit"] = self.config.max_timelimit
        self.db.open()
        self.authenticator.open()
        self.sessions = Sessions(self.authenticator, self.config.session_days)
        self.job_log_roots = web_api.log_roots(self.config.job_log_dirs)
        results.roots(self.config)          # resolved now, once
        self.lifecycle = Lifecycle()
        self.owner = kept.owner(self.config.data_path) if self.db.shared else ""    # among a shared database's servers
        creations.owner = self.owner
        creations.undo_interrupted(self.lifecycle.jobs, self.db.shared)     # before anything counts jobs
        if self.db.embedded:
            self.counted = {"counters": kept.load_counters(self.lifecycle.counters)}
        else:
            self.lifecycle.counters.load()
            self.counted = {"counters": "counted"}
        self.broker = Broker(self.lifecycle, shared_db=self.db.shared)
        self.broker.load()
        if self.db.shared:
            self.broker.slots = SlotGate(models.Job._get_db(), self.broker)
            self.lifecycle.listeners.append(self.broker.slots)
        self.registry = Registry()
        self.registry.load()
        self.pilot_service = PilotService(self.lifecycle, self.broker, self.registry, self.config)
        self.pilot_service.credentials = self.authenticator.credentials
        self.authenticator.pilot_record = self.registry.record
        self._open_admission()
        self.jobs = JobService(self.lifecycle, self.broker, self.pilot_service, self.config)
        self.reaper = Reaper(self.lifecycle, self.registry, self.broker, self.pilot_service, self.config)
        self.reaper.load()
        self.templates = TemplateStore()
        self.workflows = WorkflowEngine(self.lifecycle, self.jobs, self.templates)
        self._open_freshness()
        self.stats = Stats(self.owner)
        self.counted["stats"] = kept.load_stats(self.stats)
        self.retention = Retention(self, self.config)
        self.retention.load()
        self.hosts = HostWatch(self.config, self.broker, shared=self.db.shared)
        self.hosts.load()
        self.counted["hosts"] = self.hosts.loaded
        log.info("counters: %s, statistics: %s, hosts' streaks: %s", self.counted["counters"],
                 self.counted["stats"], self.counted["hosts"])
        self.live = Broadcaster(self.summary)
        self.lifecycle.listeners += [self.stats, self.live, self.hosts]
        self.latest = LatestFinished(models.Job._get_collection(), shared=self.db.shared)
        self.lifecycle.listeners.append(self.latest)
        self.failure_reads = FailureReads(models.Job._get_collection())
        self.alarms = AlarmBoard(self)
        self.alarms.load()
        self.login_links = loginlink.LoginLinks()
        events.subscribers.append(self.live.event_recorded)
        reconcile(self.lifecycle)
        retry_interrupted(self.lifecycle)        # before the workflows: a retried job keeps its workflow open
        reconcile_workflows(self.workflows)
        gcpolicy.settle(force=True)        # what was loaded lives on: out of the full collections
        if self.db.shared:
            # From here on, database calls made while serving wait off the event loop.
            self.offloop = OffLoop()
            self.offloop.install()
            self.broker.call_soon = self.offloop.call_soon
            self.reaper.health = self.offloop.health

    def _open_admission(self) -> None:
        """Bootstrap tokens' ``max_pilots``, held in the database (p3s.admission)."""
        limited = [t.name for t in self.authenticator.tokens if t.role == "pilot" and t.max_pilots is not None]
        if not limited:
            return
        self.admission = PilotGate(models.Job._get_db(), limited, grace=self.config.pilot_lost_timeout)
        self.pilot_service.admission = self.admission
        self.lifecycle.listeners.append(self.admission)
        # A single server (embedded store) has no registration in flight at start: no grace.
        self.admission.repair(grace=0 if not self.db.shared else None)

    def repair_admission(self) -> None:
        try:
            self.admission.repair()
        except Exception:
            log.exception("repairing the pilot tokens' places failed")

    def _open_freshness(self) -> None:
        """Arrival, ETA and deadline of jobs, and the policies that keep them fresh (p3s.freshness)."""
        self.freshness = Freshness(self.lifecycle, self.config, lambda: self.registry.pilots.values())
        self.freshness.load()
        self.freshness.broker = self.broker
        self.freshness.kill_job = self.pilot_service.kill_job
        for jobtype in self.freshness.newest_first_types():
            self.broker.queue.reorder(jobtype, True)
        self.broker.gate = self.freshness.drop_if_stale
        self.jobs.freshness = self.workflows.freshness = self.freshness
        if self.db.shared:
            self.freshness.share(models.Job._get_db()["freshness"])

    @property
    def api_routes(self) -> list:
        return web_control.ROUTES + ROUTES + web_api.ROUTES + admin.ROUTES + loginlink.ROUTES + results.ROUTES

    def make_app(self) -> tornado.web.Application:
        return tornado.web.Application(
            url_specs(self, self.api_routes) + [(API_PREFIX + r"/.*", NotFoundHandler, {"server": self})]
            + pages.url_specs(self) + loginlink.url_specs(self),
            default_handler_class=NotFoundHandler, default_handler_args={"server": self},
            compress_response=False, **pages.SETTINGS)

    def listen(self) -> int:
        """Start serving; returns the port (useful with port 0)."""
        fds = connections.raise_fd_limit()
        log.info("open-files limit %d: room for about %d pilots and clients at once", fds,
                 max(0, fds - connections.RESERVED_FDS))
        # A deep accept queue: a fleet of pilots (re)connecting at once must not be refused.
        sockets = tornado.netutil.bind_sockets(self.config.port, self.config.host, family=socket.AF_INET,
                                               backlog=4096)
        # Any body over SMALL_BODY is refused before it is buffered; API handlers raise the cap to
        # max_body_size for their requests (and answer 413 in the API's error shape).
        # Forwarded-address headers are read by client_address, from the configured proxies only.
        self.http = connections.BoundedHTTPServer(
            self.make_app(), max_body_size=connections.SMALL_BODY, xheaders=False, ssl_options=self.ssl_context,
            idle_connection_timeout=self.config.idle_timeout, body_timeout=self.config.body_timeout)
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._every(self.config.reaper_period, self.reaper.tick, jitter=0.1)
        self._every(min(self.config.contact_write_period, self.config.pilot_lost_timeout / 4),
                    self.flush_contacts, jitter=0.1)
        self._every(min(1.0, self.config.reaper_period), self.freshness.tick)
        self.live.start()
        self.loop_watch.start()
        self._every(ALARM_PERIOD, self.check_alarms)
        if self.db.embedded:
            self.db.checkpoint()         # the start's own writes, before anyone waits on a step
            self.checkpointer = checkpoints.Checkpointer(self.db.collection_stores, self.config.checkpoint_period)
            self._every(checkpoints.STEP, self.checkpointer.step)
        if self.db.shared:
            self._every(self.config.sync_period, self.resync, jitter=0.2)
            self._every(COUNTS_PERIOD, self.recount, jitter=0.2)
            self._every(self.config.sync_period, self.freshness.sync_shared, jitter=0.2)
            if self.admission is not None:
                self._every(max(1.0, self.config.pilot_lost_timeout / 3), self.repair_admission, jitter=0.2)
        self._every(kept.SAVE_PERIOD, self.save_stats, jitter=0.1)
        self._every(self.config.retention_period, self.retention.tick, jitter=0.1)
        return self.port

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def client_address(self, request: Any) -> str:
        """The request's client: its peer, or what a trusted proxy forwarded."""
        return proxies.client_address(request.remote_ip, request.headers, self.trusted_proxies)

    def _every(self, seconds: float, callback: Any, jitter: float = 0.0) -> None:
        if seconds > 0:
            if self.offloop is not None:
                callback = functools.partial(self.offloop.spawn, callback)
            periodic = PeriodicCallback(callback, seconds * 1000, jitter=jitter)
            periodic.start()
            self._callbacks.append(periodic)

    def check_alarms(self) -> None:
        try:
            self.alarms.check()
        except Exception:
            log.exception("alarm check failed")

    def resync(self) -> None:
        """Learn what the other servers on the shared database did: new jobs, limits, job starts."""
        try:
            self.broker.resync()
            self.reaper.sync()
            self.broker.slots.repair()
        except Exception:
            log.exception("re-synchronisation with the database failed")

    def recount(self) -> None:
        """Recount the state counters, reload freshness and retention settings (shared database)."""
        try:
            self.lifecycle.counters.load()
            self.freshness.reload_policies()
            self.retention.load()
        except Exception:
            log.exception("recounting failed")

    def flush_contacts(self) -> None:
        """Write the pilots' contacts and their jobs' usage kept in memory (p3s.contacts, p3s.usage)."""
        try:
            self.pilot_service.flush()
        except Exception:
            log.exception("writing the pilots' contacts failed")

    def save_stats(self, clean: bool = False) -> None:
        try:
            kept.save_stats(self.stats, clean)
            if self.db.shared and not clean:
                kept.read_others(self.stats)
        except Exception:
            log.exception("saving the statistics failed")
        try:
            self.hosts.save()
        except Exception:
            log.exception("saving the hosts' streaks failed")

    async def stop(self) -> None:
        """Stop serving, release waiting pilots, flush and close the database."""
        for periodic in self._callbacks:
            periodic.stop()
        self.loop_watch.stop()
        if self.http is not None:
            self.http.stop()
        self.broker.stop_all_waiting()
        self.live.stop()
        events.subscribers.remove(self.live.event_recorded)
        self.freshness.close()
        if self.http is not None:
            try:
                await self.http.close_all_connections()
            except Exception:
                pass
        self.flush_contacts()
        self.save_stats(clean=True)
        if self.db.embedded:
            kept.save_counters(self.lifecycle.counters)
        self.db.close()
        if self.offloop is not None:
            self.offloop.close()

    # --- figures ------------------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        """Jobs and pilots by state, with pilots in the state they are in memory (contacts are
        written in batches, so the written counters may lag)."""
        out = self.lifecycle.counters.summary()
        self.pilot_service.contacts.adjust(out)
        return out

    def summary(self) -> dict[str, Any]:
        out = self.counts()
        out["queue"] = {"ready": len(self.broker.queue), "waiting_pilots": self.broker.waiting,
                        "limits": dict(self.broker.limits)}
        out["archived"] = self.retention.totals()
        out["server"] = {"uptime": round(time.time() - self.started, 1), "database": self.db.description,
                         "loop": self.loop_watch.summary(), "gc": gcpolicy.summary()}
        return out

    def database_status(self) -> dict[str, Any]:
        """Whether the database answers, from the calls the server makes (no call of its own)."""
        if self.offloop is None:
            return {"state": "ok", "waiting_calls": 0, "longest_wait": 0.0, "error": None}
        return self.offloop.health.status()

    def metrics_response(self, method: str, status: int, seconds: float) -> None:
        self.requests[(method, status)] += 1
        self.request_seconds[method] += seconds

