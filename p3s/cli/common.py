"""What every command shares: configuration, the client, tables, and clean error exits."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
from typing import Any, Callable, Iterable, NoReturn, Sequence

from p3s.config import Config, ConfigError, load_config

CLIENT_SETTINGS = ("server_url", "token", "data_dir", "ca_file")


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def stop_processes(procs: Iterable[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM every process still running, then wait for each; one that outlasts ``timeout``
    seconds is killed."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def setup_logging(config: Config) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file:
        handlers.append(logging.FileHandler(config.log_file))
    logging.basicConfig(level=config.log_level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pymongo logs every command at DEBUG (a few ms each): p3s's debug log is about p3s.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, logging.getLogger().level))


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """-S/--server, --token, --config: where the server is and how to authenticate."""
    group = parser.add_argument_group("server")
    group.add_argument("-S", "--server", dest="server_url", metavar="URL",
                       help="server URL [default: $P3S_SERVER_URL or the config's server_url]")
    group.add_argument("--token", help="bearer token, visible to every local user in ps: prefer --token-file or "
                                       "$P3S_TOKEN [default: $P3S_TOKEN, the config's token, or the token file the "
                                       "server generated in data_dir]")
    group.add_argument("--token-file", metavar="FILE",
                       help="file holding the token, readable by its owner only (keeps it out of ps)")
    group.add_argument("--ca-file", dest="ca_file", metavar="FILE",
                       help="CA certificates (PEM) to verify an https server with [default: $P3S_CA_FILE, the "
                            "config's ca_file, or the system's]")
    group.add_argument("--config", metavar="FILE", help="YAML config file")
    group.add_argument("--json", action="store_true", help="print JSON instead of tables")


def make_client(args: argparse.Namespace):
    """A Client from flags, environment and config file; config errors exit with code 2."""
    from p3s.auth import client_token
    from p3s.pilot.client import Client, TokenFileError, read_token_file

    if getattr(args, "token", None) and not getattr(args, "_token_warned", False):
        args._token_warned = True       # once per command, however many clients it makes
        print("warning: --token shows the token to every user of this machine (ps); use --token-file FILE "
              "(owner-only) or $P3S_TOKEN instead", file=sys.stderr)
    try:
        config = load_config(getattr(args, "config", None),
                             {"server_url": getattr(args, "server_url", None), "token": getattr(args, "token", None),
                              "ca_file": getattr(args, "ca_file", None)})
    except ConfigError as exc:
        fail(str(exc))
    token = client_token(config)
    if getattr(args, "token_file", None):
        try:
            token = read_token_file(args.token_file)
        except TokenFileError as exc:
            fail(str(exc))
    return Client(config.server_url, token, retries=2, ca_file=config.ca_file or None)


def number_type(kind: type, minimum: float = 0) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` (int or float) of at least ``minimum``."""
    what = "an integer" if kind is int else "a number"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value
    return convert


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def print_table(rows: Iterable[dict], columns: Sequence[str], headers: Sequence[str] | None = None) -> None:
    """A plain aligned text table of ``columns`` (dotted names reach into nested dicts)."""
    def cell(row: dict, column: str) -> str:
        value: Any = row
        for part in column.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return "-"
        if isinstance(value, str) and len(value) > 19 and value[4:5] == "-" and value.endswith("Z"):
            return value[:19].replace("T", " ") + "Z"    # timestamps: to the second, UTC, and say so
        return str(value)

    table = [list(headers or [c.rsplit(".", 1)[-1].upper() for c in columns])]
    table += [[cell(row, c) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    coloured = {i for i, c in enumerate(columns) if c.rsplit(".", 1)[-1] in ("state", "status")}
    for n, row in enumerate(table):
        line = "  ".join((paint(value) if n and i in coloured else "") + value.ljust(width)
                         + (RESET if n and i in coloured and paint(value) else "")
                         for i, (value, width) in enumerate(zip(row, widths)))
        print(line.rstrip())


# States coloured on a terminal (never when NO_COLOR is set, https://no-color.org, or when piped).
STATE_COLOURS = {"finished": "32", "running": "36", "dispatched": "36", "defined": "34", "idle": "34",
                 "failed": "31;1", "timelimit": "33", "pilot_lost": "35", "lost": "35", "killed": "35",
                 "nonstarter": "31", "cancelled": "33", "stopped": "2", "template": "2", "alarm": "31;1",
                 "ok": "32", "silenced": "33"}
RESET = "\033[0m"


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (to anything non-empty)."""
    import os
    stream = stream or sys.stdout
    return not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


def paint(state: str) -> str:
    """The escape sequence that colours ``state`` on this terminal ('' for none)."""
    code = STATE_COLOURS.get(state.strip())
    return f"\033[{code}m" if code and use_colour() else ""


def run_command(func, args: argparse.Namespace) -> None:
    """Run a client command; a refused or failed call exits 1 with the server's message."""
    from p3s.pilot.client import P3SError

    try:
        func(args)
    except P3SError as exc:
        fail(str(exc), 1)
    except BrokenPipeError:
        pass


def check_site(client: Any, site: str, states: Iterable[str] = ()) -> None:
    """Exit 2 when ``site`` names no defined site (a mistyped flag must not pass as "0 found")."""
    known = {s["name"] for s in client.list("sites")["items"]}
    if site in known:
        return
    hint = f" (-s is the site; for the state say -A {site})" if site in states else ""
    fail(f"no site {site!r} is defined and nothing matched it{hint}; sites: {', '.join(sorted(known)) or 'none'}")


def json_type(value: Any) -> str:
    """How a decoded JSON value is called in messages: 'an object', 'a list', …"""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def load_json_list(path: str, what: str) -> list[dict]:
    """The non-empty list of objects in JSON file ``path``; anything else exits with code 2.

    Malformed JSON is reported as ``FILE:LINE:COL: message``, the way compilers do.
    """
    try:
        with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as handle:
            text = handle.read()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}", file=sys.stderr)
        raise SystemExit(2) from None
    if not isinstance(data, list):
        hint = " (wrap it in [ ])" if isinstance(data, dict) else ""
        fail(f"{path}: expected a list of {what}s (JSON objects), got {json_type(data)}{hint}")
    if not data:
        fail(f"{path}: the list is empty; nothing to do")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            fail(f"{path}: item {i} is {json_type(item)}, not a {what} (a JSON object)")
    return data


def parse_pairs(pairs: Iterable[str] | None, option: str) -> dict[str, str]:
    """``["K=V", …]`` as a dict; a pair without ``=`` exits with code 2."""
    result = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"{option} expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def split_csv(values: Iterable[str] | None) -> list[str]:
    """Repeated and comma-separated values, flattened: ``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def add_input_file_arguments(parser: argparse.ArgumentParser, dest: str, what: str) -> None:
    """``-j/--json-in FILE``: the input file (``--json`` alone asks for JSON output)."""
    parser.add_argument("-j", "--json-in", "--json_in", dest=dest, metavar="FILE",
                        help=f"JSON file holding a list of {what}s ('-' = standard input)")


class Failures:
    """Per-item refusals of a command that goes on with the other items, then exits 1."""

    def __init__(self, prog: str) -> None:
        self.prog, self.count = prog, 0

    def each(self, keys: Iterable[str], action: Callable[[str], Any]) -> list[Any]:
        """``action(key)`` for every key; a refusal is reported and skipped, an unreachable server stops."""
        from p3s.pilot.client import P3SError

        results = []
        for key in keys:
            try:
                results.append(action(key))
            except P3SError as exc:
                if exc.status == 0:
                    raise
                self.count += 1
                print(f"{self.prog}: error: {key}: {exc}", file=sys.stderr)
        return results

    def exit_if_any(self) -> None:
        if self.count:
            raise SystemExit(1)


def print_record(record: dict, order: Iterable[str] = ()) -> None:
    """``key: value`` lines, ``order`` first; objects as compact JSON, multi-line text indented."""
    keys = [k for k in order if k in record] + sorted(k for k in record if k not in order)
    width = max(len(k) for k in keys) + 1
    for key in keys:
        value = record[key]
        if isinstance(value, list) and key.endswith("_series"):
            value = f"{len(value)} samples"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        elif isinstance(value, str) and "\n" in value:
            value = "\n" + "\n".join("    " + line for line in value.rstrip("\n").splitlines())
        print(f"{key + ':':{width}} {'-' if value is None else value}".rstrip())


# --- helpers ----------------------------------------------------------------------------------
