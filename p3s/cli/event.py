"""`p3s-event`: the server's event log — lost pilots, kills, time-outs, alarms, black holes, notes.

    p3s-event list [-k KIND] [--severity S] [-u JOB] [--pilot P] [--site S] [--limit N]
    p3s-event add KIND MESSAGE [--severity S]          record an operator's note
"""
from __future__ import annotations

import argparse
import sys

from p3s.cli.common import add_client_arguments, make_client, number_type, paint, print_json, run_command, RESET

PROG = "p3s-event"
SEVERITIES = ("info", "warning", "error")


def run(args: argparse.Namespace) -> None:
    client = make_client(args)
    if args.command == "add":
        doc = client.call("POST", "/events", {"kind": args.kind, "message": args.message, "severity": args.severity,
                                              "source": "operator"})
        print_json(doc) if args.json else print(f"recorded {doc['kind']} at {doc['ts']}")
        return
    reply = client.list("events", kind=args.kind, severity=args.severity, job=args.job, pilot=args.pilot,
                        site=args.site, limit=args.limit)
    if args.json:
        print_json(reply)
        return
    colours = {"error": "failed", "warning": "timelimit"}
    for event in reversed(reply["items"]):            # oldest first, like a log
        colour = paint(colours.get(event["severity"], ""))
        severity = f"{colour}{event['severity']:7}{RESET if colour else ''}"
        print(f"{event['ts'][:19].replace('T', ' ')}Z  {severity}  {event['kind']:18}  {event['message']}")
    print(f"{len(reply['items'])} of {reply['total']} event(s), newest last", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-event`` parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list events, newest last")
    p.add_argument("-k", "--kind", help="kind, e.g. pilot.lost, alarm.firing, host.blackhole")
    p.add_argument("--severity", choices=SEVERITIES)
    p.add_argument("-u", "--job", metavar="UUID", help="about this job")
    p.add_argument("--pilot", metavar="UUID", help="about this pilot")
    p.add_argument("--site", help="about this site")
    p.add_argument("--limit", type=number_type(int, 1), default=50, help="most events [default 50]")
    p = sub.add_parser("add", help="record an operator's note")
    p.add_argument("kind", metavar="KIND", help="e.g. note, intervention")
    p.add_argument("message", metavar="MESSAGE")
    p.add_argument("--severity", choices=SEVERITIES, default="info")
    for p in sub.choices.values():
        add_client_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> None:
    run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
