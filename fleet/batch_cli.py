"""The ``p3s-fleet`` commands for batch backends (``kind == "batch"``): same flags as for hosts,
with ``-w`` optional (without it the batch system places the pilots) and ``report`` joining the
batch system's view with the server's (``p3s.fleet.batch``)."""
from __future__ import annotations

import argparse
import sys

from p3s.backends.batch import BatchBackend, BatchError, PilotJobPlan
from p3s.cli.common import fail, print_json, print_table
from p3s.fleet import batch
from p3s.fleet.fanout import Progress
from p3s.fleet.server import ServerView

PROG = "p3s-fleet"


def job_plan(args: argparse.Namespace, view: ServerView, pilot_args: list[str]) -> PilotJobPlan:
    from p3s.fleet.cli import _plan

    plan = _plan(args, view, pilot_args)
    return PilotJobPlan(plan.server, plan.token, plan.site, plan.logdir, plan.joblogdir, plan.workdir, plan.extra)


def _named(args: argparse.Namespace) -> list[str] | None:
    from p3s.fleet.cli import _nodes

    return _nodes(args, required=False)


def _show(progress: Progress):
    return lambda text: progress.show(text, force=True)


def cmd_up(args: argparse.Namespace, backend: BatchBackend, view: ServerView, pilot_args: list[str]) -> int:
    plan = job_plan(args, view, pilot_args)
    nodes = _named(args)
    counts: dict[str | None, int] = {n: args.per_node for n in nodes} if nodes else {None: args.per_node}
    subs = batch.submit(backend, plan, counts, args.fanout)
    server_error = None
    if args.register_timeout > 0 and any(s.ids for s in subs):
        progress = Progress()
        server_error = batch.wait_registered(backend, view, subs, args.register_timeout, _show(progress))
        progress.clear()
    submitted = sum(len(s.ids) for s in subs)
    registered = sum(len(s.registered) for s in subs)
    failed = [s for s in subs if s.error]
    if args.json:
        print_json({"submissions": [s.as_json() for s in subs], "submitted": submitted, "registered": registered,
                    "failed": len(failed), "server_error": server_error})
    else:
        rows = [{"node": s.node or "(any)", "result": "failed" if s.error else "ok", "submitted": len(s.ids),
                 "registered": len(s.registered) if args.register_timeout else None,
                 "ids": _ids(s.ids), "detail": s.error} for s in subs]
        print_table(rows, ("node", "result", "submitted", "registered", "ids", "detail"),
                    ("NODE", "RESULT", "SUBMITTED", "REGISTERED", "BATCH IDS", "DETAIL"))
        within = f", {registered} registered within {args.register_timeout:g} s" if args.register_timeout else ""
        print(f"{submitted} pilot jobs submitted to {backend.name}{within}")
    for sub in failed:
        print(f"{PROG}: {sub.node or backend.name}: {sub.error}", file=sys.stderr)
    if server_error:
        print(f"{PROG}: error: {server_error}", file=sys.stderr)
    short = args.register_timeout > 0 and registered < submitted
    return 1 if failed or server_error or short else 0


def _ids(ids: list[str]) -> str:
    if len(ids) <= 2:
        return ",".join(ids)
    return f"{ids[0]} … {ids[-1]}"


def cmd_report(args: argparse.Namespace, backend: BatchBackend, view: ServerView, _: list[str]) -> int:
    result = batch.report(backend, view, _named(args), args.site)
    if args.json:
        print_json(result.as_json())
    elif args.pilots:
        print_table(result.job_rows(), batch.JOB_COLUMNS, batch.JOB_HEADERS)
    else:
        print_table(result.node_rows(), batch.NODE_COLUMNS, batch.NODE_HEADERS)
    if result.server_error:
        print(f"{PROG}: error: server: {result.server_error}", file=sys.stderr)
    return 1 if result.server_error else 0


def cmd_kill(args: argparse.Namespace, backend: BatchBackend, view: ServerView, _: list[str]) -> int:
    if not (args.nodes or args.site or args.all):
        fail("kill needs -w/--nodes, --site or --all")
    progress = Progress()
    result = batch.kill(backend, view, _named(args), args.site, args.wait, args.grace, _show(progress))
    progress.clear()
    if args.json:
        print_json(result.as_json())
    else:
        print(f"{result.found} pilot jobs: {len(result.cancelled_queued)} queued ones cancelled, "
              f"{result.stopped_on_request} pilots stopped on request (of {len(result.asked)} asked), "
              f"{len(result.cancelled_running)} running jobs cancelled, {len(result.left)} still in {backend.name}")
    if result.server_error:
        print(f"{PROG}: error: server: {result.server_error}", file=sys.stderr)
    if result.left:
        print(f"{PROG}: still in {backend.name} after {args.grace:g} s: {' '.join(result.left)}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_top_up(args: argparse.Namespace, backend: BatchBackend, view: ServerView, pilot_args: list[str]) -> int:
    from p3s.fleet import service
    from p3s.fleet.cli import for_each_site

    nodes = _named(args)

    def factory(plan: PilotJobPlan):
        def one_round() -> service.Round:
            result = batch.top_up(backend, view, plan, nodes, args.fanout)
            return service.Round(result.summary(), result.as_json(), result.failed, result.nominal,
                                 sum(len(s.ids) for s in result.submitted), result.queued, result.alive)
        return one_round

    rounds = {a.site: factory(job_plan(a, view, pilot_args)) for a in for_each_site(args)}
    return service.run(args, view, backend.name, rounds)


COMMANDS = {"up": cmd_up, "report": cmd_report, "kill": cmd_kill, "top-up": cmd_top_up}


def guard(func):
    """Batch errors end the command with their message (exit status 1)."""
    def wrapped(*a, **kw) -> int:
        try:
            return func(*a, **kw)
        except BatchError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
    return wrapped


COMMANDS = {name: guard(func) for name, func in COMMANDS.items()}
