"""What every command shares: configuration, the client, tables, and clean error exits."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Iterable, NoReturn, Sequence

from p3s.config import Config, ConfigError, load_config

CLIENT_SETTINGS = ("server_url", "token", "data_dir")


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def setup_logging(config: Config) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file:
        handlers.append(logging.FileHandler(config.log_file))
    logging.basicConfig(level=config.log_level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """-S/--server, --token, --config: where the server is and how to authenticate."""
    group = parser.add_argument_group("server")
    group.add_argument("-S", "--server", dest="server_url", metavar="URL",
                       help="server URL [default: $P3S_SERVER_URL or the config's server_url]")
    group.add_argument("--token", help="bearer token [default: $P3S_TOKEN, the config's token, "
                                       "or the token file the server generated in data_dir]")
    group.add_argument("--config", metavar="FILE", help="YAML config file")
    group.add_argument("--json", action="store_true", help="print JSON instead of tables")


def make_client(args: argparse.Namespace):
    """A Client from flags, environment and config file; config errors exit with code 2."""
    from p3s.auth import client_token
    from p3s.client import Client

    try:
        config = load_config(getattr(args, "config", None),
                             {"server_url": getattr(args, "server_url", None), "token": getattr(args, "token", None)})
    except ConfigError as exc:
        fail(str(exc))
    return Client(config.server_url, client_token(config))


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
            return value[:19].replace("T", " ")      # timestamps: to the second
        return str(value)

    table = [list(headers or [c.rsplit(".", 1)[-1].upper() for c in columns])]
    table += [[cell(row, c) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())


def run_command(func, args: argparse.Namespace) -> None:
    """Run a client command; a refused or failed call exits 1 with the server's message."""
    from p3s.client import P3SError

    try:
        func(args)
    except P3SError as exc:
        fail(str(exc), 1)
    except BrokenPipeError:
        pass


def not_yet(command: str, what: str) -> None:
    """Entry point of a command whose issue has not landed yet: ``--help`` says so."""
    parser = argparse.ArgumentParser(prog=command, description=f"{what} (not yet available in this version).")
    parser.parse_args()
    fail(f"{command} is not yet available in this version: {what}", 3)
