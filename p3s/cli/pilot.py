"""`p3s-pilot`: run a pilot on this node, or (sub-commands) list, show, kill and delete pilots.

    p3s-pilot [-S URL] [-s SITE] [-c CYCLES] [-p PERIOD] [-b BEAT] …    run a pilot
    p3s-pilot list|show|kill|delete …                                   manage pilots

Running a pilot is ``p3s.pilot.cli`` (standard library only, psutil when present); the management
sub-commands use the full configuration (YAML file, environment, flags) like every other client.
"""
from __future__ import annotations

import argparse
import sys

from p3s.pilot.cli import ADMIN_COMMANDS, run_pilot


def build_parser() -> argparse.ArgumentParser:
    """The parser of p3s-pilot's management sub-commands (running a pilot: ``p3s.pilot.cli.run_parser``)."""
    from p3s.cli.common import add_client_arguments
    from p3s.cli.job_ops import states_type
    from p3s.states import PILOT_STATES

    parser = argparse.ArgumentParser(prog="p3s-pilot", description="Manage pilots.")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list pilots")
    listing.add_argument("-A", "--state", type=states_type(PILOT_STATES),
                         help="comma-separated states (idle, running, stopped, lost)")
    listing.add_argument("-s", "--site")
    listing.add_argument("-H", "--host")
    listing.add_argument("--limit", type=int, default=100)
    show = sub.add_parser("show", help="show one pilot and its jobs")
    show.add_argument("uuid")
    kill = sub.add_parser("kill", help="ask pilots to stop (they stop their payload and report)")
    kill.add_argument("-u", "--uuid")
    kill.add_argument("-H", "--host")
    kill.add_argument("-s", "--site")
    kill.add_argument("-A", "--state", choices=("idle", "running"))
    delete = sub.add_parser("delete", help="delete records of stopped or lost pilots")
    delete.add_argument("-u", "--uuid")
    delete.add_argument("-A", "--state", choices=("stopped", "lost"))
    delete.add_argument("--all", action="store_true", help="every stopped and lost pilot")
    for p in (listing, show, kill, delete):
        add_client_arguments(p)
    return parser


def _admin(argv: list[str]) -> None:
    from p3s.cli.common import check_site, make_client, print_json, print_table, run_command
    from p3s.states import PILOT_STATES

    parser = build_parser()
    args = parser.parse_args(argv)
    columns = ("uuid", "state", "host", "site", "job", "njobs", "ts_reg", "ts_lhb")

    def do(args: argparse.Namespace) -> None:
        client = make_client(args)
        if args.command == "list":
            reply = client.list("pilots", state=args.state, site=args.site, host=args.host, limit=args.limit)
            if args.site and not reply["total"]:
                check_site(client, args.site, PILOT_STATES)
            if args.json:
                print_json(reply)
            else:
                print_table(reply["items"], columns)
                print(f"{len(reply['items'])} of {reply['total']} pilots", file=sys.stderr)
        elif args.command == "show":
            pilot = client.get("pilots", args.uuid)
            jobs = client.list("jobs", pilot=args.uuid, limit=1000)["items"]
            if args.json:
                print_json({"pilot": pilot, "jobs": jobs})
                return
            for key in ("uuid", "state", "host", "site", "pid", "extra", "jobtypes", "job", "njobs", "ts_reg",
                        "ts_lhb", "ts_stop", "reason", "kill_requested"):
                print(f"{key:15} {pilot.get(key)}")
            print()
            print_table(jobs, ("uuid", "state", "jobtype", "name", "exit_code", "ts_sta", "ts_sto"))
        elif args.command == "kill":
            selector = {"uuid": args.uuid, "host": args.host, "site": args.site, "state": args.state}
            if not any(selector.values()):
                parser.error("kill needs at least one of --uuid, --host, --site, --state")
            killed = client.kill_pilots(**selector)
            print_json({"killed": killed}) if args.json else print(f"stop requested for {len(killed)} pilot(s)")
        elif args.command == "delete":
            if args.uuid:
                deleted = client.delete("pilots", args.uuid)["deleted"]
            elif args.state or args.all:
                deleted = client.delete_where("pilots", state=args.state or "stopped,lost")["deleted"]
            else:
                parser.error("delete needs --uuid, --state or --all")
            print_json({"deleted": deleted}) if args.json else print(f"deleted {len(deleted)} pilot(s)")

    run_command(do, args)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ADMIN_COMMANDS:
        _admin(argv)
        return
    sys.exit(run_pilot(argv))


if __name__ == "__main__":
    main()
