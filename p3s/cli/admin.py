"""`p3s-admin`: operate a long-running server: its archive, purges and restores.

    p3s-admin archive [--kind K]                                   policy, totals, archive files
    p3s-admin purge [-k KIND…] [--older-than DAYS] [--keep N] [--dry-run]
    p3s-admin restore KIND DAY… [--offline [--data-dir DIR]]
    p3s-admin compact [--data-dir DIR]                             give purged space back (server stopped)

Every command talks to the server's admin API (an admin token is needed), except
``restore --offline`` and ``compact``, which open the embedded store's files themselves and so
need the server stopped (the data directory's lock refuses them otherwise).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import sys

from p3s.archive import KINDS, ArchiveError, check_day
from p3s.cli.common import add_client_arguments, fail, make_client, print_json, print_table, run_command

PROG = "p3s-admin"


def _days(items: list[str]) -> list[str]:
    """Days, each YYYY-MM-DD or a range FIRST..LAST (inclusive)."""
    out: list[str] = []
    for item in items:
        first, sep, last = item.partition("..")
        try:
            check_day(first)
            if sep:
                check_day(last)
        except ArchiveError as exc:
            fail(str(exc))
        if not sep:
            out.append(first)
            continue
        day, end = _dt.date.fromisoformat(first), _dt.date.fromisoformat(last)
        if end < day or (end - day).days > 366:
            fail(f"{item}: a range goes forward and spans at most 366 days")
        while day <= end:
            out.append(day.isoformat())
            day += _dt.timedelta(days=1)
    return list(dict.fromkeys(out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Retention, archive and restore of a p3s server.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("archive", help="the retention policy, what it archived, and the archive's files")
    p.add_argument("--kind", choices=KINDS, help="only the files of this kind")
    add_client_arguments(p)
    p = sub.add_parser("purge", help="archive and remove now what the policy (or the limits given) lets go")
    p.add_argument("-k", "--kind", action="append", choices=KINDS, help="kind to purge (repeat; default all)")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="what ended more than DAYS days ago "
                                                                    "(instead of the configured age)")
    p.add_argument("--keep", type=int, metavar="N", help="keep at most N records of each kind "
                                                         "(instead of the configured count)")
    p.add_argument("--dry-run", action="store_true", help="only count what would go")
    add_client_arguments(p)
    p = sub.add_parser("restore", help="put archived records back (records already there are skipped)")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("days", nargs="+", metavar="DAY", help="YYYY-MM-DD, or a range FIRST..LAST")
    p.add_argument("--offline", action="store_true",
                   help="open the embedded store directly instead of asking the server (the server must be stopped)")
    p.add_argument("--data-dir", help="data directory for --offline [default: the config's data_dir]")
    add_client_arguments(p)
    p = sub.add_parser("compact", help="rewrite the embedded store's files to give the space of removed records "
                                       "back to the file system (the server must be stopped)")
    p.add_argument("--data-dir", help="data directory [default: the config's data_dir]")
    p.add_argument("--config", metavar="FILE", help="YAML config file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "compact":
        rows = compact(args)
        print_json(rows) if args.json else print_table(rows, ("file", "bytes_before", "bytes_after"))
        return
    if args.command == "restore" and args.offline:
        print_result(args, restore_offline(args))
        return
    client = make_client(args)
    if args.command == "archive":
        status = client.call("GET", "/admin/retention", query={"kind": args.kind})
        if args.json:
            print_json(status)
            return
        archived = status["archived"]
        print(f"archive: {status['archive_dir']}   (a slice of {status['slice']} every {status['period']} s)")
        print_table([{"kind": k, **rule, "archived": archived.get(k, 0),
                      "removed_since_start": status["removed_since_start"].get(k, 0)}
                     for k, rule in status["policy"].items()],
                    ("kind", "days", "keep", "archived", "removed_since_start"),
                    ("KIND", "KEEP DAYS", "KEEP MAX", "ARCHIVED", "SINCE START"))
        if status["files"]:
            print()
            print_table(status["files"], ("kind", "day", "bytes", "path"))
    elif args.command == "purge":
        body = {"kinds": args.kind or list(KINDS), "older_than_days": args.older_than, "keep": args.keep,
                "dry_run": args.dry_run}
        reply = client.call("POST", "/admin/purge", body, timeout=24 * 3600, retries=0)
        if args.json:
            print_json(reply)
            return
        verb = "would remove" if reply["dry_run"] else "removed"
        print_table([{"kind": k, **v} for k, v in reply["kinds"].items()], ("kind", "removed", "archived_bytes"),
                    ("KIND", verb.upper(), "ARCHIVED BYTES"))
    else:
        reply = client.call("POST", "/admin/restore", {"kind": args.kind, "days": _days(args.days)},
                            timeout=24 * 3600, retries=0)
        print_result(args, reply)


def print_result(args: argparse.Namespace, reply: dict) -> None:
    if args.json:
        print_json(reply)
    else:
        print(f"restored {reply['restored']} {args.kind}; {reply['skipped']} already there")


def restore_offline(args: argparse.Namespace) -> dict:
    """Restore with the server stopped: open the store as the server does, restore, close it cleanly."""
    from p3s.archive import ArchiveError as _ArchiveError
    from p3s.config import ConfigError, load_config
    from p3s.errors import ApiError
    from p3s.server.app import P3SServer
    from p3s.store import StoreError

    try:
        config = load_config(args.config, {"data_dir": args.data_dir})
    except ConfigError as exc:
        fail(str(exc))
    days = _days(args.days)

    async def work() -> dict:
        server = P3SServer(config)
        try:
            server.open()
        except StoreError as exc:
            fail(f"{exc}; stop it, or restore through it without --offline")
        try:
            return await server.retention.restore(args.kind, days)
        finally:
            await server.stop()

    try:
        return asyncio.run(work())
    except (ApiError, _ArchiveError) as exc:
        fail(getattr(exc, "message", str(exc)), 1)


def compact(args: argparse.Namespace) -> list[dict]:
    """VACUUM every collection file of the embedded store, holding the data directory's lock."""
    import sqlite3
    from pathlib import Path

    from p3s.config import ConfigError, load_config
    from p3s.store import DataDirLock, StoreError

    try:
        config = load_config(args.config, {"data_dir": args.data_dir})
    except ConfigError as exc:
        fail(str(exc))
    if config.db:
        fail("compact is for the embedded store; MongoDB reuses and compacts its own space")
    folder = Path(config.data_path) / "db" / config.db_name
    if not folder.is_dir():
        fail(f"no embedded store in {folder}")
    lock = DataDirLock(config.data_path)
    try:
        lock.acquire()
    except StoreError as exc:
        fail(f"{exc}; stop it first")
    rows = []
    try:
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")):
                continue
            size = lambda: sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())  # noqa: E731
            before = size()
            connection = sqlite3.connect(path)
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                connection.execute("VACUUM")
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()
            rows.append({"file": str(path), "bytes_before": before, "bytes_after": size()})
    finally:
        lock.release()
    return rows


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_command(run, args)


if __name__ == "__main__":
    sys.argv[0] = PROG
    main()
