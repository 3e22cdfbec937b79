"""`p3s-host`: worker hosts — recent outcomes, black holes (last N jobs all failed), drain and clear.

    p3s-host list [-a]                      flagged or drained hosts (-a: every host seen lately)
    p3s-host drain HOST [-r REASON]         its pilots get no new work
    p3s-host clear HOST                     lift the black-hole flag and the drain
"""
from __future__ import annotations

import argparse
import sys

from p3s.cli.common import add_client_arguments, make_client, print_json, print_table, run_command

PROG = "p3s-host"


def run(args: argparse.Namespace) -> None:
    client = make_client(args)
    if args.command == "list":
        items = client.call("GET", "/hosts")["items"]
        if not args.all:
            items = [h for h in items if h["flagged"] or h["drained"]]
        if args.json:
            print_json(items)
            return
        rows = [{**h, "state": "drained" if h["drained"] else ("flagged" if h["flagged"] else "ok"),
                 "live": sum(h["pilots"].values())} for h in items]
        if rows:
            print_table(rows, ("host", "state", "streak", "recent_ok", "recent_bad", "live", "since", "by", "reason"),
                        ("HOST", "STATE", "FAILED IN A ROW", "OK", "BAD", "PILOTS", "SINCE", "BY", "REASON"))
        print(f"{len(rows)} host(s)" + ("" if args.all else " flagged or drained (-a: all)"), file=sys.stderr)
    elif args.command == "drain":
        row = client.call("POST", f"/hosts/{args.host}/drain", {"reason": args.reason or ""})
        print_json(row) if args.json else print(f"{args.host} drained: its pilots get no new work")
    elif args.command == "clear":
        row = client.call("POST", f"/hosts/{args.host}/clear", {})
        print_json(row) if args.json else print(f"{args.host} cleared: its pilots get work again")


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-host`` parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="flagged and drained hosts")
    p.add_argument("-a", "--all", action="store_true", help="every host seen lately")
    p = sub.add_parser("drain", help="give a host's pilots no new work")
    p.add_argument("host", metavar="HOST")
    p.add_argument("-r", "--reason", help="why (shown on the hosts view)")
    sub.add_parser("clear", help="clear a host's flag and drain").add_argument("host", metavar="HOST")
    for p in sub.choices.values():
        add_client_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> None:
    run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
