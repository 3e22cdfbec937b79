"""Settings: one table of every setting, read from defaults, a YAML file, ``P3S_*`` variables and flags.

Precedence, lowest first: the defaults below, the config file (``--config FILE``, else
``$P3S_CONFIG``, else ``~/.config/p3s/p3s.yaml`` when it exists), environment variables named
``P3S_`` + the setting's name in capitals, then command-line flags. ``conf/p3s.yaml`` documents the
same table; a test keeps the two in step.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(Exception):
    """A setting could not be read; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    kind: type
    help: str

    @property
    def env_name(self) -> str:
        return "P3S_" + self.name.upper()


# Security (p3s.auth, p3s.sessions, p3s.server.proxies, p3s.web.metrics): transport, sessions, exposure.
SECURITY_SETTINGS = (
    Setting("certfile", "", str, "TLS certificate chain (PEM) of the server; with keyfile, it serves https."),
    Setting("keyfile", "", str, "TLS private key (PEM) of the server."),
    Setting("ca_file", "", str, "CA certificates (PEM) clients and pilots trust for https (default: the system's)."),
    Setting("session_days", 7, float, "Days a monitor login lasts (logging out ends it at once)."),
    Setting("trusted_proxies", [], list,
            "Addresses (or networks, a.b.c.d/n) of reverse proxies whose X-Real-Ip/X-Forwarded-For are believed."),
    Setting("metrics_public", False, bool, "Serve /metrics without a token (else a metrics or admin token)."),
    Setting("i_understand_no_auth_is_open", False, bool,
            "Allow no_auth on an address other than loopback: anyone reaching the port runs code on every node."),
)

# Retention (p3s.retention): what ended is archived to <data_dir>/archive and removed, by age and by count.
RETENTION_SETTINGS = (
    Setting("retention_period", 2, float, "Seconds between retention slices (0: retention off)."),
    Setting("retention_slice", 50, int, "Most records of a kind archived and removed per slice (each slice holds the server for about 0.4 ms a record)."),
    *(setting for kind, days, what in (
        ("jobs", 30, "ended jobs that are not part of a workflow"),
        ("pilots", 30, "stopped and lost pilots"),
        ("workflows", 30, "ended workflows, with their jobs and data records"),
        ("data", 90, "data records outside any workflow (the injector's list of files seen)"),
        ("events", 30, "events"))
      for setting in (
        Setting(f"retain_{kind}_days", days, float, f"Archive and remove {what} this many days after they ended "
                                                     "(0: no age limit)."),
        Setting(f"retain_{kind}_max", 0, int, f"Keep at most this many {kind} records; the oldest {what} go "
                                              "first (0: no count limit)."))),
)

SETTINGS: tuple[Setting, ...] = (
    Setting("server_url", "http://127.0.0.1:8470", str, "URL where clients and pilots reach the server."),
    Setting("host", "127.0.0.1", str, "Address the server listens on."),
    Setting("port", 8470, int, "Port the server listens on (0 picks a free one)."),
    Setting("data_dir", "~/.p3s", str, "Directory for the embedded database, the generated token and the lock."),
    Setting("db", "", str, "Database URI: empty for the embedded store in data_dir, or mongodb://host/…"),
    Setting("db_name", "p3s", str, "Database name (used when the URI names none)."),
    Setting("heartbeat", 10, int, "Seconds between pilot heartbeats while a payload runs."),
    Setting("pilot_lost_timeout", 60, int, "Seconds without contact after which a pilot is lost."),
    Setting("default_timelimit", 1000, int, "Time limit in seconds for jobs that give none."),
    Setting("timelimit_grace", 30, int, "Seconds past a job's time limit before the server itself ends it."),
    Setting("max_timelimit", 2592000, int, "Largest time limit in seconds a job may ask for."),
    Setting("dispatch_timeout", 120, int,
            "Seconds a job may stay dispatched without its pilot reporting it started; then it goes back to "
            "the queue (no attempt counted)."),
    Setting("long_poll_wait", 20, int, "Seconds a pilot's job request waits for work when it asks for no wait."),
    Setting("long_poll_max", 30, int, "Upper bound on the wait a pilot may ask for."),
    Setting("contact_write_period", 2, float,
            "Seconds between writes of the pilots' contacts (last contact, current job, state), kept in memory "
            "meanwhile; at most a quarter of pilot_lost_timeout."),
    Setting("reaper_period", 5, int, "Seconds between checks for lost pilots and overdue jobs."),
    Setting("sync_period", 2, float, "Seconds between re-reads of the ready queue, limits and running jobs when "
                                      "several servers share one MongoDB (how soon one sees another's jobs)."),
    Setting("checkpoint_period", 2, int, "Seconds after which a write to the embedded store is synced to disk at "
                                         "the latest (checkpoints run in small steps meanwhile)."),
    Setting("usage_points", 360, int, "Resource-usage samples kept per job (oldest dropped first)."),
    Setting("max_body_size", 1048576, int, "Largest API request body in bytes; larger ones get 413 (other routes: 64 KiB)."),
    Setting("idle_timeout", 60, int,
            "Seconds a connection may stay without sending a request (new, or kept alive between requests)."),
    Setting("body_timeout", 60, int, "Seconds a request body may take to arrive."),
    Setting("tokens", [], list, "Bearer tokens: a list of {token or token_sha256, role, name}; role is admin, "
                               "client, pilot or metrics; a pilot token may have site and max_pilots."),
    Setting("token", "", str, "Token that clients and pilots send (else the generated one in data_dir)."),
    Setting("no_auth", False, bool, "Serve without authentication (must be asked for explicitly)."),
    Setting("log_level", "INFO", str, "Logging level: DEBUG, INFO, WARNING or ERROR."),
    Setting("job_log_dirs", ["~/.p3s", "/tmp/p3s"], list,
            "Directories under which the monitor may show pilots' job log files (the server must see them)."),
    Setting("alarm_backlog", 1000, int, "Alarm when more jobs than this wait defined."),
    Setting("alarm_lost_pilots", 3, int, "Alarm when more pilots than this were lost in the last hour."),
    Setting("alarm_failure_rate", 0.5, float,
            "Alarm when the share of a job type's jobs ending unsuccessfully in 10 minutes exceeds this."),
    Setting("alarm_failure_min", 5, int, "Unsuccessful jobs of a type in 10 minutes before its rate can alarm."),
    Setting("alarm_pilot_shortfall", 0.1, float,
            "Alarm when a site's live pilots fall short of its nominal count by more than this fraction."),
    Setting("blackhole_jobs", 5, int,
            "A host whose last this many jobs were all unsuccessful is flagged a black hole (0: never)."),
    Setting("blackhole_drain", True, bool, "Give a flagged black-hole host's pilots no new work until it is cleared."),
    Setting("fleet_options", [], list, "Default p3s-fleet options, read before the command line's own (which win), "
                                       "e.g. [--backend, slurm, --partition, short, --time, '2:00:00']."),
    Setting("log_file", "", str, "Also log to this file (empty: stderr only)."),
    *SECURITY_SETTINGS,
    *RETENTION_SETTINGS,
    Setting("jobtype_defaults", {}, dict,
            "Freshness defaults per job type ('*' for every type): {TYPE: {eta, order, stale, stop_running, "
            "shed, alarm_within_eta}}; the job type's own settings (API, p3s-job types) win."),
    Setting("alarm_within_eta", 0.9, float,
            "Alarm when a job type's share of jobs within its ETA over 10 minutes falls below this."),
    Setting("result_dirs", ["~/.p3s", "/tmp/p3s"], list,
            "Directories under which the monitor may serve jobs' output files (the server must see them)."),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ROLES = ("admin", "client", "pilot", "metrics")


def _coerce(setting: Setting, value: Any, where: str) -> Any:
    """Convert ``value`` to the setting's type or raise ConfigError naming ``where``."""
    kind = setting.kind
    problem = f"{where}: key '{setting.name}'"
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{problem}: expected true or false, got {value!r}")
    if kind in (int, float):
        expected = "an integer" if kind is int else "a number"
        if isinstance(value, bool):
            raise ConfigError(f"{problem}: expected {expected}, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{problem}: expected {expected}, got {value!r}") from None
        if number < 0:
            raise ConfigError(f"{problem}: must not be negative, got {number}")
        return number
    if kind is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{problem}: not a YAML/JSON mapping: {exc}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{problem}: expected a mapping, got {type(value).__name__}")
        return value
    if kind is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else []
            except yaml.YAMLError as exc:
                raise ConfigError(f"{problem}: not a YAML/JSON list: {exc}") from None
        if not isinstance(value, list):
            raise ConfigError(f"{problem}: expected a list, got {type(value).__name__}")
        return value
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise ConfigError(f"{problem}: expected a string, got {type(value).__name__}")
    return str(value)


def _check_tokens(tokens: list, where: str) -> list[dict]:
    checked = []
    for i, entry in enumerate(tokens):
        here = f"{where}: key 'tokens[{i}]'"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here}: expected a mapping with token and role")
        unknown = set(entry) - {"token", "token_sha256", "role", "name", "site", "max_pilots"}
        if unknown:
            raise ConfigError(f"{here}: unknown field(s) {', '.join(sorted(unknown))}")
        token, hashed, role = entry.get("token"), entry.get("token_sha256"), entry.get("role")
        if (token is None) == (hashed is None):
            raise ConfigError(f"{here}: give exactly one of 'token' and 'token_sha256'")
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise ConfigError(f"{here}: 'token' must be a string of at least 16 characters")
        if hashed is not None and not (isinstance(hashed, str) and re.fullmatch(r"[0-9a-f]{64}", hashed)):
            raise ConfigError(f"{here}: 'token_sha256' must be 64 lower-case hex digits (sha256sum of the token)")
        if role not in ROLES:
            raise ConfigError(f"{here}: 'role' must be one of {', '.join(ROLES)}, got {role!r}")
        item = {"role": role, "name": str(entry.get("name") or role)}
        item.update({"token": token} if token is not None else {"token_sha256": hashed})
        for key, kind in (("site", str), ("max_pilots", int)):
            value = entry.get(key)
            if value is None:
                continue
            if role != "pilot":
                raise ConfigError(f"{here}: '{key}' limits a pilot (bootstrap) token only")
            if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value < 0):
                raise ConfigError(f"{here}: '{key}' must be {'a string' if kind is str else 'a non-negative integer'}")
            item[key] = value
        checked.append(item)
    return checked


def _check_jobtype_defaults(table: dict, where: str) -> dict[str, dict]:
    """Each entry validated as a job type's settings would be by the API."""
    from p3s import schema
    from p3s.errors import ApiError

    checked = {}
    for name, entry in table.items():
        try:
            checked[str(name)] = schema.JOBTYPE_PATCH.validate(entry if entry else {"eta": None}, str(name))
        except ApiError as exc:
            raise ConfigError(f"{where}: key 'jobtype_defaults': {exc.message}") from None
    return checked


class Config(Mapping[str, Any]):
    """The settings in force, readable as ``cfg.port`` or ``cfg['port']``."""

    def __init__(self, values: dict[str, Any], source: str | None) -> None:
        self._values = values
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self._values["data_dir"]))

    def replace(self, **changes: Any) -> "Config":
        values = dict(self._values)
        for key, value in changes.items():
            values[key] = _coerce(BY_NAME[key], value, "override")
        return Config(values, self.source)


def default_config_path() -> Path:
    return Path(os.path.expanduser("~/.config/p3s/p3s.yaml"))


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse one YAML config file; every problem is reported as ``file:line:col`` or by key."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    values = {}
    for key, value in data.items():
        if key not in BY_NAME:
            raise ConfigError(f"{path}: unknown key '{key}' (known: {', '.join(BY_NAME)})")
        values[key] = _coerce(BY_NAME[key], value, str(path))
    return values


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the Config from defaults, file, environment and ``overrides`` (flags; None = unset)."""
    environ = os.environ if environ is None else environ
    values = {s.name: s.default for s in SETTINGS}
    source = None
    if path is None and environ.get("P3S_CONFIG"):
        path = environ["P3S_CONFIG"]
    if path is not None:
        source = str(path)
        values.update(read_config_file(Path(path)))
    elif default_config_path().is_file():
        source = str(default_config_path())
        values.update(read_config_file(default_config_path()))
    for setting in SETTINGS:
        if setting.env_name in environ:
            values[setting.name] = _coerce(setting, environ[setting.env_name], f"environment {setting.env_name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(BY_NAME[key], value, f"option --{key.replace('_', '-')}")
    values["tokens"] = _check_tokens(values["tokens"], source or "tokens")
    values["jobtype_defaults"] = _check_jobtype_defaults(values["jobtype_defaults"], source or "jobtype_defaults")
    level = str(values["log_level"]).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{source or 'log_level'}: key 'log_level': expected one of {', '.join(LOG_LEVELS)}")
    values["log_level"] = level
    if values["long_poll_wait"] > values["long_poll_max"]:
        values["long_poll_wait"] = values["long_poll_max"]
    return Config(values, source)


def add_config_arguments(parser, names: tuple[str, ...], short: Mapping[str, str] | None = None) -> None:
    """Add ``--config`` and a ``--NAME`` flag for each named setting to an argparse parser."""
    short = short or {}
    parser.add_argument("--config", metavar="FILE", help="YAML config file (default: $P3S_CONFIG or ~/.config/p3s/p3s.yaml)")
    for name in names:
        setting = BY_NAME[name]
        flags = [f"--{name.replace('_', '-')}"] + ([short[name]] if name in short else [])
        if setting.kind is bool:
            parser.add_argument(*flags, dest=name, action="store_const", const=True, default=None, help=setting.help)
        else:
            metavar = "N" if setting.kind is int else name.upper()
            parser.add_argument(*flags, dest=name, metavar=metavar, default=None, help=f"{setting.help} [default: {setting.default}]")


def config_from_args(args, names: tuple[str, ...]) -> Config:
    """Load the Config using the flags an argparse namespace carries for ``names``."""
    return load_config(getattr(args, "config", None), {n: getattr(args, n, None) for n in names})

