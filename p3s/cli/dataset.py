"""`p3s-dataset`: register, list, look up, adjust and delete data files; manage data types.

    p3s-dataset register PATH… [-T TYPE] [--dirpath DIR] [--meta K=V]   or   register -j FILE
    p3s-dataset list [--name N] [-T TYPE] [-s STATE] [--workflow W]
    p3s-dataset show UUID
    p3s-dataset lookup NAME            exit 0 when a file of that name is registered, 1 if not
    p3s-dataset adjust UUID [--name N] [-s STATE] [--comment C] [-T TYPE] [--meta K=V]
    p3s-dataset delete UUID…
    p3s-dataset types | add-type NAME --ext .txt [--comment C] | delete-type NAME
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from p3s.cli.common import (Failures, add_client_arguments, add_input_file_arguments, fail, load_json_list,
                            make_client, parse_pairs, print_json, print_record, print_table, run_command, split_csv)

PROG = "p3s-dataset"
DATA_STATES = ("defined", "template", "ready", "skipped")
SORTABLE = ("ts_reg", "ts_upd", "name", "state", "datatype", "size")
COLUMNS = ("uuid", "name", "dirpath", "datatype", "state", "size", "ts_reg")
SHOW_ORDER = ("uuid", "name", "dirpath", "datatype", "state", "size", "comment", "metadata", "workflow",
              "datatag", "source", "target", "source_job", "target_job", "ts_reg", "ts_upd")
TYPE_COLUMNS = ("name", "ext", "comment")


def _print_files(files: list[dict], args: argparse.Namespace) -> None:
    if args.json:
        print_json(files)
    elif files:
        print_table(files, COLUMNS)


# --- data files -------------------------------------------------------------------------------
def describe_path(path: str) -> dict:
    """A data file record for ``path``: its base name, its absolute directory, and its size if it exists."""
    name = os.path.basename(path.rstrip("/"))
    if not name:
        fail(f"{path!r} does not name a file")
    record: dict[str, Any] = {"name": name, "dirpath": os.path.dirname(os.path.abspath(path))}
    if os.path.isfile(path):
        record["size"] = os.path.getsize(path)
    return record


def _records(args: argparse.Namespace) -> list[dict]:
    records = [dict(item) for item in load_json_list(args.data_file, "data file description")] \
        if args.data_file else []
    records += [describe_path(path) for path in args.paths]
    if args.arrived == "mtime":            # each file's own modification time
        for record, path in zip(records[len(records) - len(args.paths):], args.paths):
            if os.path.isfile(path):
                record["arrived"] = os.path.getmtime(path)
        args.arrived = None
    if not records:
        args.parser.error("give the files to register: PATH... or -j FILE")
    meta = parse_pairs(args.meta, "--meta")
    overrides = {k: v for k, v in (("datatype", args.type), ("dirpath", args.dirpath), ("state", args.state),
                                   ("comment", args.comment), ("arrived", args.arrived)) if v is not None}
    for record in records:
        record.update(overrides)
        if meta:
            current = record.get("metadata") or {}
            if not isinstance(current, dict):
                fail(f"{args.data_file}: metadata of {record.get('name')!r} must be an object to add --meta to it")
            record["metadata"] = {**current, **meta}
    return records


def cmd_register(args: argparse.Namespace) -> None:
    """Register files (all or none) and print their records."""
    records = _records(args)
    created = make_client(args).call("POST", "/data", records)["items"]
    _print_files(created, args)
    if not args.json:
        print(f"registered {len(created)} file(s)", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> None:
    """List data files matching the filters, newest first."""
    reply = make_client(args).list("data", name=args.name, dirpath=args.dirpath, datatype=args.type,
                                   state=args.state, workflow=args.workflow, limit=args.limit,
                                   offset=args.offset, sort=args.sort)
    if args.json:
        print_json(reply)
        return
    _print_files(reply["items"], args)
    print(f"{len(reply['items'])} of {reply['total']} file(s)", file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> None:
    """Every field of one data file."""
    record = make_client(args).get("data", args.uuid)
    print_json(record) if args.json else print_record(record, SHOW_ORDER)


def cmd_lookup(args: argparse.Namespace) -> None:
    """The files registered under NAME (and --dirpath): exit 0 when there is one, 1 when none."""
    items = make_client(args).list("data", name=args.name, dirpath=args.dirpath, limit=1000)["items"]
    _print_files(items, args)
    if not items:
        where = f" in {args.dirpath}" if args.dirpath is not None else ""
        print(f"{PROG}: no data file named {args.name!r}{where}", file=sys.stderr)
        raise SystemExit(1)


def cmd_adjust(args: argparse.Namespace) -> None:
    """Change a data file's fields; --meta is merged into its current metadata."""
    changes = {k: v for k, v in (("name", args.name), ("dirpath", args.dirpath), ("state", args.state),
                                 ("comment", args.comment), ("datatype", args.type)) if v is not None}
    meta = parse_pairs(args.meta, "--meta")
    if not changes and not meta:
        args.parser.error("nothing to change: give --name, --dirpath, -s, --comment, -T or --meta")
    client = make_client(args)
    if meta:
        changes["metadata"] = {**(client.get("data", args.uuid).get("metadata") or {}), **meta}
    record = client.patch("data", args.uuid, changes)
    print_json(record) if args.json else print_record(record, SHOW_ORDER)


def cmd_delete(args: argparse.Namespace) -> None:
    """Delete data file records by uuid."""
    client = make_client(args)
    failures = Failures(PROG)
    deleted = [d for reply in failures.each(split_csv(args.uuids), lambda uuid: client.delete("data", uuid))
               for d in reply["deleted"]]
    print_json({"deleted": deleted}) if args.json else print(f"deleted {len(deleted)} file(s)")
    failures.exit_if_any()


# --- data types -------------------------------------------------------------------------------
def cmd_types(args: argparse.Namespace) -> None:
    """List data types."""
    types = make_client(args).list("datatypes")["items"]
    if args.json:
        print_json(types)
    elif types:
        print_table(types, TYPE_COLUMNS)
    else:
        print("no data types yet (add one with add-type)", file=sys.stderr)


def cmd_add_type(args: argparse.Namespace) -> None:
    """Register a data type."""
    if args.ext and not args.ext.startswith("."):
        args.parser.error(f"--ext is the extension with its dot, e.g. .{args.ext}")
    created = make_client(args).call("POST", "/datatypes",
                                     {"name": args.name, "ext": args.ext, "comment": args.comment})
    print_json(created) if args.json else print_table([created], TYPE_COLUMNS)


def cmd_delete_type(args: argparse.Namespace) -> None:
    """Delete a data type no file uses."""
    deleted = make_client(args).delete("datatypes", args.name)["deleted"]
    print_json({"deleted": deleted}) if args.json else print(f"deleted data type {args.name}")


# --- the command line -------------------------------------------------------------------------
def _command(sub: Any, name: str, func: Any, help_: str, description: str = "",
             **kwargs: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_, description=description or help_[0].upper() + help_[1:] + ".",
                            **kwargs)
    parser.set_defaults(func=func, parser=parser)
    return parser


def _register_parser(sub: Any) -> None:
    p = _command(sub, "register", cmd_register, "register data files",
                 "Register data files, all or none: each PATH by its base name and directory (and its size "
                 "when it exists here), or the descriptions in a JSON file (a list of objects with name, "
                 "dirpath, datatype, state, comment, metadata, size).", conflict_handler="resolve")
    p.add_argument("paths", nargs="*", metavar="PATH", help="file(s) to register")
    add_client_arguments(p)
    add_input_file_arguments(p, "data_file", "data file description")
    p.add_argument("-T", "--type", "--datatype", dest="type", metavar="DATATYPE",
                   help="data type of every file (registered with add-type)")
    p.add_argument("--dirpath", metavar="DIR", help="directory of every file [default: each PATH's directory]")
    p.add_argument("-A", "--state", choices=DATA_STATES, help="state of every file [default defined]")
    p.add_argument("--comment", help="comment on every file")
    p.add_argument("--arrived", metavar="TIME", help="when the files arrived: seconds since the epoch or ISO 8601, "
                                                     "'mtime' for each file's modification time [default: now]")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata of every file; repeatable")


def _list_parser(sub: Any) -> None:
    p = _command(sub, "list", cmd_list, "list data files", "List data files (newest first), at most --limit.")
    p.add_argument("--name", help="file name (exact)")
    p.add_argument("--dirpath", metavar="DIR", help="directory (exact)")
    p.add_argument("-T", "--datatype", "--type", dest="type", metavar="DATATYPE", help="data type")
    p.add_argument("-A", "--state", choices=DATA_STATES, help="state")
    p.add_argument("--workflow", metavar="UUID", help="workflow")
    p.add_argument("--limit", type=int, default=100, help="most files to show (1–1000) [default 100]")
    p.add_argument("--offset", type=int, default=0, help="files to skip [default 0]")
    p.add_argument("--sort", metavar="FIELD", help=f"sort by FIELD, -FIELD for descending ({', '.join(SORTABLE)}) "
                                                   "[default -ts_reg]")
    add_client_arguments(p)


def _adjust_parser(sub: Any) -> None:
    p = _command(sub, "adjust", cmd_adjust, "change a data file's fields")
    p.add_argument("uuid", metavar="UUID")
    p.add_argument("--name", help="new file name")
    p.add_argument("--dirpath", metavar="DIR", help="new directory")
    p.add_argument("-A", "--state", choices=DATA_STATES, help="new state")
    p.add_argument("--comment", help="new comment")
    p.add_argument("-T", "--datatype", "--type", dest="type", metavar="DATATYPE", help="new data type")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="set a metadata key (others are kept); repeatable")
    add_client_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-dataset`` parser with one sub-command per action."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Register, list, look up, adjust and delete p3s data files, and manage data "
                               "types. 'p3s-dataset COMMAND --help' describes each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_parser(sub)
    _list_parser(sub)
    p = _command(sub, "show", cmd_show, "show every field of a data file")
    p.add_argument("uuid", metavar="UUID")
    add_client_arguments(p)
    p = _command(sub, "lookup", cmd_lookup, "find files by name (exit 1 when there is none)",
                 "Print the data files registered under NAME; exit 0 when there is one, 1 when there is none "
                 "(the de-duplication check before registering).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dirpath", metavar="DIR", help="only in this directory")
    add_client_arguments(p)
    _adjust_parser(sub)
    p = _command(sub, "delete", cmd_delete, "delete data file records")
    p.add_argument("uuids", nargs="+", metavar="UUID", help="record(s) to delete; comma-separated too")
    add_client_arguments(p)
    p = _command(sub, "types", cmd_types, "list data types")
    add_client_arguments(p)
    p = _command(sub, "add-type", cmd_add_type, "register a data type")
    p.add_argument("name", metavar="NAME", help="type name, e.g. TXT")
    p.add_argument("--ext", required=True, help="file extension with its dot, e.g. .txt")
    p.add_argument("--comment", default="", help="free text")
    add_client_arguments(p)
    p = _command(sub, "delete-type", cmd_delete_type, "delete a data type no file uses")
    p.add_argument("name", metavar="NAME")
    add_client_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``p3s-dataset``."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    run_command(args.func, args)


if __name__ == "__main__":
    sys.argv[0] = PROG
    main()
