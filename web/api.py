"""API routes the monitor needs besides the resources: statistics, alarms, identity, the live
stream and job logs. Mounted under /api/v1 with the others and described in the same OpenAPI."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import tornado.iostream

from p3s import auth
from p3s.errors import ApiError, invalid, not_found
from p3s.server import openapi
from p3s.server.base import ApiHandler
from p3s.web import live


class StatsHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Jobs defined/started/finished/failed/timed out/lost in the last 1 min, 10 min, "
                              "1 h, 24 h (overall and by type), and per-minute throughput, queue wait and "
                              "dispatch latency (p50/p95) for the last hour",
                   "query": {"minutes": "Length of the per-minute series (1–1440, default 60)."},
                   "response": "Stats"}}

    def get(self) -> None:
        minutes = self.query_int("minutes")
        stats = self.server.stats
        self.reply({"windows": stats.windows(), "series": stats.series(minutes),
                    "limits": dict(self.server.broker.limits), "summary": self.server.summary(),
                    "lost_pilots_1h": stats.lost_by_site(3600)})


class WhoAmIHandler(ApiHandler):
    roles = {"GET": auth.ANY}
    doc = {"GET": {"summary": "The caller's role and name", "response": "WhoAmI"}}

    def get(self) -> None:
        self.reply({"role": self.role, "name": self.user, "auth": not self.server.authenticator.disabled,
                    "address": self.request.remote_ip})


class StreamHandler(ApiHandler):
    """Server-sent events: one ``change`` message per half second while anything changes."""

    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Server-sent events (text/event-stream): a hello with the summary, then "
                              "change messages {jobs, pilots, workflows, events, summary}",
                   "response": "OpenAPI"}}

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        queue = self._queue = self.server.live.subscribe()
        try:
            self.write(live.hello(self.server.summary()))
            await self.flush()
            while True:
                message = await queue.get()
                if message is None:
                    break
                self.write(live.stream_message(message))
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            self.server.live.unsubscribe(queue)

    def on_connection_close(self) -> None:
        queue = getattr(self, "_queue", None)
        if queue is not None:
            live.queue_close(queue)


def log_roots(dirs: list[str]) -> list[str]:
    """The real paths of the configured job_log_dirs, resolved once when the server starts: a link
    made later (``/tmp/p3s -> /``) does not widen what the server serves."""
    return [os.path.realpath(os.path.expanduser(d)) for d in dirs]


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def read_log(path: Path, roots: list[str]) -> bytes:
    """The last 8 MiB of the log file ``path``, if its real path is inside one of ``roots``.

    The check is made on the file actually opened (``/proc/self/fd``), so swapping a directory
    for a link between the check and the open gains nothing."""
    real = os.path.realpath(path)
    if not _inside(real, roots):
        raise ApiError(403, f"{path} is outside the job log directories this server may read")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise not_found("log file", str(path)) from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else real
        if not _inside(opened, roots) or not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ApiError(403, f"{path} is outside the job log directories this server may read")
        size = os.fstat(fd).st_size
        handle.seek(max(0, size - (8 << 20)))
        return handle.read()


class JobLogHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "A job's whole stdout (out) or stderr (err) file, when the server can read "
                              "it under one of the configured job_log_dirs",
                   "response": "OpenAPI"}}

    def get(self, uuid: str, stream: str) -> None:
        if stream not in openapi.PATH_CHOICES["stream"]:
            raise invalid("stream", "must be out or err")
        job = self.server.jobs.get(uuid)
        if not job.get("log_dir"):
            raise not_found("log of job", uuid)
        path = Path(job["log_dir"]) / f"{uuid}.{stream}"
        data = read_log(path, self.server.job_log_roots)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(data)


ROUTES = [
    ("/stats", StatsHandler),
    ("/whoami", WhoAmIHandler),
    ("/stream", StreamHandler),
    ("/jobs/{uuid}/log/{stream}", JobLogHandler),
]
