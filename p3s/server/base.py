"""The base of every API handler: authorisation, JSON bodies with a size limit, one error shape."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
from typing import Any

import tornado.web
from bson import ObjectId

from p3s import auth, ownership, schema
from p3s.errors import ApiError, invalid
from p3s.ownership import redact
from p3s.sessions import COOKIE as SESSION_COOKIE
from p3s.states import IllegalTransition

log = logging.getLogger("p3s.server")

CSRF_HEADER = "X-P3S-Request"
# Fields too bulky for list views; the detail view has them.
HEAVY_FIELDS = ("usage_series", "stdout_tail", "stderr_tail")
KEYS = {"jobs": "uuid", "pilots": "uuid", "data": "uuid", "sites": "name", "jobtypes": "name",
        "datatypes": "name", "events": "id"}


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


_PLAIN = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    if type(value) in _PLAIN:          # most fields: one check (bulk replies render ~40 per job)
        return value
    if isinstance(value, _dt.datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def document(doc: dict, key: str = "uuid", heavy: bool = True) -> dict:
    """A stored document as the API shows it: ``_id`` under its name, times in ISO 8601 UTC, the
    values of environment variables marked secret hidden."""
    doc = redact(doc)
    out = {key: jsonable(doc["_id"])}
    for field, value in doc.items():
        if field == "_id" or (not heavy and field in HEAVY_FIELDS):
            continue
        out[field] = jsonable(value)
    return out


def decode_body(raw: bytes, optional: bool = False) -> Any:
    """A request body decoded from JSON and checked (p3s.schema.check_tree); 400 with line and
    column when it is malformed. Pure: a large body is decoded off the loop (p3s.offloop)."""
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "the request has no body; a JSON document is expected")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ApiError(400, f"the JSON is nested too deeply (at most {schema.MAX_DEPTH} levels)") from None
    except ValueError as exc:             # NaN, Infinity; integers of thousands of digits
        raise ApiError(400, f"malformed JSON: {exc}") from None
    schema.check_tree(value, "", texts=schema.may_hold_bad_text(text))
    return value


def _database_unreachable(error: BaseException) -> bool:
    from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError

    return isinstance(error, (AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError))


# The handler methods that may reach the database.
_DATABASE_METHODS = ("prepare", "get", "post", "put", "patch", "delete", "head")


def _off_the_loop(method: Any) -> Any:
    """On MongoDB, run the handler method in a greenlet whose database calls wait off the event
    loop (p3s.dbcalls); elsewhere, as it is."""
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        runner = getattr(self.server, "offloop", None)
        if runner is None or runner.in_task():
            return method(self, *args, **kwargs)
        return runner.spawn(method, self, *args, **kwargs)
    return run


def database_calls_off_the_loop(cls: type) -> None:
    """Make the HTTP methods ``cls`` defines run off the loop on MongoDB (any handler with ``server``)."""
    for name in _DATABASE_METHODS:
        if name in cls.__dict__:
            setattr(cls, name, _off_the_loop(cls.__dict__[name]))


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """Parse, authorise, call one method of a service, serialise. Subclasses set ``roles``."""

    roles: dict[str, frozenset[str]] = {}     # HTTP method -> roles allowed
    doc: dict[str, dict] = {}                 # HTTP method -> OpenAPI description (see openapi.py)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        database_calls_off_the_loop(cls)

    def initialize(self, server: Any) -> None:
        self.server = server
        self.identity: auth.Identity | None = None
        self.role: str | None = None
        self.user = ""
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        self.request.remote_ip = self.server.client_address(self.request)
        limit = self.server.config.max_body_size
        self.request.connection.set_max_body_size(limit)     # the server's default cap is small
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"request body of {length} bytes is over the limit of {limit} bytes")
        allowed = self.roles.get(self.request.method)
        if allowed is None:
            raise ApiError(405, f"method {self.request.method} is not allowed on {self.request.path}")
        if allowed is auth.PUBLIC:
            return
        header = self.request.headers.get("Authorization")
        if header is not None:
            who = self.server.authenticator.identify(header)
        elif self.get_cookie(SESSION_COOKIE):
            # The monitor's pages authenticate with a session cookie; a changing request from a
            # page must also carry a custom header, which another site's page cannot send (CSRF).
            if self.request.method not in ("GET", "HEAD") and not self.request.headers.get(CSRF_HEADER):
                raise ApiError(403, f"a request authenticated by cookie needs the {CSRF_HEADER} header")
            who = self.server.sessions.identify(self.get_cookie(SESSION_COOKIE))
        else:
            who = self.server.authenticator.identify(None)
        if who is None:
            self.set_header("WWW-Authenticate", 'Bearer realm="p3s"')
            raise ApiError(401, "missing or unknown bearer token (send 'Authorization: Bearer <token>')")
        if who.revoked is not None:          # a pilot's credential whose pilot has ended
            raise ApiError(401, who.revoked, "pilot")
        self.identity, self.role, self.user = who, who.role, who.name
        if self.role not in allowed:
            raise ApiError(403, f"role {self.role} may not {self.request.method} {self.request.path}")

    def require_owner(self, doc: dict, kind: str, key: str) -> None:
        """Changing a job, workflow or data record: its owner or an admin only (403)."""
        ownership.check(self.identity, doc, kind, key)

    def require_pilot(self, uuid: str) -> None:
        """A pilot's own routes: a pilot's credential acts only for the pilot it was issued to."""
        if self.identity is not None and self.identity.role == "agent" and self.identity.pilot != uuid:
            raise ApiError(403, f"this credential belongs to pilot {self.identity.pilot}; it cannot act for {uuid}")

    def require_site(self, site: str) -> None:
        """A site-bound pilot token reads only its site; a pilot's credential only its pilot's site."""
        who = self.identity
        if who is None or who.role not in ("pilot", "agent"):
            return
        limit = who.site if who.role == "pilot" else (who.site or "")    # a pilot's credential: its own site only
        if limit is not None and (limit or who.role == "agent") and limit != site:
            raise ApiError(403, f"this pilot token is limited to site {limit!r}; it cannot read site {site!r}")

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.server.config.max_body_size:
            self._too_large = True
            self._chunks = []
        else:
            self._chunks.append(chunk)

    # --- request helpers ----------------------------------------------------------------------
    def body(self, optional: bool = False) -> Any:
        """The request body decoded from JSON; 400 with line and column when it is malformed."""
        return decode_body(self.raw_body(), optional)

    def raw_body(self) -> bytes:
        """The request body as received; 413 when it was over the limit."""
        if self._too_large:
            raise ApiError(413, f"request body is over the limit of {self.server.config.max_body_size} bytes")
        return b"".join(self._chunks)

    def object_body(self, optional: bool = False) -> dict:
        body = self.body(optional)
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")
        return body

    def arg(self, name: str, default: str | None = None) -> str | None:
        value = self.get_query_argument(name, None)
        if value:
            schema.check_text(value, name)
        return default if value is None or value == "" else value

    def int_arg(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self.arg(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid(name, f"must be an integer, got {raw!r}") from None
        maximum = schema.INT64_MAX if maximum is None else maximum
        if value < minimum or value > maximum:
            raise invalid(name, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def query_int(self, name: str) -> int:
        """An integer query parameter with the default and bounds of ``schema.QUERY_FIELDS``."""
        field = schema.QUERY_FIELDS[name]
        return self.int_arg(name, field.default, int(field.minimum), int(field.upper()))

    def reply(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload, separators=(",", ":")))

    # --- errors -------------------------------------------------------------------------------
    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, IllegalTransition):
            e = ApiError(409, str(e), "state")
        if _database_unreachable(e):
            log.warning("%s %s: the database did not answer: %s", self.request.method, self.request.path, e)
            e = ApiError(503, "the database is not answering (fail-over?); retry in a few seconds")
        if isinstance(e, ApiError):
            if self._finished:
                return
            self.clear()
            self.set_default_headers()
            if e.status == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="p3s"')
            if e.status == 405:
                self.set_header("Allow", self.allowed_methods())
            self.set_status(e.status)
            self.finish(json.dumps(e.as_json()))
            return
        super()._handle_request_exception(e)

    def allowed_methods(self) -> str:
        """The ``Allow`` header of a 405: the methods this route serves."""
        return ", ".join(sorted(self.roles))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        if status_code == 405:
            self.set_header("Allow", self.allowed_methods())
        if status_code >= 500:
            message = "internal server error (logged on the server)"
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": {"status": status_code, "message": message, "field": None}}))

    def on_finish(self) -> None:
        self.server.metrics_response(self.request.method, self.get_status(), self.request.request_time())


class NotFoundHandler(ApiHandler):
    """Unknown paths under the API get the JSON error shape too."""

    roles = {m: auth.PUBLIC for m in ("GET", "POST", "PUT", "PATCH", "DELETE")}

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"no such API route: {self.request.method} {self.request.path}")


ApiHandler.prepare = _off_the_loop(ApiHandler.prepare)    # the token check may read the database
