"""`p3s-site`: define, list, show, change and delete sites (where pilots run, and how many).

    p3s-site add NAME [-n PILOTS] [-p PERIOD] [-b BEAT] [-c CYCLES] [--lifetime S] [--pilot-server URL]
                      [--env K=V]… [--comment C]
    p3s-site list | show NAME | set NAME [same options] | delete NAME…

A site's record gives its nominal pilot count (alarms and ``p3s-fleet top-up`` keep it) and the
period, heartbeat, cycles and environment its pilots bootstrap from (``p3s-pilot -s NAME``).
"""
from __future__ import annotations

import argparse
import sys

from p3s.cli.common import (Failures, add_client_arguments, make_client, number_type, parse_pairs, print_json,
                            print_record, print_table, run_command)

PROG = "p3s-site"
COLUMNS = ("name", "pilots", "live", "period", "beat", "cycles", "lifetime", "comment")
FIELDS = ("pilots", "period", "beat", "cycles", "lifetime", "server", "comment")


def _changes(args: argparse.Namespace) -> dict:
    changes = {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}
    if args.env:
        changes["env"] = parse_pairs(args.env, "--env")
    return changes


def _live(client, name: str) -> int:
    return client.list("pilots", site=name, state="idle,running", limit=1)["total"]


def run(args: argparse.Namespace) -> None:
    client = make_client(args)
    if args.command == "add":
        site = client.call("POST", "/sites", {"name": args.name, **_changes(args)})
        print_json(site) if args.json else print(f"site {site['name']} added (nominal {site['pilots']} pilots)")
    elif args.command == "set":
        changes = _changes(args)
        if not changes:
            args.parser.error("nothing to change: give -n, -p, -b, -c, --lifetime, --pilot-server, --env or --comment")
        site = client.patch("sites", args.name, changes)
        print_json(site) if args.json else print_record(site, ("name", *FIELDS, "env"))
    elif args.command == "list":
        sites = client.list("sites")["items"]
        for site in sites:
            site["live"] = _live(client, site["name"])
        if args.json:
            print_json(sites)
        elif sites:
            print_table(sites, COLUMNS, ("SITE", "NOMINAL", "LIVE", "PERIOD", "BEAT", "CYCLES", "LIFETIME", "COMMENT"))
        else:
            print("no sites yet (p3s-site add NAME -n PILOTS)", file=sys.stderr)
    elif args.command == "show":
        site = client.get("sites", args.name)
        site["live"] = _live(client, args.name)
        print_json(site) if args.json else print_record(site, ("name", "pilots", "live", *FIELDS[1:], "env"))
    elif args.command == "delete":
        failures = Failures(PROG)
        deleted = failures.each(args.names, lambda n: client.delete("sites", n))
        if not args.json:
            print(f"deleted {len(deleted)} site(s)")
        else:
            print_json([d["deleted"][0] for d in deleted])
        failures.exit_if_any()


def _site_options(p: argparse.ArgumentParser) -> None:
    count = number_type(int, 0)
    p.add_argument("-n", "--pilots", type=count, metavar="N", help="nominal pilot count")
    p.add_argument("-p", "--period", type=count, metavar="S", help="seconds an idle pilot's request waits for work")
    p.add_argument("-b", "--beat", type=number_type(int, 1), metavar="S", help="heartbeat seconds while a job runs")
    p.add_argument("-c", "--cycles", type=count, metavar="N", help="idle requests before a pilot stops (0 = never)")
    p.add_argument("--lifetime", type=count, metavar="S", help="expected pilot lifetime in seconds")
    p.add_argument("--pilot-server", dest="server", metavar="URL", help="server URL the site's pilots use")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment of the site's pilots; repeatable")
    p.add_argument("--comment", help="free text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in (("add", "define a site"), ("set", "change a site")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("name", metavar="NAME")
        _site_options(p)
    sub.add_parser("list", help="list sites with their live pilots")
    sub.add_parser("show", help="show a site").add_argument("name", metavar="NAME")
    sub.add_parser("delete", help="delete sites").add_argument("names", nargs="+", metavar="NAME")
    for p in sub.choices.values():
        add_client_arguments(p)
        p.set_defaults(parser=p)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_command(run, args)


if __name__ == "__main__":
    main()
