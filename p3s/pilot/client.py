"""The HTTP client every p3s command and the pilot use. Standard library only (it runs on bare
worker nodes): JSON in and out, a timeout on every call, retries with exponential backoff and
jitter for connection errors and 5xx answers (never for 4xx), and one exception type carrying the
server's message.
"""
from __future__ import annotations

import json
import os
import random
import ssl
import stat
import time
import urllib.parse
from typing import Any, Callable, Iterable

from p3s.pilot import ids, wire

API = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8470"


class P3SError(Exception):
    """A call that failed: ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def __str__(self) -> str:
        where = "server unreachable" if self.status == 0 else f"HTTP {self.status}"
        return f"{self.message} ({where})"


# Every variable that carries a p3s credential: the pilot removes them from its payloads' environment.
CREDENTIAL_VARIABLES = ("P3S_TOKEN", "P3S_TOKEN_FILE", "P3S_PILOT_TOKEN")


class TokenFileError(Exception):
    """A token file that must not be used (unreadable, empty, or readable by other users)."""


def read_token_file(path: str) -> str:
    """The token in ``path``; refused when the file is a symlink, not a regular file, or open to
    the group or others (any of mode 077): a token others can read is no longer a secret."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise TokenFileError(f"token file {path} has mode {stat.S_IMODE(info.st_mode):04o}: other users can "
                                 f"read or change it; make it private (chmod 600 {path})")
        token = handle.read().strip()
    if not token:
        raise TokenFileError(f"token file {path} is empty")
    return token


def find_token(data_dir: str | None = None) -> str | None:
    """``$P3S_TOKEN``, else the token file the server generated in its data directory."""
    if os.environ.get("P3S_TOKEN"):
        return os.environ["P3S_TOKEN"]
    path = os.path.join(os.path.expanduser(data_dir or os.environ.get("P3S_DATA_DIR") or "~/.p3s"), "token")
    try:
        with open(path) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


class Client:
    """A p3s server: ``Client(url, token).call("GET", "/jobs", query={...})``."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 retries: int = 4, backoff: float = 0.5, max_backoff: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, ca_file: str | None = None) -> None:
        self.url = (url or os.environ.get("P3S_SERVER_URL") or DEFAULT_URL).rstrip("/")
        self.token = token
        # https: the server's certificate is always verified, against ca_file ($P3S_CA_FILE) or
        # the system's CAs.
        self.ca_file = ca_file or os.environ.get("P3S_CA_FILE") or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._conn: wire.Connection | None = None
        self._prefix = self._conn_url = ""

    # --- transport ----------------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, query: dict | None = None,
             timeout: float | None = None, retries: int | None = None) -> Any:
        """One API call; returns the decoded JSON reply or raises P3SError."""
        target = API + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        attempts = 1 + (self.retries if retries is None else retries)
        for attempt in range(attempts):
            try:
                return self._once(method, target, data, timeout or self.timeout)
            except P3SError as exc:
                if (exc.status != 0 and exc.status < 500) or attempt == attempts - 1:
                    raise
                delay = min(self.max_backoff, self.backoff * 2 ** attempt)
                self._sleep(random.uniform(delay / 2, delay))
        raise AssertionError("unreachable")

    def _connect(self, timeout: float) -> wire.Connection:
        if self._conn is not None and self._conn_url != self.url:
            self.close()                 # the URL was changed (e.g. by a site's record)
        if self._conn is None:
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise P3SError(0, f"not an http(s) URL: {self.url!r}")
            context = None
            if parts.scheme == "https":
                try:
                    context = ssl.create_default_context(cafile=self.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise P3SError(0, f"cannot read CA file {self.ca_file}: {getattr(exc, 'strerror', None) or exc}")
            try:
                port = parts.port or (443 if context is not None else 80)
            except ValueError as exc:
                raise P3SError(0, f"not an http(s) URL: {self.url!r}: {exc}") from None
            self._conn = wire.Connection(parts.hostname, port, timeout, context)
            self._prefix, self._conn_url = parts.path.rstrip("/"), self.url
        self._conn.settimeout(timeout)
        return self._conn

    def close(self) -> None:
        """Close the kept-alive connection (it reopens on the next call)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call_text(self, method: str, path: str) -> str:
        """One API call whose reply is text (a job's log file), decoded as UTF-8."""
        return self._once(method, API + path, None, self.timeout, raw=True).decode("utf-8", "replace")

    def _once(self, method: str, target: str, data: bytes | None, timeout: float, raw: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for fresh in (False, True):
            reused = self._conn is not None and self._conn.sock is not None
            try:
                conn = self._connect(timeout)
                status, payload = conn.request(method, self._prefix + target, data, headers)
                break
            except (wire.Closed, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and not fresh:
                    continue        # the server had closed the idle kept-alive connection: reconnect once
                raise P3SError(0, f"cannot reach {self.url}: {exc}") from None
            except (OSError, wire.ProtocolError) as exc:
                self.close()
                raise P3SError(0, f"cannot reach {self.url}: {exc}") from None
            except BaseException:
                self.close()        # e.g. interrupted by a signal: the connection is in an unknown state
                raise
        if status >= 400:
            raise self._error(status, payload)
        if raw:
            return payload
        return json.loads(payload) if payload else None

    @staticmethod
    def _error(status: int, payload: bytes) -> P3SError:
        try:
            error = json.loads(payload)["error"]
            return P3SError(status, error.get("message") or f"HTTP {status}", error.get("field"))
        except (ValueError, KeyError, TypeError):
            text = payload.decode(errors="replace").strip()[:200]
            return P3SError(status, text or f"HTTP {status}")

    # --- jobs ---------------------------------------------------------------------------------
    def create_jobs(self, jobs: list[dict]) -> list[dict]:
        """Submit jobs all-or-none. Each gets a uuid here, so a retried request never duplicates."""
        chosen_here = not any(job.get("uuid") for job in jobs)
        jobs = [{**job, "uuid": job.get("uuid") or ids.new()} for job in jobs]   # time-ordered: see ids
        try:
            return self.call("POST", "/jobs", jobs)["items"]
        except P3SError as exc:
            # Our uuids already exist: an earlier attempt went through but its reply was lost.
            if chosen_here and exc.status == 409 and exc.field == "uuid":
                found = [self.call("GET", f"/jobs/{job['uuid']}") for job in jobs]
                if all(f["payload"] == j["payload"] for f, j in zip(found, jobs)):
                    return found
            raise

    def list(self, resource: str, **filters: Any) -> dict:
        return self.call("GET", f"/{resource}", query=filters)

    def list_all(self, resource: str, page: int = 1000, **filters: Any) -> Iterable[dict]:
        """Every item of a listing, page by page."""
        offset = 0
        while True:
            reply = self.call("GET", f"/{resource}", query={**filters, "limit": page, "offset": offset})
            yield from reply["items"]
            offset += len(reply["items"])
            if not reply["items"] or offset >= reply["total"]:
                return

    def get(self, resource: str, key: str) -> dict:
        return self.call("GET", f"/{resource}/{urllib.parse.quote(key, safe='')}")

    def patch(self, resource: str, key: str, changes: dict) -> dict:
        return self.call("PATCH", f"/{resource}/{urllib.parse.quote(key, safe='')}", changes)

    def delete(self, resource: str, key: str) -> dict:
        return self.call("DELETE", f"/{resource}/{urllib.parse.quote(key, safe='')}")

    def delete_where(self, resource: str, **filters: Any) -> dict:
        return self.call("DELETE", f"/{resource}", query=filters)

    def kill_job(self, uuid: str) -> dict:
        return self.call("POST", f"/jobs/{uuid}/kill")

    def set_limit(self, jobtype: str, limit: int | None, comment: str = "") -> dict:
        return self.set_jobtype(jobtype, limit=limit, comment=comment)

    def set_jobtype(self, jobtype: str, **settings: Any) -> dict:
        """Change the given settings of a job type (limit, eta, order, stale, shed, …); others are kept."""
        return self.call("PATCH", f"/jobtypes/{urllib.parse.quote(jobtype, safe='')}", settings)

    # --- pilots -------------------------------------------------------------------------------
    def register_pilot(self, **fields: Any) -> dict:
        return self.call("POST", "/pilots", fields)

    def request_job(self, pilot: str, wait: float, report: dict | None = None) -> dict:
        body: dict[str, Any] = {"wait": wait}
        if report is not None:
            body["report"] = report
        return self.call("POST", f"/pilots/{pilot}/request", body, timeout=wait + self.timeout)

    def report(self, pilot: str, event: str, **fields: Any) -> dict:
        return self.call("POST", f"/pilots/{pilot}/events", {"event": event, **fields})

    def kill_pilots(self, **selector: Any) -> list[str]:
        return self.call("POST", "/pilots/kill", {k: v for k, v in selector.items() if v is not None})["killed"]

    def summary(self) -> dict:
        return self.call("GET", "/summary")
