"""What the API accepts: one field table per request body, used to validate and to document.

``Body.validate`` turns a decoded JSON object into clean values or raises ``ApiError(422)`` naming
the field; ``Body.openapi`` gives the same table as an OpenAPI schema, so the document cannot drift
from what the server checks.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re
import uuid as _uuid
from typing import Any, Iterable

from p3s import states
from p3s.errors import invalid

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MISSING = object()
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1      # what MongoDB stores as an integer
MAX_DEPTH = 16                                         # nesting of objects and lists in a body
PID_MAX = (1 << 31) - 1                                # process ids and exit codes are C ints
EPOCH_MAX = 253402300799                               # 9999-12-31T23:59:59Z: the last date Python has
ETA_MAX = 10 * 366 * 86400                             # seconds: an arrival plus this stays a date
# Limits taken from the server's settings at start (p3s.server.app); the defaults are the settings'.
LIMITS: dict[str, int] = {"max_timelimit": 2592000}
_SURROGATE = re.compile("[\ud800-\udfff]")
# The same rules as OpenAPI patterns (ECMA 262 regular expressions).
TEXT_PATTERN = "^[^\\u0000]*$"
UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


# A moment (kind time): seconds before the year 3000, or ISO 8601 text. The pattern is the part of
# ISO 8601 accepted whatever the offset (years 1980-2998; a day past 28 is not always a date).
TIME_MAX = 32503680000
TIME_PATTERN = ("^(19[89][0-9]|2[0-8][0-9]{2}|29[0-8][0-9]|299[0-8])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
                "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$")
# Keys of a stored map (check_key), as a pattern. OpenAPI 3.0 has no propertyNames: the document
# gives it as x-propertyNames.
STORED_KEY_PATTERN = "^[^$.\\u0000][^.\\u0000]*$"


def stored_object(stored_keys: bool = True, levels: int = 2) -> dict:
    """The OpenAPI schema of a free-form object (kind object) as check_tree accepts it: text without
    NUL, integers within 64 bits, keys MongoDB accepts. The document shows ``levels`` levels of
    nesting (the server accepts up to MAX_DEPTH)."""
    scalar = [{"type": "string", "pattern": TEXT_PATTERN}, {"type": "integer", "minimum": INT64_MIN,
              "maximum": INT64_MAX}, {"type": "number", "minimum": -9e18, "maximum": 9e18}, {"type": "boolean"}]
    value: dict = {"anyOf": scalar, "nullable": True}
    keys = {"pattern": STORED_KEY_PATTERN if stored_keys else TEXT_PATTERN}
    for _ in range(levels - 1):
        value = {"anyOf": [*scalar, {"type": "array", "items": value, "maxItems": 1000},
                           {"type": "object", "additionalProperties": value, "x-propertyNames": keys}],
                 "nullable": True}
    return {"type": "object", "maxProperties": 1000, "additionalProperties": value, "x-propertyNames": keys}


def check_text(value: str, where: str) -> None:
    """Refuse what MongoDB cannot store or a payload cannot carry: NUL, lone surrogates."""
    if "\x00" in value:
        raise invalid(where, "must not contain a NUL character")
    if _SURROGATE.search(value):
        raise invalid(where, "must not contain a lone surrogate (not valid Unicode)")


def check_key(key: Any, where: str) -> None:
    """A key of a stored map: what MongoDB accepts as a field name (no leading $, no dot, no NUL)."""
    if not isinstance(key, str) or not key:
        raise invalid(where, "keys must be non-empty strings")
    check_text(key, where)
    if key.startswith("$") or "." in key:
        raise invalid(where, f"key {key!r} may not start with $ or contain a dot")


def check_tree(value: Any, where: str = "body", stored_keys: bool = False, texts: bool = True) -> None:
    """Walk a decoded JSON value (without recursion): nesting at most MAX_DEPTH, integers within
    64 bits, text without NUL or lone surrogates (unless not ``texts``: see may_hold_bad_text),
    and, with ``stored_keys``, keys MongoDB accepts. Raises ApiError(422) naming the first
    offending place. A place's name is only spelled out for an error: a body of 10,000 jobs is
    walked on the event loop."""
    if not isinstance(value, (dict, list)):
        _check_leaf(value, ("",), where, -1, [])
        return
    stack: list[tuple[Any, Any, int]] = [(value, (where,), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise invalid(_path(path), f"is nested more than {MAX_DEPTH} levels deep")
            for key, sub in item.items():
                if stored_keys:
                    if not isinstance(key, str) or not key or key[0] == "$" or "." in key or (texts and _bad_text(key)):
                        check_key(key, _path((path, key)))
                elif texts and isinstance(key, str) and _bad_text(key):
                    check_text(key, _path((path, key)))
                _check_leaf(sub, path, key, depth, stack, texts)
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                raise invalid(_path(path), f"is nested more than {MAX_DEPTH} levels deep")
            for i, sub in enumerate(item):
                _check_leaf(sub, path, i, depth, stack, texts)


def _check_leaf(sub: Any, path: tuple, key: Any, depth: int, stack: list, texts: bool = True) -> None:
    """Check a scalar in place; queue a container (with its path, built lazily) for the walk."""
    if isinstance(sub, (dict, list)):
        stack.append((sub, (path, key), depth + 1))
    elif isinstance(sub, str):
        if texts and _bad_text(sub):
            check_text(sub, _path((path, key)))
    elif isinstance(sub, int) and not isinstance(sub, bool):
        if not INT64_MIN <= sub <= INT64_MAX:
            raise invalid(_path((path, key)), "is outside the range of a 64-bit integer")
    elif isinstance(sub, float) and not math.isfinite(sub):
        raise invalid(_path((path, key)), "must be a finite number")


# In JSON text decoded from UTF-8, a NUL or a lone surrogate can only come from a \\u escape.
_BAD_ESCAPE = re.compile(r"\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def may_hold_bad_text(json_text: str) -> bool:
    """Whether JSON text (decoded from UTF-8) may hold a NUL or a lone surrogate once parsed: if
    not, check_tree need not look at its strings."""
    return _BAD_ESCAPE.search(json_text) is not None


def _bad_text(text: str) -> bool:
    return "\x00" in text or _SURROGATE.search(text) is not None


def _path(path: tuple) -> str:
    """The name of a place from its lazy path: (where,) or (parent path, key or index)."""
    keys = []
    while len(path) == 2:
        path, key = path
        keys.append(key)
    out = path[0]
    for key in reversed(keys):
        if isinstance(key, int) and not isinstance(key, bool):
            out = f"{out}[{key}]"
        else:
            out = f"{out}.{key}" if out else str(key)
    return out


@dataclasses.dataclass(frozen=True)
class Field:
    """One accepted field. ``kind``: str, name, int, bool, env, object, strlist, uuid, number, time."""

    name: str
    kind: str
    help: str
    required: bool = False
    default: Any = MISSING
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | str | None = None     # a number, or the name of one of LIMITS
    nullable: bool = False
    stored_keys: bool = True               # an object stored as given: its keys must suit MongoDB
    aliases: tuple[str, ...] = ()
    max_length: int = 4096
    min_length: int = 0                    # kinds str (and strlist items): shortest text accepted
    min_items: int = 0                     # kind strlist: fewest items accepted
    pattern: str | None = None             # kinds str and strlist items: a regular expression to match
    references: str | None = None          # names a record of this route ('' = none): 422 if there is none

    def clean(self, value: Any, where: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise invalid(where, "must not be null")
        kind = self.kind
        if kind == "time":
            return _moment(value, where)
        if kind in ("int", "number"):
            value = _number(value, where, integer=(kind == "int"))
            if self.minimum is not None and value < self.minimum:
                raise invalid(where, f"must be at least {self.minimum:g}, got {value}")
            top = self.upper()
            if top is not None and value > top:
                raise invalid(where, f"must be at most {top:g}, got {value}")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise invalid(where, f"must be true or false, got {value!r}")
            return value
        if kind in ("str", "name", "uuid"):
            if not isinstance(value, str):
                raise invalid(where, f"must be a string, got {_json_type(value)}")
            if len(value) > self.max_length:
                raise invalid(where, f"is longer than {self.max_length} characters")
            if len(value) < self.min_length:
                raise invalid(where, f"must be at least {self.min_length} characters")
            check_text(value, where)
            if self.pattern is not None and not re.search(self.pattern, value):
                raise invalid(where, f"{value!r} does not match {self.pattern}")
            if kind == "name" and not NAME_RE.match(value):
                raise invalid(where, f"{value!r} is not a valid name (letters, digits and _.:@+- , "
                                     "starting with a letter or digit, at most 128)")
            if kind == "uuid":
                try:
                    value = str(_uuid.UUID(value))
                except ValueError:
                    raise invalid(where, f"{value!r} is not a UUID") from None
            if self.choices is not None and value not in self.choices:
                raise invalid(where, f"must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if kind == "env":
            if not isinstance(value, dict):
                raise invalid(where, f"must be an object of NAME: value, got {_json_type(value)}")
            env = {}
            for key, item in value.items():
                if not ENV_NAME_RE.match(key):
                    raise invalid(f"{where}.{key}", "is not a valid environment variable name")
                if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                    raise invalid(f"{where}.{key}", f"must be a string or number, got {_json_type(item)}")
                if isinstance(item, str):
                    check_text(item, f"{where}.{key}")
                env[key] = item if isinstance(item, str) else str(item)
            return env
        if kind == "object":
            if not isinstance(value, dict):
                raise invalid(where, f"must be an object, got {_json_type(value)}")
            check_tree(value, where, stored_keys=self.stored_keys)
            return value
        if kind == "envnames":
            if not isinstance(value, list) or not all(isinstance(v, str) and ENV_NAME_RE.match(v) for v in value):
                raise invalid(where, "must be a list of environment variable names")
            return list(value)
        if kind == "strlist":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise invalid(where, "must be a list of strings")
            if len(value) < self.min_items:
                raise invalid(where, f"give at least {self.min_items}")
            for i, item in enumerate(value):
                check_text(item, f"{where}[{i}]")
                if self.pattern is not None and not re.search(self.pattern, item):
                    raise invalid(f"{where}[{i}]", f"{item!r} does not match {self.pattern}")
                if self.choices is not None and item not in self.choices:
                    raise invalid(f"{where}[{i}]", f"must be one of {', '.join(self.choices)}, got {item!r}")
            return list(value)
        raise AssertionError(f"unknown field kind {kind}")

    def upper(self) -> float | None:
        """The largest value accepted (kinds int and number), or None."""
        if isinstance(self.maximum, str):
            return LIMITS[self.maximum]
        if self.maximum is None and self.kind == "int":
            return INT64_MAX
        return self.maximum

    def openapi(self) -> dict:
        schema: dict[str, Any] = {
            "int": {"type": "integer"},
            "number": {"type": "number"},
            "time": {"oneOf": [{"type": "number", "minimum": 0, "exclusiveMaximum": True, "maximum": TIME_MAX},
                               {"type": "string", "pattern": TIME_PATTERN}]},
            "bool": {"type": "boolean"},
            "str": {"type": "string", "pattern": TEXT_PATTERN},
            "name": {"type": "string", "pattern": NAME_RE.pattern},
            "uuid": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
            "env": {"type": "object", "additionalProperties": {"type": "string", "pattern": TEXT_PATTERN},
                    "x-propertyNames": {"pattern": ENV_NAME_RE.pattern}},
            "object": stored_object(self.stored_keys),
            "strlist": {"type": "array", "items": {"type": "string", "pattern": TEXT_PATTERN}},
            "envnames": {"type": "array", "items": {"type": "string", "pattern": ENV_NAME_RE.pattern}},
        }[self.kind].copy()
        schema["description"] = self.help + (f" (alias: {', '.join(self.aliases)})" if self.aliases else "")
        # OpenAPI 3.0 has no propertyNames: the key rules are told in words.
        if self.kind == "env":
            schema["description"] += " Names: letters, digits and _, not starting with a digit."
        if self.kind == "object" and self.stored_keys:
            schema["description"] += " Keys: non-empty, not starting with $, without dots or NUL."
        if self.kind in ("str", "uuid") and self.max_length:
            schema["maxLength"] = self.max_length
        if self.kind == "str" and self.min_length:
            schema["minLength"] = self.min_length
        if self.kind == "strlist" and self.min_items:
            schema["minItems"] = self.min_items
        if self.pattern is not None and self.kind == "strlist":
            schema["items"] = {"type": "string", "pattern": self.pattern}
        elif self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.choices and self.kind == "strlist":
            schema["items"] = {"type": "string", "enum": list(self.choices)}
        elif self.choices:
            schema["enum"] = list(self.choices)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        elif self.kind == "int":
            schema["minimum"] = INT64_MIN
        if self.upper() is not None:
            schema["maximum"] = self.upper()
        if self.nullable:
            schema["nullable"] = True
        if self.references:
            schema["x-references"] = self.references
        if self.default is not MISSING and not callable(self.default):
            schema["default"] = self.default
        return schema


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _moment(value: Any, where: str) -> _dt.datetime:
    """A moment given as seconds since the epoch or an ISO 8601 text (UTC when it names no zone),
    as the naive UTC datetime to the millisecond that MongoDB keeps."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?([eE][-+]?\d+)?\s*", value):
        value = float(value)             # seconds, as a query string gives them
    if isinstance(value, str):
        try:
            moment = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise invalid(where, f"must be seconds since the epoch or an ISO 8601 time, got {value!r}") from None
        if moment.tzinfo is not None:
            moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    else:
        seconds = _number(value, where, integer=False)
        if not math.isfinite(seconds) or not 0 <= seconds < 32503680000:      # before the year 3000
            raise invalid(where, f"must be a time between 1970 and 3000, got {value!r}")
        moment = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).replace(tzinfo=None)
    if not 1970 <= moment.year < 3000:
        raise invalid(where, f"must be a time between 1970 and 3000, got {value!r}")
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _number(value: Any, where: str, integer: bool) -> int | float:
    """Numbers, and numbers written as strings (the original's job files say ``"timeout": "100"``)."""
    if isinstance(value, bool):
        raise invalid(where, f"must be a number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise invalid(where, f"must be {'an integer' if integer else 'a number'}, got {value!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(where, f"must be a finite number, got {value!r}")
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise invalid(where, f"must be an integer, got {value!r}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise invalid(where, "is outside the range of a 64-bit integer")
    elif not isinstance(value, (int, float)):
        raise invalid(where, f"must be a number, got {_json_type(value)}")
    return value


class Body:
    """A request body: its fields, and whether it is a creation (defaults, required) or a patch."""

    def __init__(self, title: str, fields: Iterable[Field], patch: bool = False, rules: dict | None = None) -> None:
        self.title = title
        self.fields = {f.name: f for f in fields}
        self.patch = patch
        self.rules = rules or {}             # more of its OpenAPI schema: rules across fields
        self._names = {alias: f for f in self.fields.values() for alias in (f.name, *f.aliases)}

    def validate(self, body: Any, where: str = "") -> dict[str, Any]:
        """Clean one JSON object; raises ApiError(422) naming the first bad field."""
        prefix = f"{where}." if where else ""
        if not isinstance(body, dict):
            raise invalid(where or "body", f"must be a JSON object, got {_json_type(body)}")
        clean: dict[str, Any] = {}
        for key, value in body.items():
            field = self._names.get(key)
            if field is None:
                raise invalid(prefix + key, f"unknown field (accepted: {', '.join(self.fields)})")
            if field.name in clean:
                raise invalid(prefix + key, f"given twice (as {field.name} and its alias)")
            clean[field.name] = field.clean(value, prefix + key)
        if self.patch:
            if not clean:
                raise invalid(where or "body", f"nothing to change (accepted: {', '.join(self.fields)})")
            return clean
        for field in self.fields.values():
            if field.name in clean:
                continue
            if field.required:
                raise invalid(prefix + field.name, "is required")
            if field.default is not MISSING:
                clean[field.name] = field.default() if callable(field.default) else field.default
        return clean

    def openapi(self) -> dict:
        schema: dict[str, Any] = {
            "type": "object",
            "title": self.title,
            "additionalProperties": False,
            "properties": {}
        }
        for field in self.fields.values():
            # Aliases (the original's names) are accepted but not listed: a body giving both a
            # field and its alias is refused, which the document could not say otherwise.
            schema["properties"][field.name] = field.openapi()
        required = [f.name for f in self.fields.values() if f.required and not self.patch]
        if required:
            schema["required"] = required
        if self.patch:
            schema["minProperties"] = 1
        schema.update(self.rules)
        return schema


# --- jobs -------------------------------------------------------------------------------------
_JOB_COMMON = (
    Field("name", "str", "Human-readable name (in a workflow, the DAG vertex).", default="", max_length=256),
    Field("priority", "int", "Higher runs first; any integer.", default=0),
    Field("timelimit", "int", "Seconds the payload may run (default: the server's default_timelimit; at most "
                              "its max_timelimit).", minimum=1, maximum="max_timelimit", aliases=("timeout",)),
    Field("env", "env", "Environment variables for the payload.", default=dict),
    Field("secret_env", "envnames", "Names of env variables whose values are secret: the pilot gets them, "
                                    "but no API answer or page ever shows them (shown as <secret>).", default=list),
    Field("max_attempts", "int", "Runs allowed after unsuccessful ends (1 = no retry).", minimum=1, maximum=1000,
          default=1),
)
JOB_CREATE = Body("JobCreate", (
    Field("uuid", "uuid", "Client-chosen id (optional; must be new). The server makes one otherwise."),
    Field("payload", "str", "Command line, or shell text when env P3S_EXECMODE is set.", required=True),
    Field("jobtype", "name", "Job type: pilots may restrict to types; limits are per type.", default="default"),
    Field("user", "str", "Submitter.", default="", max_length=128),
    Field("params", "str", "Extra command-line arguments appended to the payload.", default=""),
    Field("state", "str", "Initial state.", choices=(states.DEFINED, states.TEMPLATE), default=states.DEFINED),
    Field("site", "str", "Run only on pilots of this site ('' = any).", default="", max_length=128),
    Field("input_file", "str", "Input file path, shown in listings (default: env P3S_INPUT_FILE).", default=""),
    Field("arrived", "time", "When its data arrived (seconds since the epoch or ISO 8601; default: now). "
                             "Its deadline is arrived + ETA.", nullable=True, default=None),
    Field("eta", "int", "Seconds from arrival within which its result is wanted (default: its type's ETA).",
          minimum=1, maximum=ETA_MAX, nullable=True, default=None),
    *_JOB_COMMON,
))
JOB_PATCH = Body("JobPatch", (
    *(dataclasses.replace(f, default=MISSING) for f in _JOB_COMMON),
    Field("state", "str", "New state: defined (from template or an unsuccessful end: a rerun), "
                          "template (hold a defined job) or cancelled.",
          choices=(states.DEFINED, states.TEMPLATE, states.CANCELLED)),
    Field("site", "str", "Run only on pilots of this site ('' = any).", max_length=128),
), patch=True)

# --- pilots -----------------------------------------------------------------------------------
PILOT_REGISTER = Body("PilotRegister", (
    Field("uuid", "uuid", "The pilot's own id (it names its log file with it); the server makes one otherwise."),
    Field("host", "str", "Worker node.", required=True, max_length=256),
    Field("site", "str", "Site the pilot belongs to.", default="", max_length=128),
    Field("pid", "int", "Pilot process id.", minimum=0, maximum=PID_MAX, nullable=True, default=None),
    Field("extra", "str", "Free text, e.g. the batch system's job id.", default="", max_length=256),
    Field("jobtypes", "strlist", "Run only these job types (empty = any).", default=list),
    Field("version", "str", "Pilot software version.", default="", max_length=64),
    Field("key", "str", "A secret of at least 32 characters the pilot chose: it becomes the pilot's credential, "
                        "and a retried registration of the same uuid with the same key is the same pilot "
                        "(the server makes a credential otherwise).", nullable=True, default=None, max_length=256,
          min_length=32),
))
PILOT_EVENT = Body("PilotEvent", (
    Field("event", "str", "What happened.", required=True,
          choices=("heartbeat", "jobstart", "jobstop", "timelimit", "nonstarter", "killed", "stopped")),
    Field("job", "uuid", "The job the event is about.", nullable=True, default=None),
    Field("attempt", "int", "The job's attempt number as offered to the pilot: with the job and the event, what "
                            "makes a repeated report recognisable.", minimum=0, nullable=True, default=None),
    Field("exit_code", "int", "Payload exit code (jobstop).", minimum=-PID_MAX - 1, maximum=PID_MAX, nullable=True,
          default=None),
    Field("pid", "int", "Payload process id (jobstart).", minimum=0, maximum=PID_MAX, nullable=True, default=None),
    Field("ts", "number", "When it happened on the pilot, seconds since the epoch.", minimum=0, maximum=EPOCH_MAX,
          nullable=True, default=None),
    Field("started", "number", "When the payload started (for a job that ends before reporting jobstart).",
          minimum=0, maximum=EPOCH_MAX, nullable=True, default=None),
    Field("usage", "object", "Resource usage of the payload's process tree.", default=dict),
    Field("stdout_tail", "str", "Last lines of the payload's stdout.", nullable=True, default=None, max_length=65536),
    Field("stderr_tail", "str", "Last lines of the payload's stderr.", nullable=True, default=None, max_length=65536),
    Field("message", "str", "Free text (e.g. why a payload could not start).", default="", max_length=4096),
    Field("log_dir", "str", "Directory of the job's .out/.err files on the pilot's host.", nullable=True,
          default=None, max_length=4096),
    Field("output_dir", "str", "The job's $P3S_OUTPUT_DIR on the pilot's host.", nullable=True,
          default=None, max_length=4096),
))
PILOT_REQUEST = Body("PilotRequest", (
    Field("wait", "number", "Seconds to wait for a job (bounded by the server's long_poll_max).",
          minimum=0, nullable=True, default=None),
))
KILL_SELECTOR = Body("KillSelector", (
    Field("uuid", "str", "A pilot's id."),
    Field("host", "str", "All pilots on this host."),
    Field("site", "str", "All pilots of this site."),
    Field("state", "str", "All pilots in this state.", choices=states.PILOT_STATES),
), rules={"minProperties": 1})        # at least one key: an empty selector would stop every pilot

# --- data -------------------------------------------------------------------------------------
_DATA_COMMON = (
    Field("dirpath", "str", "Directory the file is in.", default=""),
    Field("datatype", "str", "Registered data type ('' = none).", default="", references="/datatypes"),
    Field("state", "str", "State of the file.", choices=("defined", "template", "ready", "skipped"),
          default="defined"),
    Field("comment", "str", "Free text.", default=""),
    Field("metadata", "object", "Any metadata.", default=dict),
    Field("size", "int", "Size in bytes.", minimum=0, nullable=True, default=None),
    Field("arrived", "time", "When the file arrived (seconds since the epoch or ISO 8601; default: "
                             "the time of registration).", nullable=True, default=None),
)
DATA_CREATE = Body("DataCreate", (
    Field("name", "str", "File name.", required=True, max_length=1024),
    *_DATA_COMMON,
))
DATA_PATCH = Body("DataPatch", (
    Field("name", "str", "File name.", max_length=1024),
    *(dataclasses.replace(f, default=MISSING) for f in _DATA_COMMON),
), patch=True)
DATATYPE_CREATE = Body("DataTypeCreate", (
    Field("name", "name", "Type name, e.g. TXT.", required=True),
    Field("ext", "str", "File extension with its dot, e.g. .txt.", default=""),
    Field("comment", "str", "Free text.", default=""),
))
DATATYPE_PATCH = Body("DataTypePatch", (
    Field("ext", "str", "File extension with its dot."),
    Field("comment", "str", "Free text."),
), patch=True)

# --- job types, sites, events -----------------------------------------------------------------
ORDERS = ("fifo", "newest-first")
JOBTYPE_SET = Body("JobTypeSet", (
    Field("limit", "int", "Most jobs of this type dispatched+running at once (null = no limit; 0 = paused).",
          minimum=0, nullable=True, default=None),
    Field("comment", "str", "Free text.", default=""),
    *(
        Field("eta", "int", "Seconds from data arrival within which a job of this type is wanted (null: "
                            "the configuration's default, else none: no freshness policy).",
              minimum=1, maximum=ETA_MAX, nullable=True, default=None),
        Field("order", "str", "Order within a priority: fifo, or newest-first (freshest data first).",
              choices=ORDERS, nullable=True, default=None),
        Field("stale", "bool", "Drop a job whose deadline passed before a pilot took it (state stale).",
              nullable=True, default=None),
        Field("stop_running", "bool", "Also stop a running job once past its deadline (state stale).",
              nullable=True, default=None),
        Field("shed", "bool", "Drop at admission a job that cannot meet its deadline, or whose admission "
                              "would push a higher-priority type past its ETA (reason shed).",
              nullable=True, default=None),
        Field("alarm_within_eta", "number", "Alarm when the share of jobs within ETA over 10 minutes falls "
                                            "below this (0-1).", minimum=0, nullable=True, default=None),
    ),
))
JOBTYPE_PATCH = Body("JobTypePatch", tuple(dataclasses.replace(x, default=MISSING) for x in JOBTYPE_SET.fields.values()),
                     patch=True)
_SITE_FIELDS = (
    Field("pilots", "int", "Nominal pilot population.", minimum=0, default=1),
    Field("period", "int", "Seconds between job requests of an idle pilot.", minimum=0, default=10),
    Field("beat", "int", "Heartbeat seconds while a job runs.", minimum=1, default=10),
    Field("cycles", "int", "Idle requests before a pilot stops (0 = never).", minimum=0, default=3),
    Field("lifetime", "int", "Expected pilot lifetime in seconds (alarms).", minimum=0, default=90000),
    Field("server", "str", "Server URL the site's pilots use.", default=""),
    Field("env", "env", "Environment exported by the site's pilots.", default=dict),
    Field("comment", "str", "Free text.", default=""),
)
SITE_CREATE = Body("SiteCreate", (Field("name", "name", "Site name.", required=True), *_SITE_FIELDS))
SITE_PATCH = Body("SitePatch", tuple(dataclasses.replace(f, default=MISSING) for f in _SITE_FIELDS), patch=True)
EVENT_CREATE = Body("EventCreate", (
    Field("kind", "name", "What kind of happening, e.g. note or injector.skip.", required=True),
    Field("message", "str", "Text.", default=""),
    Field("severity", "str", "How serious.", choices=("info", "warning", "error"), default="info"),
    Field("job", "str", "Job concerned.", nullable=True, default=None),
    Field("pilot", "str", "Pilot concerned.", nullable=True, default=None),
    Field("site", "str", "Site concerned.", nullable=True, default=None),
    Field("source", "str", "Who reports it.", default="client"),
    Field("data", "object", "Details.", default=dict),
))

# --- workflows --------------------------------------------------------------------------------
TEMPLATE_ADD = Body("TemplateAdd", (
    Field("yaml", "str", "The template in p3s YAML.", nullable=True, default=None, max_length=1 << 20),
    Field("graphml", "str", "The template in the original p3s GraphML.", nullable=True, default=None,
          max_length=1 << 20),
    Field("name", "name", "Name to store it under (default: the template's own).", nullable=True, default=None),
    Field("filename", "str", "File the text came from (for error messages).", default=""),
    Field("new_version", "bool", "Store as a new version when the name exists.", default=False),
), rules={
    # Exactly one of yaml and graphml (the other absent or null); the text is then parsed and
    # checked as a template, which no schema can say.
    "oneOf": [{"required": [a], "properties": {a: {"type": "string"}, b: {"enum": [None], "nullable": True}}}
              for a, b in (("yaml", "graphml"), ("graphml", "yaml"))],
    "x-content-checked": "yaml or graphml must be a valid p3s template; 422 names what is wrong"})
VERTEX_OVERRIDE = Body("VertexOverride", (
    Field("payload", "str", "Replacement payload."),
    Field("env", "env", "Extra environment."),
    Field("secret_env", "envnames", "Names of env variables whose values no API answer shows (see jobs)."),
    Field("priority", "int", "Replacement priority."),
    Field("timelimit", "int", "Replacement time limit.", minimum=1, maximum="max_timelimit"),
    Field("jobtype", "name", "Replacement job type."),
    Field("eta", "int", "Replacement ETA in seconds (default: the vertex's, else its type's).", minimum=1,
          maximum=ETA_MAX),
), patch=True)
WORKFLOW_CREATE = Body("WorkflowCreate", (
    Field("uuid", "uuid", "Client-chosen id (optional; must be new): makes a retried request safe.",
          nullable=True, default=None),
    Field("template", "name", "Template name.", required=True),
    Field("version", "int", "Template version (default: the latest).", minimum=1, nullable=True, default=None),
    Field("name", "str", "Workflow name (default: the template's).", default="", max_length=256),
    Field("description", "str", "Free text.", default=""),
    Field("user", "str", "Owner (default: the token's name).", default=""),
    Field("state", "str", "defined starts it now; template creates it stopped.",
          choices=(states.WF_DEFINED, states.WF_TEMPLATE), default=states.WF_DEFINED),
    Field("overrides", "object", "Per-vertex changes: {vertex: {payload, env, priority, timelimit, jobtype}}.",
          default=dict, stored_keys=False),
    Field("inputs", "object", "Input files: {edge id or data tag: path}.", default=dict, stored_keys=False),
    Field("filenames", "str", "File names of the other edges: generated (uuid + extension), template "
                              "(as in the template), derived (from the first input's name).",
          choices=("generated", "template", "derived"), default="generated"),
    Field("dirpath", "str", "Directory for generated files (default: each edge's dirpath).", default=""),
    Field("arrived", "time", "When its data arrived (default: the earliest arrival of its registered input "
                             "files, else now).", nullable=True, default=None),
))


# --- query parameters -------------------------------------------------------------------------
# The typed query parameters: handlers read them with these bounds and the OpenAPI document says
# the same (p3s.server.openapi). ``state`` and ``sort`` depend on the route: see state_pattern and
# the handlers' ``sortable``.
QUERY_FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("limit", "int", "Most items to return.", minimum=1, maximum=1000, default=100),
    Field("offset", "int", "Items to skip.", minimum=0, default=0),
    Field("hours", "int", "Window in hours.", minimum=1, maximum=168, default=1),
    Field("version", "int", "Version (0 or absent: the latest).", minimum=0, default=0),
    Field("format", "str", "Add the text in this format.", choices=("yaml", "graphml", "json")),
    Field("all", "str", "true to act on every item when no filter is given.", choices=("true", "false")),
    Field("severity", "str", "Severity.", choices=("info", "warning", "error")),
    Field("minutes", "int", "Window in minutes.", minimum=1, maximum=1440, default=60),
)}


def state_pattern(allowed: Iterable[str]) -> str:
    """The pattern of a comma-separated list of states from ``allowed`` (the ``state`` filter)."""
    one = "(" + "|".join(sorted(allowed)) + ")"
    return f"^{one}(,{one})*$"

