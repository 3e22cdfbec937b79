"""`p3s-job`: submit, list, show, adjust, kill and delete jobs; list and set per-jobtype limits.

    p3s-job submit -j FILE [-N N] [-f F1,F2 | --files-from LIST] [-A STATE] [-P N] [-T TYPE]
    p3s-job list [-A STATES] [-T TYPE] [--user U] [--workflow W] [-s SITE] [--pilot P] …
    p3s-job show UUID
    p3s-job adjust -u UUID[,UUID…] [-P N] [-A STATE] [-t SECONDS] [--env K=V] [--max-attempts N]
    p3s-job kill -u UUID[,UUID…] | kill [-A STATES] [-T TYPE] [-H HOST] [--user U] … --yes
    p3s-job rerun -u UUID[,UUID…] | rerun [-A STATES] [-T TYPE] [-H HOST] … --yes
    p3s-job log UUID [--err] [--follow]
    p3s-job errors [--hours N] [--by exit_code,error_line,host] [-T TYPE]
    p3s-job delete -u UUID[,UUID…] | delete [-A STATES] [-T TYPE] [--user U] [--workflow W] --yes
    p3s-job limits [-T TYPE] [-L N|none]
    p3s-job types [-T TYPE] [-L N|none] [--eta S|none] [--order fifo|newest-first] [--stale on|off] …

The original system's flag style works with long options: ``-j FILE`` submits, ``--adjust``,
``--delete``, ``--kill`` and ``--ltype`` (limits), e.g. ``p3s-job --adjust -u UUID -P 5``. Its short
action letters ``-a``, ``-d``, ``-k`` and ``-l`` are refused (exit 2) with the sub-command to write:
in p3s's other commands ``-a`` is --all, ``-d`` a directory, ``-k`` a kind.
"""
from __future__ import annotations

import argparse

import sys
from typing import Any, Iterable

from p3s.cli import jobtypes
from p3s.cli.common import (Failures, add_client_arguments, check_site, add_input_file_arguments, fail, json_type,
                            load_json_list, make_client, number_type, parse_pairs, print_json, print_record,
                            print_table, run_command, split_csv)
from p3s.cli import job_ops
from p3s.states import JOB_ACTIVE, JOB_STATES

PROG = "p3s-job"
ACTIVE_STATES = tuple(sorted(JOB_ACTIVE))
SORTABLE = ("ts_def", "ts_dis", "ts_sta", "ts_sto", "priority", "state", "jobtype", "name", "user", "seq")
LIST_COLUMNS = ("uuid", "state", "jobtype", "name", "priority", "where", "exit_code", "ts_def", "ts_sto")
LIST_HEADERS = ("UUID", "STATE", "JOBTYPE", "NAME", "PRIO", "PILOT/HOST", "EXIT", "DEFINED", "STOPPED")
SHOW_ORDER = ("uuid", "name", "state", "jobtype", "user", "priority", "payload", "params", "env", "input_file",
              "site", "timelimit", "max_attempts", "attempts", "workflow", "vertex", "pilot", "host",
              "pilot_site", "pid", "exit_code", "error", "kill_requested", "ts_def", "ts_dis", "ts_sta",
              "ts_sto", "seq", "usage")
FLAG_STYLE_ACTIONS = {"--adjust": "adjust", "--delete": "delete", "--kill": "kill", "--ltype": "limits"}
# The original's short action letters: refused, since the letters mean other things in other commands.
RETIRED_ACTIONS = {"-a": ("adjust", "--adjust", " (-a is --all in p3s-alarm and p3s-host)"),
                   "-d": ("delete", "--delete", " (-d is the directory in p3s-injector)"),
                   "-k": ("kill", "--kill", " (-k is the kind in p3s-event and p3s-admin)"),
                   "-l": ("limits", "--ltype", "")}
FLAG_STYLE_SUBMIT = ("-j", "--json-in", "--json_in", "-f", "--files", "--files-from")
_UNSET = object()


# --- shared by p3s-job and p3s-dataset --------------------------------------------------------
_positive_int = number_type(int, 1)


def _limit_value(text: str) -> int | None:
    if text.lower() in ("none", "null", "unlimited"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of jobs or 'none', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value} (use 'none' to remove the limit)")
    return value


def _uuids(args: argparse.Namespace) -> list[str]:
    return split_csv([*(args.uuid or ()), *(args.uuids or ())])


def _table_rows(jobs: Iterable[dict]) -> list[dict]:
    rows = []
    for job in jobs:
        name = job.get("name") or None
        if name and len(name) > 40:
            name = name[:37] + "..."
        rows.append({**job, "name": name, "where": job.get("host") or job.get("pilot")})
    return rows


# --- submit -----------------------------------------------------------------------------------
def _input_files(args: argparse.Namespace) -> list[str]:
    files = split_csv(args.files)
    if args.files_from:
        try:
            with (sys.stdin if args.files_from == "-" else open(args.files_from, encoding="utf-8")) as handle:
                lines = handle.read().splitlines()
        except OSError as exc:
            fail(f"cannot read {args.files_from}: {exc.strerror}")
        files += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return files


def expand_jobs(templates: list[dict], args: argparse.Namespace) -> list[dict]:
    """The jobs to submit: each template × each input file × ``--number`` replicas, with overrides."""
    overrides = {name: getattr(args, name) for name in ("state", "priority", "jobtype", "timelimit")
                 if getattr(args, name) is not None}
    extra_env = parse_pairs(args.env, "--env")
    files: list[str | None] = _input_files(args) or [None]
    replicated = args.number > 1 or len(files) > 1
    jobs = []
    for i, template in enumerate(templates):
        if replicated and template.get("uuid"):
            fail(f"{args.job_file}: job {i} has a uuid, so it cannot be replicated (-N, -f)")
        for path in files:
            env_changes = {**extra_env, **({"P3S_INPUT_FILE": path} if path else {})}
            for _ in range(args.number):
                job = {**template, **overrides}
                if "timelimit" in overrides:
                    job.pop("timeout", None)
                if env_changes:
                    env = template.get("env") or {}
                    if not isinstance(env, dict):
                        fail(f"{args.job_file}: job {i}: env is {json_type(env)}; it must be an object "
                             "to add variables to it")
                    job["env"] = {**env, **env_changes}
                if path:
                    job["input_file"] = path
                jobs.append(job)
    return jobs


def cmd_submit(args: argparse.Namespace) -> None:
    """Submit the jobs of a JSON file in one all-or-nothing request; print their uuids."""
    if not args.job_file:
        args.parser.error("give the job file: -j FILE")
    jobs = expand_jobs(load_json_list(args.job_file, "job description"), args)
    if args.dry_run:
        print_json(jobs)
        return
    created = make_client(args).create_jobs(jobs)
    if args.json:
        print_json(created)
    else:
        for job in created:
            print(job["uuid"])
        print(f"submitted {len(created)} job(s)", file=sys.stderr)


# --- list, show -------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> None:
    """List jobs matching the filters, newest first unless --sort says otherwise."""
    reply = make_client(args).list("jobs", state=args.state, jobtype=args.jobtype, user=args.user,
                                   workflow=args.workflow, site=args.site, pilot=args.pilot, host=args.host,
                                   q=args.name, limit=args.limit, offset=args.offset, sort=args.sort)
    if args.site and not reply["total"]:
        check_site(make_client(args), args.site, JOB_STATES)
    if args.json:
        print_json(reply)
        return
    if reply["items"]:
        print_table(_table_rows(reply["items"]), LIST_COLUMNS, LIST_HEADERS)
    skipped = f", after the first {reply['offset']}" if reply["offset"] else ""
    print(f"{len(reply['items'])} of {reply['total']} job(s){skipped}", file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> None:
    """Every field of one job."""
    job = make_client(args).get("jobs", args.uuid)
    print_json(job) if args.json else print_record(job, SHOW_ORDER)


# --- adjust, kill, delete ---------------------------------------------------------------------
def _changes(args: argparse.Namespace) -> dict:
    changes = {name: getattr(args, name) for name in ("priority", "state", "timelimit", "max_attempts", "name",
                                                      "site") if getattr(args, name) is not None}
    if not changes and not args.env:
        args.parser.error("nothing to change: give -P, -A, -t, --env, --max-attempts, --name or --site")
    return changes


def cmd_adjust(args: argparse.Namespace) -> None:
    """One PATCH per job; --env is merged into each job's current environment."""
    uuids = _uuids(args)
    if not uuids:
        args.parser.error("give the job(s) to adjust: -u UUID[,UUID...]")
    changes = _changes(args)
    env = parse_pairs(args.env, "--env")
    client = make_client(args)

    def adjust(uuid: str) -> dict:
        patch = dict(changes)
        if env:
            patch["env"] = {**(client.get("jobs", uuid).get("env") or {}), **env}
        return client.patch("jobs", uuid, patch)

    failures = Failures(PROG)
    jobs = failures.each(uuids, adjust)
    if args.json:
        print_json(jobs)
    elif jobs:
        print_table(_table_rows(jobs), ("uuid", "state", "jobtype", "name", "priority", "timelimit",
                                        "max_attempts"),
                    ("UUID", "STATE", "JOBTYPE", "NAME", "PRIO", "TIMELIMIT", "ATTEMPTS"))
    failures.exit_if_any()


def cmd_kill(args: argparse.Namespace) -> None:
    """Cancel jobs not yet dispatched; ask the pilots of dispatched or running ones to stop them."""
    uuids = _uuids(args)
    if uuids and job_ops._filters(args):
        args.parser.error("give either uuids or a filter, not both")
    if not uuids and job_ops.kill_by_filter(args):
        return
    if not uuids:
        args.parser.error("give the job(s) to kill: -u UUID[,UUID...] or a filter (-A, -T, -H, --user, "
                          "--workflow, -s) with --yes")
    client = make_client(args)
    failures = Failures(PROG)
    jobs = failures.each(uuids, client.kill_job)
    if args.json:
        print_json(jobs)
    else:
        for job in jobs:
            done = "cancelled" if job["state"] == "cancelled" else f"stop requested ({job['state']})"
            print(f"{job['uuid']}  {done}")
    failures.exit_if_any()


def _filters(args: argparse.Namespace) -> dict:
    if args.state is not None and not split_csv([args.state]):
        args.parser.error("--state is empty (the server would read that as any state)")
    values = {"state": args.state, "jobtype": args.jobtype, "user": args.user, "workflow": args.workflow,
              "site": args.site}
    return {k: v for k, v in values.items() if v is not None}


def _deletable_count(client: Any, filters: dict) -> int:
    """How many jobs a delete by ``filters`` would remove (dispatched and running ones never are)."""
    wanted = split_csv([filters["state"]]) if "state" in filters else list(JOB_STATES)
    deletable = [s for s in wanted if s not in ACTIVE_STATES]
    if not deletable:
        return 0
    return client.list("jobs", **{**filters, "state": ",".join(deletable)}, limit=1)["total"]


def cmd_delete(args: argparse.Namespace) -> None:
    """Delete jobs by uuid, or by filter with --yes; dispatched and running jobs are kept."""
    uuids, filters = _uuids(args), _filters(args)
    if uuids and (filters or args.all):
        args.parser.error("give either uuids or a filter, not both")
    if not uuids and not filters and not args.all:
        args.parser.error("give -u UUID[,UUID...], a filter (-A, -T, --user, --workflow, -s) or --all")
    client = make_client(args)
    if uuids:
        failures = Failures(PROG)
        deleted = [d for reply in failures.each(uuids, lambda uuid: client.delete("jobs", uuid))
                   for d in reply["deleted"]]
        _print_deleted(deleted, args)
        failures.exit_if_any()
        return
    if not args.yes:
        count = _deletable_count(client, filters)
        if args.json:
            print_json({"matched": count, "deleted": []})
        print(f"{PROG}: {count} job(s) match; nothing deleted (add --yes to delete them)", file=sys.stderr)
        raise SystemExit(1)
    query = filters if filters else {"all": "true"}
    _print_deleted(client.delete_where("jobs", **query)["deleted"], args)


def _print_deleted(deleted: list[str], args: argparse.Namespace) -> None:
    if args.json:
        print_json({"deleted": deleted})
    else:
        print(f"deleted {len(deleted)} job(s)")


# --- limits -----------------------------------------------------------------------------------
def _limit_rows(types: list[dict]) -> list[dict]:
    return [{**t, "limit": "none" if t.get("limit") is None else t["limit"]} for t in types]


def cmd_limits(args: argparse.Namespace) -> None:
    """List job types with their limits; with -L, set the limit of -T types (or of every listed type)."""
    client = make_client(args)
    names = split_csv(args.jobtype)
    known = {t["name"]: t for t in client.list("jobtypes")["items"]}
    failures = Failures(PROG)
    if args.limit is not _UNSET:
        targets = names or sorted(known)
        if not targets:
            fail("no job types are known yet; name one with -T TYPE")

        def set_limit(name: str) -> dict:
            keep = args.comment if args.comment is not None else known.get(name, {}).get("comment", "")
            return client.set_limit(name, args.limit, keep)

        types = failures.each(targets, set_limit)
    else:
        types = [known.get(n) or client.get("jobtypes", n) for n in names] if names else list(known.values())
    if args.json:
        print_json(types)
    elif types:
        print_table(_limit_rows(types), ("name", "limit", "active", "defined", "comment"))
    else:
        print("no job types yet", file=sys.stderr)
    failures.exit_if_any()


# --- the command line -------------------------------------------------------------------------
def _uuid_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("uuids", nargs="*", metavar="UUID", help=f"job(s) to {verb}")
    parser.add_argument("-u", "--uuid", action="append", metavar="UUID[,UUID...]",
                        help=f"job(s) to {verb}; repeatable, comma-separated")


def _filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-A", "--state", metavar="STATE[,STATE...]", type=job_ops.states_type(JOB_STATES),
                        help=f"states ({', '.join(JOB_STATES)})")
    parser.add_argument("-T", "--jobtype", metavar="TYPE", help="job type")
    parser.add_argument("--user", help="submitter")
    parser.add_argument("--workflow", metavar="UUID", help="workflow")
    parser.add_argument("-s", "--site", help="required or executing site")


def _submit_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "submit", help="submit jobs from a JSON file", conflict_handler="resolve",
        description="Submit the jobs described in a JSON file (a list of objects with payload, jobtype, "
                    "name, priority, timelimit or timeout, env, …) in one all-or-nothing request, and "
                    "print their uuids.")
    add_client_arguments(p)
    add_input_file_arguments(p, "job_file", "job description")
    p.add_argument("-N", "--number", type=_positive_int, default=1, metavar="N",
                   help="replicas of each job [default 1]")
    p.add_argument("-f", "--files", action="append", metavar="F1,F2",
                   help="one job per input file (env P3S_INPUT_FILE); repeatable, comma-separated")
    p.add_argument("--files-from", metavar="LISTFILE", help="input files, one per line ('-' = standard input)")
    p.add_argument("-A", "--state", choices=("defined", "template"), help="initial state of every job")
    p.add_argument("-P", "--priority", type=int, metavar="N", help="priority of every job")
    p.add_argument("-T", "--jobtype", metavar="TYPE", help="job type of every job")
    p.add_argument("-t", "--timelimit", type=_positive_int, metavar="SECONDS", help="time limit of every job")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="add to every job's env; repeatable")
    p.add_argument("--dry-run", action="store_true", help="print the jobs as JSON, submit nothing")
    p.set_defaults(func=cmd_submit, parser=p)
    return p


def _list_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list jobs", description="List jobs (newest first), at most --limit.")
    _filter_arguments(p)
    p.add_argument("--pilot", metavar="UUID", help="pilot that ran the job")
    p.add_argument("-H", "--host", help="host that ran the job")
    p.add_argument("-q", "--name", metavar="TEXT", help="text in the job name")
    p.add_argument("--limit", type=_positive_int, default=100, help="most jobs to show (≤ 1000) [default 100]")
    p.add_argument("--offset", type=int, default=0, help="jobs to skip [default 0]")
    p.add_argument("--sort", metavar="FIELD", help=f"sort by FIELD, -FIELD for descending ({', '.join(SORTABLE)}) "
                                                   "[default -ts_def]")
    add_client_arguments(p)
    p.set_defaults(func=cmd_list, parser=p)


def _show_parser(sub: Any) -> None:
    p = sub.add_parser("show", help="show every field of a job", description="Show every field of a job.")
    p.add_argument("uuid", metavar="UUID")
    add_client_arguments(p)
    p.set_defaults(func=cmd_show, parser=p)


def _adjust_parser(sub: Any) -> None:
    p = sub.add_parser("adjust", help="change priority, state, time limit, env, … of jobs",
                       description="Change jobs, one request each. Priority, time limit, env and the others "
                                   "change only before a job is dispatched; -s defined reruns an ended job.")
    _uuid_arguments(p, "adjust")
    p.add_argument("-P", "--priority", type=int, metavar="N", help="new priority (higher runs first)")
    p.add_argument("-A", "--state", choices=("defined", "template", "cancelled"),
                   help="new state: defined (release a template, rerun an ended job), template (hold), cancelled")
    p.add_argument("-t", "--timelimit", type=_positive_int, metavar="SECONDS", help="new time limit")
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="set a variable in the job's env (others are kept); repeatable")
    p.add_argument("--max-attempts", type=_positive_int, metavar="N", help="runs allowed (1 = no retry)")
    p.add_argument("--name", help="new name")
    p.add_argument("--site", help="run only at this site ('' = any)")
    add_client_arguments(p)
    p.set_defaults(func=cmd_adjust, parser=p)


def _kill_parser(sub: Any) -> None:
    p = sub.add_parser("kill", help="cancel or stop jobs",
                       description="Cancel jobs not yet dispatched; ask the pilot of a dispatched or running "
                                   "job to stop it. With a filter instead of uuids, every matching job "
                                   "(needs --yes; without it, print how many match).")
    _uuid_arguments(p, "kill")
    job_ops.add_kill_filters(p)
    add_client_arguments(p)
    p.set_defaults(func=cmd_kill, parser=p)


def _delete_parser(sub: Any) -> None:
    p = sub.add_parser("delete", help="delete jobs by uuid or by filter",
                       description="Delete jobs by uuid, or every job matching a filter (needs --yes; without "
                                   "it, print how many match). Dispatched and running jobs are never deleted: "
                                   "kill them first.")
    _uuid_arguments(p, "delete")
    _filter_arguments(p)
    p.add_argument("--all", action="store_true", help="every job (with --yes)")
    p.add_argument("-y", "--yes", action="store_true", help="really delete the jobs a filter matches")
    add_client_arguments(p)
    p.set_defaults(func=cmd_delete, parser=p)


def _limits_parser(sub: Any) -> None:
    p = sub.add_parser("limits", help="list or set per-jobtype limits",
                       description="List job types with their limit on dispatched+running jobs, or set it: "
                                   "-L N -T TYPE (-L none removes the limit, -L 0 pauses the type; "
                                   "without -T, every listed type).")
    p.add_argument("-T", "--jobtype", action="append", metavar="TYPE[,TYPE...]", help="job type(s)")
    p.add_argument("-L", "--limit", type=_limit_value, default=_UNSET, metavar="N|none",
                   help="most jobs of the type dispatched or running at once")
    p.add_argument("--comment", help="note stored with the limit [default: keep the current one]")
    add_client_arguments(p)
    p.set_defaults(func=cmd_limits, parser=p)


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-job`` parser with one sub-command per action."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Submit, list, show, adjust, kill and delete p3s jobs; list and set "
                               "per-jobtype limits. 'p3s-job COMMAND --help' describes each command.",
        epilog="The original flag style works with long options: p3s-job -j FILE (submit), --adjust -u UUID -P N, "
               "--delete -u UUID, --kill -u UUID, --ltype [-L N -T TYPE] (limits).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _submit_parser(sub)
    _list_parser(sub)
    _show_parser(sub)
    _adjust_parser(sub)
    _kill_parser(sub)
    _delete_parser(sub)
    _limits_parser(sub)
    jobtypes.add_parser(sub, _UNSET)
    job_ops.add_parsers(sub)
    return parser


def from_flag_style(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The original's ``--adjust``/``--delete``/``--kill``/``--ltype``/``-j``/``-L`` flags as the matching
    sub-command; its short action letters exit 2 naming the sub-command."""
    commands = {"submit", "list", "show", "adjust", "kill", "delete", "limits", "rerun", "log", "errors", "types"}
    if not argv or argv[0] in commands or argv[0] in ("-h", "--help"):
        return argv
    for flag, (action, long, now) in RETIRED_ACTIONS.items():
        if flag in argv:
            parser.error(f"{flag} ({action}) is no longer an action: write 'p3s-job {action} …' or {long}{now}")
    actions = {FLAG_STYLE_ACTIONS[a] for a in argv if a in FLAG_STYLE_ACTIONS}
    if len(actions) > 1:
        parser.error("--adjust, --delete, --kill and --ltype (limits) exclude each other")
    rest = [a for a in argv if a not in FLAG_STYLE_ACTIONS]
    if actions:
        return [actions.pop(), *rest]
    options = {a.split("=", 1)[0] for a in argv if a.startswith("--")} | {a[:2] for a in argv if a[:1] == "-"}
    if options & set(FLAG_STYLE_SUBMIT):
        return ["submit", *argv]
    if "-L" in options:
        return ["limits", *argv]
    return argv


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``p3s-job``."""
    parser = build_parser()
    args = parser.parse_args(from_flag_style(sys.argv[1:] if argv is None else argv, parser))
    run_command(args.func, args)


if __name__ == "__main__":
    sys.argv[0] = PROG
    main()
