"""`p3s-job` sub-commands of the control room: rerun, kill by filter, log, errors.

    p3s-job rerun -u UUID[,UUID…] | rerun FILTERS [--yes]      (FILTERS: -A STATES -T TYPE -s SITE -H HOST --user U --workflow W)
    p3s-job kill  -u UUID[,UUID…] | kill FILTERS [--yes]
    p3s-job log UUID [--err] [--follow]
    p3s-job errors [--hours N] [--by exit_code,error_line,host] [-T TYPE]

Without ``--yes`` a filter only counts what it matches (exit code 1), so nothing happens by accident.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from p3s.cli.common import (Failures, add_client_arguments, fail, make_client, print_json, print_table,
                            split_csv)

PROG = "p3s-job"
ENDED = ("finished", "failed", "timelimit", "pilot_lost", "killed", "nonstarter", "cancelled")
GROUPINGS = ("exit_code", "error_line", "host")


def bulk(args: argparse.Namespace, verb: str, one: Any, filters: dict) -> None:
    """``verb`` (rerun or kill) the -u jobs one by one, or every job ``filters`` match."""
    client = make_client(args)
    uuids = split_csv([*(args.uuid or ()), *(args.uuids or ())])
    if uuids and filters:
        args.parser.error("give either uuids or a filter, not both")
    if uuids:
        failures = Failures(PROG)
        done = failures.each(uuids, lambda u: one(client, u))
        if args.json:
            print_json(done)
        else:
            print(f"{verb}: {len(done)} job(s)")
        failures.exit_if_any()
        return
    if not filters:
        args.parser.error("give -u UUID[,UUID...] or a filter (-A, -T, --user, --workflow, -s, -H)")
    reply = client.call("POST", f"/jobs/{verb}", {"dry_run": not args.yes}, query=filters)
    if args.json:
        print_json(reply)
    if not args.yes:
        print(f"{PROG}: {reply['matched']} job(s) match; nothing done (add --yes to {verb} them)", file=sys.stderr)
        raise SystemExit(1)
    if not args.json:
        print(f"{verb}: {len(reply['done'])} of {reply['matched']} job(s)")
        for skip in reply["skipped"]:
            print(f"  skipped {skip['uuid']}: {skip['reason']}", file=sys.stderr)


def _filters(args: argparse.Namespace) -> dict:
    values = {"state": args.state, "jobtype": args.jobtype, "user": args.user, "workflow": args.workflow,
              "site": args.site, "host": args.host}
    return {k: v for k, v in values.items() if v}


def cmd_rerun(args: argparse.Namespace) -> None:
    """Rerun unsuccessful or cancelled jobs as new attempts."""
    bulk(args, "rerun", lambda c, u: c.call("POST", f"/jobs/{u}/rerun"), _filters(args))


def cmd_log(args: argparse.Namespace) -> None:
    """A job's stdout (or stderr): the whole file when the server can read it, else the last lines
    the pilot reported; with --follow, new output as it comes until the job ends."""
    client = make_client(args)
    stream = "err" if args.err else "out"
    shown = 0
    while True:
        job = client.get("jobs", args.uuid)
        text = None
        if job.get("log_dir"):
            try:
                text = client.call_text("GET", f"/jobs/{args.uuid}/log/{stream}")
            except Exception:        # not readable by the server: fall back to the reported tail
                text = None
        if text is None:
            text = job.get("stdout_tail" if stream == "out" else "stderr_tail") or ""
        if len(text) >= shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        if not args.follow or job["state"] in ENDED:
            if not text and not args.follow:
                print(f"{PROG}: job {args.uuid} ({job['state']}) has no std{stream} yet", file=sys.stderr)
            return
        time.sleep(args.interval)


def cmd_errors(args: argparse.Namespace) -> None:
    """Unsuccessful jobs of the last hours, grouped, with an example job per group."""
    by = split_csv([args.by])
    for b in by:
        if b not in GROUPINGS:
            fail(f"--by: cannot group by {b!r} (choose from {', '.join(GROUPINGS)})")
    reply = make_client(args).call("GET", "/errors", query={"hours": args.hours, "by": ",".join(by),
                                                            "jobtype": args.jobtype})
    if args.json:
        print_json(reply)
        return
    rows = [{**g, "example": g["examples"][0]["uuid"] if g["examples"] else None} for g in reply["items"]]
    if rows:
        print_table(rows, ("count", "jobtype", "state", *by, "last", "example"))
    print(f"{reply['total']} unsuccessful job(s) since {reply['since']}", file=sys.stderr)


def _job_filters(p: argparse.ArgumentParser) -> None:
    from p3s.states import JOB_STATES
    p.add_argument("uuids", nargs="*", metavar="UUID", help="job(s)")
    p.add_argument("-u", "--uuid", action="append", metavar="UUID[,UUID...]", help="job(s); repeatable")
    p.add_argument("-A", "--state", metavar="STATE[,STATE...]", type=states_type(JOB_STATES),
                   help=f"states ({', '.join(JOB_STATES)})")
    p.add_argument("-T", "--jobtype", metavar="TYPE", help="job type")
    p.add_argument("--user", help="submitter")
    p.add_argument("--workflow", metavar="UUID", help="workflow")
    p.add_argument("-s", "--site", help="required or executing site")
    p.add_argument("-H", "--host", help="host that ran the job")
    p.add_argument("-y", "--yes", action="store_true", help="really act on the jobs a filter matches")


def states_type(known: tuple[str, ...]) -> Any:
    def check(text: str) -> str:
        for state in split_csv([text]):
            if state not in known:
                raise argparse.ArgumentTypeError(f"unknown state {state!r} (known: {', '.join(known)})")
        if not split_csv([text]):
            raise argparse.ArgumentTypeError("empty")
        return text
    return check


def add_parsers(sub: Any) -> None:
    """The rerun, log and errors sub-commands (kill by filter is added to kill by job.py)."""
    p = sub.add_parser("rerun", help="rerun unsuccessful or cancelled jobs as new attempts",
                       description="Rerun jobs by uuid, or every unsuccessful or cancelled job matching a filter "
                                   "(needs --yes; without it, print how many match). Workflow jobs are skipped: "
                                   "resume their workflow.")
    _job_filters(p)
    add_client_arguments(p)
    p.set_defaults(func=cmd_rerun, parser=p)

    p = sub.add_parser("log", help="print a job's stdout or stderr", description=cmd_log.__doc__)
    p.add_argument("uuid", metavar="UUID")
    p.add_argument("--err", action="store_true", help="stderr instead of stdout")
    p.add_argument("--follow", action="store_true", help="keep printing new output until the job ends")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    add_client_arguments(p)
    p.set_defaults(func=cmd_log, parser=p)

    p = sub.add_parser("errors", help="unsuccessful jobs grouped by type, exit code, error line, host",
                       description=cmd_errors.__doc__)
    p.add_argument("--hours", type=int, default=1, choices=range(1, 169), metavar="N",
                   help="window in hours (1-168) [default 1]")
    p.add_argument("--by", default="exit_code,host", help=f"group by ({', '.join(GROUPINGS)}) [default exit_code,host]")
    p.add_argument("-T", "--jobtype", metavar="TYPE", help="only this job type")
    add_client_arguments(p)
    p.set_defaults(func=cmd_errors, parser=p)


def add_kill_filters(p: argparse.ArgumentParser) -> None:
    """Filters and --yes for ``kill`` (its -u and positional uuids are already there)."""
    from p3s.states import JOB_STATES
    p.add_argument("-A", "--state", metavar="STATE[,STATE...]", type=states_type(JOB_STATES), help="states")
    p.add_argument("-T", "--jobtype", metavar="TYPE", help="job type")
    p.add_argument("--user", help="submitter")
    p.add_argument("--workflow", metavar="UUID", help="workflow")
    p.add_argument("-s", "--site", help="required or executing site")
    p.add_argument("-H", "--host", help="host running the job")
    p.add_argument("-y", "--yes", action="store_true", help="really kill the jobs a filter matches")


def kill_by_filter(args: argparse.Namespace) -> bool:
    """``kill`` with a filter: handled here (True), else the caller kills by uuid."""
    filters = _filters(args)
    if not filters:
        return False
    bulk(args, "kill", None, filters)
    return True
