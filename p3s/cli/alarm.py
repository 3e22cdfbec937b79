"""`p3s-alarm`: the alarms with what each checks, and acknowledgements.

    p3s-alarm list [--all]                            firing ones (--all: every check)
    p3s-alarm ack KEY -r REASON [-m MINUTES]          silence one for a time (default 60 min), saying why
    p3s-alarm unack KEY                               withdraw an acknowledgement
"""
from __future__ import annotations

import argparse
import sys

from p3s.cli.common import add_client_arguments, make_client, number_type, print_json, print_table, run_command

PROG = "p3s-alarm"


def run(args: argparse.Namespace) -> None:
    client = make_client(args)
    if args.command == "list":
        reply = client.call("GET", "/alarms")
        items = reply["items"] if args.all else [a for a in reply["items"] if a["status"] == "alarm"]
        if args.json:
            print_json(items)
            return
        rows = [{**a, "status": "silenced" if a["silenced"] else a["status"],
                 "ack": f"{a['ack']['by']}: {a['ack']['reason']} (until {a['ack']['until']})" if a.get("ack") else None}
                for a in items]
        if rows:
            print_table(rows, ("key", "status", "since", "value", "threshold", "message", "ack"))
        print(f"{reply['firing']} firing, {reply['silenced']} silenced, as of {reply['as_of']}", file=sys.stderr)
    elif args.command == "ack":
        item = client.call("POST", "/alarms/ack", {"alarm": args.key, "reason": args.reason, "minutes": args.minutes})
        print_json(item) if args.json else print(f"{args.key} silenced until {item['ack']['until']}")
    elif args.command == "unack":
        item = client.call("POST", "/alarms/unack", {"alarm": args.key})
        print_json(item) if args.json else print(f"{args.key}: acknowledgement withdrawn ({item['status']})")


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-alarm`` parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list alarms")
    p.add_argument("-a", "--all", action="store_true", help="every check, not only the firing ones")
    p = sub.add_parser("ack", help="silence an alarm for a time")
    p.add_argument("key", metavar="KEY", help="the alarm's key, e.g. failure_rate:reco (see list)")
    p.add_argument("-r", "--reason", required=True, help="why (shown to everyone)")
    p.add_argument("-m", "--minutes", type=number_type(int, 1), default=60, help="how long [default 60]")
    p = sub.add_parser("unack", help="withdraw an acknowledgement")
    p.add_argument("key", metavar="KEY")
    for p in sub.choices.values():
        add_client_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> None:
    run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
