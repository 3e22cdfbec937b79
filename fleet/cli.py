"""`p3s-fleet`: start, count and stop pilots on many hosts (replaces pgen.sh, preport.sh, pkill.sh
and the cron-driven pilot top-up).

    p3s-fleet up -w 'wn[01-20]' -n 8 [-B ssh|local|slurm|sge] [-S URL] [--site S] [-- PILOT OPTIONS]
    p3s-fleet up -B slurm -n 160 [--partition P] [--time T] [--submit-option=…] [-- PILOT OPTIONS]
    p3s-fleet report [-w NODES] [--site S] [--pilots] [--json]
    p3s-fleet kill (-w NODES | --site S | --all) [--wait S] [--grace S]
    p3s-fleet top-up --site S [--site S2 …] [-w NODES] [--every SECONDS] [--max-per-node N] [-- PILOT OPTIONS]
    p3s-fleet zipapp [--output p3s-pilot.pyz]

Results go to stdout, progress and errors to stderr; the exit status is 1 when any host failed.
"""
from __future__ import annotations

import argparse
import os
import sys

from p3s.backends import BackendNotFound, available, load
from p3s.backends.base import Backend, BackendBase, Settings
from p3s.cli.common import add_client_arguments, fail, make_client, number_type, print_json, print_table
from p3s.pilot.client import P3SError, TokenFileError, read_token_file
from p3s.pilot.flags import retire
from p3s.fleet import batch_cli
from p3s.fleet import kill as kill_mod
from p3s.fleet import report as report_mod
from p3s.fleet import topup as topup_mod
from p3s.fleet.fanout import DEFAULT_FANOUT, Progress
from p3s.fleet.nodes import NodesError, check_name, expand, fold
from p3s.fleet.server import ServerView
from p3s.fleet.up import NodeOutcome, PilotOptionsError, PilotPlan, check_pilot_options, idle_note, up

PROG = "p3s-fleet"
DEFAULT_BACKEND = "ssh"


def _backend_classes() -> dict[str, type[BackendBase]]:
    classes = {}
    for name in available():
        try:
            classes[name] = load(name)
        except BackendNotFound:
            continue
    return classes


def _common_parser(backends: dict[str, type[BackendBase]]) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    hosts = common.add_argument_group("hosts")
    hosts.add_argument("-w", "--nodes", metavar="NODES", help="host list, e.g. 'wn[01-20]', 'wn[01-05,08],gpu[1-2]', "
                                                              "'wn[01-20]!wn07' (ClusterShell syntax)")
    hosts.add_argument("-x", "--exclude", metavar="NODES", help="hosts to leave out (same syntax)")
    hosts.add_argument("-B", "--backend", default=DEFAULT_BACKEND, metavar="NAME",
                       help=f"how pilots are started and found: {', '.join(backends) or 'none installed'} "
                            f"[default {DEFAULT_BACKEND}]")
    hosts.add_argument("--fleet", default="default", metavar="NAME",
                       help="fleet name: the fleet's pilots carry it, other fleets' pilots are left alone "
                            "[default: default]")
    hosts.add_argument("--fanout", type=number_type(int, 1), default=DEFAULT_FANOUT, metavar="N",
                       help=f"hosts worked on at once [default {DEFAULT_FANOUT}]")
    hosts.add_argument("--python", metavar="PATH",
                       help="Python 3.11+ on the hosts (the pilot is shipped to them) [default: python3 over ssh, this Python locally]")
    hosts.add_argument("--command-timeout", type=number_type(float, 0), default=60.0, metavar="S",
                       help="seconds one operation on one host may take [default 60]")
    owners: dict[str, list[str]] = {}
    for name, cls in backends.items():
        for option in cls.options:
            owners.setdefault(option.name, []).append(name)
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for name, cls in backends.items():
        for option in cls.options:
            shared = tuple(owners[option.name])
            if shared[0] != name:               # an option several backends share: added once
                continue
            if shared not in groups:
                title = f"{name} backend" if len(shared) == 1 else f"{', '.join(shared)} backends"
                groups[shared] = common.add_argument_group(title)
            groups[shared].add_argument(
                "--" + option.name.replace("_", "-"), dest=f"opt__{option.name}", type=option.type,
                choices=option.choices, metavar=None if option.choices else option.metavar or option.name.upper(),
                action="append" if option.multiple else "store", help=option.help)
    add_client_arguments(common)
    retire(common, "-b", "is the heartbeat (p3s-site, the pilot): write -B/--backend NAME for the backend")
    return common


def _launch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pilots (more pilot options after --, e.g. -- -c 0 -p 30)")
    group.add_argument("--pilot-server", metavar="URL", help="server URL the pilots use [default: --server]")
    group.add_argument("--pilot-token-file", metavar="FILE",
                       help="file (readable by its owner only) holding the token the pilots register with, best "
                            "a pilot (bootstrap) token [default: $P3S_PILOT_TOKEN, else the fleet's own token]; "
                            "it reaches the pilots on stdin, never on a command line")
    group.add_argument("--pilot-token", help=argparse.SUPPRESS)
    group.add_argument("--logdir", default="/tmp/p3s/pilots", metavar="DIR",
                       help="pilot logs; {node} is replaced by the host's name [default /tmp/p3s/pilots]")
    group.add_argument("--joblogdir", default="/tmp/p3s/jobs", metavar="DIR",
                       help="job stdout/stderr ({node} too) [default /tmp/p3s/jobs]")
    group.add_argument("--workdir", default="/tmp/p3s/work", metavar="DIR",
                       help="job work directories ({node} too) [default /tmp/p3s/work]")
    group.add_argument("--register-timeout", type=number_type(float, 0), default=30.0, metavar="S",
                       help="seconds to wait for the new pilots to register; 0 = don't wait [default 30]")


def build_parser() -> argparse.ArgumentParser:
    backends = _backend_classes()
    common = _common_parser(backends)
    parser = argparse.ArgumentParser(
        prog=PROG, description="Start, count and stop p3s pilots on many hosts.",
        epilog="Backends: " + "; ".join(f"{n}: {c.description}" for n, c in backends.items()))
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,report,kill,top-up,zipapp}")
    start = sub.add_parser("up", parents=[common], help="start pilots on hosts",
                           description="Start N pilots on each host, then wait for them to register.")
    start.add_argument("-n", "--per-node", type=number_type(int, 1), default=1, metavar="N",
                       help="pilots per host [default 1]; batch backends without -w: pilots in all")
    start.add_argument("-s", "--site", default="", metavar="SITE", help="site the pilots serve")
    _launch_arguments(start)
    rep = sub.add_parser("report", parents=[common], help="pilots per host, against the server's view",
                         description="One row per host: fleet pilots running there, what the server counts, "
                                     "current jobs, CPU and memory, and the mismatches.")
    rep.add_argument("-s", "--site", help="only this site's pilots")
    rep.add_argument("--pilots", action="store_true", help="one row per pilot (batch backends: per batch job) instead")
    stop = sub.add_parser("kill", parents=[common], help="stop pilots (through the server, then by signal)",
                          description="Ask the server to stop every pilot it knows on the hosts (of --site, if "
                                      "given): each stops its payload, reports the job killed and exits. Then "
                                      "SIGTERM, and SIGKILL after --grace, the fleet's pilot processes still "
                                      "running; signals never reach any other process.")
    stop.add_argument("-s", "--site", help="only this site's pilots")
    stop.add_argument("--all", action="store_true", help="every pilot of the fleet (hosts: -w, else the "
                                                         "server's and the backend's)")
    stop.add_argument("--wait", type=number_type(float, 0), default=30.0, metavar="S",
                      help="seconds to let pilots stop on the server's request [default 30]")
    stop.add_argument("--grace", type=number_type(float, 0), default=15.0, metavar="S",
                      help="seconds between SIGTERM and SIGKILL (batch backends: for the cancelled jobs to "
                           "leave the queue) [default 15]")
    top = sub.add_parser("top-up", parents=[common], help="keep a site at its nominal pilot count",
                         description="Start the pilots a site is short of (its record's 'pilots') on the "
                                     "least loaded hosts (-w, else those the site's pilots run on); once, or "
                                     "every N seconds.")
    top.add_argument("-s", "--site", required=True, action="append",
                     help="the site; repeatable: one factory for several sites (each round tops up each)")
    top.add_argument("--every", type=number_type(float, 0), metavar="SECONDS",
                     help="a pilot factory: repeat every SECONDS until stopped, backing off a failing backend; "
                          "each round is recorded as a server event (fleet.topup), shown on the site's page")
    top.add_argument("--max-per-node", type=number_type(int, 1), metavar="N",
                     help="at most this many of the site's pilots per host")
    _launch_arguments(top)
    pyz = sub.add_parser("zipapp", help="write the pilot zipapp (what every backend ships to the nodes)",
                         description="Write p3s-pilot.pyz: the pilot package as one file that any python3 "
                                     "(3.11+) runs with nothing else installed: python3 p3s-pilot.pyz -S URL …")
    retire(pyz, "-o", "is a workflow override (p3s-workflow): write --output FILE")
    pyz.add_argument("--output", default="p3s-pilot.pyz", metavar="FILE", help="[default: p3s-pilot.pyz]")
    return parser


def _backend(args: argparse.Namespace) -> BackendBase:
    try:
        check_name(args.fleet, "fleet name")
        cls = load(args.backend)
        given = {k[len("opt__"):]: v for k, v in vars(args).items() if k.startswith("opt__") and v is not None}
        names = {o.name for o in cls.options}
        foreign = sorted(k for k in given if k not in names)
        if foreign:
            raise ValueError(f"--{foreign[0].replace('_', '-')} is not an option of the {args.backend} backend")
        return cls(Settings(args.fleet, args.python, args.command_timeout), given)
    except (BackendNotFound, NodesError, ValueError) as exc:
        fail(str(exc))


def _nodes(args: argparse.Namespace, required: bool) -> list[str] | None:
    if not args.nodes:
        if required:
            fail(f"{args.command} needs the hosts: -w/--nodes 'wn[01-20]'")
        return None
    try:
        return expand(args.nodes, args.exclude)
    except NodesError as exc:
        fail(str(exc))


def _known_nodes(args: argparse.Namespace, backend: Backend, view: ServerView) -> list[str]:
    """Hosts to work on when none are named: the server's (alive pilots) and the backend's own."""
    nodes = set(backend.discover())
    try:
        nodes |= view.hosts(args.site)
    except P3SError as exc:
        print(f"{PROG}: warning: cannot ask the server for its hosts: {exc}", file=sys.stderr)
    if args.exclude:
        try:
            nodes -= set(expand(args.exclude))
        except NodesError as exc:
            fail(str(exc))
    return sorted(nodes)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _grouped(rows: list[tuple[str, dict]]) -> list[dict]:
    """Rows of identical results merged, their hosts folded (``wn[01-18]``), like dshbak -c."""
    groups: dict[tuple, tuple[dict, list[str]]] = {}
    for node, row in rows:
        groups.setdefault(tuple(sorted(row.items())), (row, []))[1].append(node)
    return [{"hosts": fold(nodes), **row} for row, nodes in groups.values()]


# --- commands ---------------------------------------------------------------------------------
def _pilot_token(args: argparse.Namespace, view: ServerView) -> str | None:
    """The token the pilots get: from a private file, $P3S_PILOT_TOKEN, else the fleet's own."""
    if args.pilot_token is not None:
        fail("--pilot-token is refused: a token on the command line is shown to every user of this machine "
             "(ps); use --pilot-token-file FILE (chmod 600) or $P3S_PILOT_TOKEN")
    if args.pilot_token_file:
        try:
            return read_token_file(args.pilot_token_file)
        except TokenFileError as exc:
            fail(str(exc))
    return os.environ.get("P3S_PILOT_TOKEN") or view.token


def _plan(args: argparse.Namespace, view: ServerView, pilot_args: list[str]) -> PilotPlan:
    """What to start, after checking the pilot options and that the server answers (and has the
    site): better no pilot at all than pilots that cannot register."""
    try:
        check_pilot_options(pilot_args)
    except PilotOptionsError as exc:
        fail(str(exc))
    if args.register_timeout > 0 or args.site:
        try:
            view.check(args.site)
        except P3SError as exc:
            fail(f"{exc}; nothing started", 1)
    return PilotPlan(args.pilot_server or view.url, _pilot_token(args, view), args.site or "",
                     args.logdir, args.joblogdir, args.workdir, pilot_args)


def _print_up(outcomes: dict[str, NodeOutcome], server_error: str | None, timeout: float, as_json: bool) -> int:
    started = sum(len(o.started) for o in outcomes.values())
    registered = sum(len(o.registered) for o in outcomes.values())
    failed = [n for n, o in outcomes.items() if not o.ok]
    if as_json:
        print_json({"hosts": [o.as_json(timeout) for o in outcomes.values()], "started": started,
                    "registered": registered, "ok": len(outcomes) - len(failed), "failed": len(failed),
                    "server_error": server_error})
    else:
        rows = [(n, {"result": "ok" if o.ok else "failed", "started": len(o.started),
                     "registered": len(o.registered) if timeout else None, "detail": o.detail(timeout)})
                for n, o in outcomes.items()]
        print_table(_grouped(rows), ("hosts", "result", "started", "registered", "detail"),
                    ("HOSTS", "RESULT", "STARTED", "REGISTERED", "DETAIL"))
        within = f", {registered} registered within {timeout:g} s" if timeout and not server_error else ""
        print(f"{_n(len(outcomes), 'host')}: {len(outcomes) - len(failed)} ok, {len(failed)} failed; "
              f"{_n(started, 'pilot')} started{within}")
    if server_error:
        print(f"{PROG}: error: {server_error}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {_n(len(failed), 'host')} failed: {fold(failed)}", file=sys.stderr)
    return 1 if failed or server_error else 0


def cmd_up(args: argparse.Namespace, backend: Backend, view: ServerView, pilot_args: list[str]) -> int:
    nodes = _nodes(args, required=True)
    plan = _plan(args, view, pilot_args)
    try:
        site = view.client.get("sites", args.site) if args.site else None
    except P3SError:
        site = None
    note = idle_note(pilot_args, site)
    if note:
        print(f"{PROG}: {note}", file=sys.stderr)
    outcomes, server_error = up(backend, view, plan, {n: args.per_node for n in nodes}, args.fanout,
                                args.register_timeout, Progress())
    return _print_up(outcomes, server_error, args.register_timeout, args.json)


def cmd_report(args: argparse.Namespace, backend: Backend, view: ServerView, _: list[str]) -> int:
    nodes = _nodes(args, required=False) or _known_nodes(args, backend, view)
    reports = report_mod.report(backend, view, nodes, args.site, args.fanout, Progress())
    if args.json:
        print_json({"hosts": [r.as_json() for r in reports.values()]})
    elif args.pilots:
        print_table(report_mod.pilot_rows(reports), report_mod.PILOT_COLUMNS, report_mod.PILOT_HEADERS)
    else:
        print_table(report_mod.rows(reports), report_mod.COLUMNS, report_mod.HEADERS)
    if not nodes:
        print(f"{PROG}: no hosts: the server knows no live pilots and none were named (-w)", file=sys.stderr)
    failed = [n for n, r in reports.items() if not r.ok]
    if failed:
        print(f"{PROG}: {_n(len(failed), 'host')} failed: {fold(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_kill(args: argparse.Namespace, backend: Backend, view: ServerView, _: list[str]) -> int:
    if not (args.nodes or args.site or args.all):
        fail("kill needs -w/--nodes, --site or --all")
    nodes = _nodes(args, required=False) or _known_nodes(args, backend, view)
    if not nodes:
        print(f"{PROG}: no hosts: the server knows no live pilots there and none were named (-w)", file=sys.stderr)
    outcomes = kill_mod.kill(backend, view, nodes, args.site, args.wait, args.grace, args.fanout, Progress())
    if args.json:
        print_json({"hosts": [o.as_json() for o in outcomes.values()]})
    else:
        print_table(_grouped([(n, kill_mod.row(o)) for n, o in outcomes.items()]), kill_mod.COLUMNS, kill_mod.HEADERS)
        found = sum(len(o.found) for o in outcomes.values())
        counts = [sum(len(o.on_request) for o in outcomes.values())] + [
            sum(len(o.stopped.get(key, [])) for o in outcomes.values()) for key in ("term", "kill", "survived")]
        asked = sum(len(o.requested) for o in outcomes.values())
        print(f"{_n(found, 'pilot')} on {_n(len(nodes), 'host')}: {counts[0]} stopped on request, "
              f"{counts[1]} by SIGTERM, {counts[2]} by SIGKILL, {counts[3]} survived; "
              f"the server was asked to stop {asked}")
    failed = [n for n, o in outcomes.items() if not o.ok]
    if failed:
        print(f"{PROG}: {_n(len(failed), 'host')} failed: {fold(failed)}", file=sys.stderr)
    return 1 if failed else 0


def for_each_site(args: argparse.Namespace) -> list[argparse.Namespace]:
    """One copy of ``args`` per ``--site`` given to top-up, with ``site`` that one site."""
    return [argparse.Namespace(**{**vars(args), "site": site}) for site in dict.fromkeys(args.site)]


def cmd_top_up(args: argparse.Namespace, backend: Backend, view: ServerView, pilot_args: list[str]) -> int:
    from p3s.fleet import service

    named = _nodes(args, required=False)

    def factory(site_args: argparse.Namespace):
        plan = _plan(site_args, view, pilot_args)
        seen: set[str] = set()

        def one_round() -> service.Round:
            nodes = named or sorted(seen.union(_known_nodes(site_args, backend, view)))
            seen.update(nodes)
            if not nodes:
                raise P3SError(0, f"top-up needs the hosts: -w/--nodes 'wn[01-20]' (no pilot of site "
                                  f"{site_args.site} runs anywhere to take them from)")
            result = topup_mod.top_up(backend, view, plan, nodes, args.max_per_node, args.fanout,
                                      args.register_timeout, Progress())
            errors = [f"{node}: " + (result.listed[node].error if node in result.listed and result.listed[node].error
                                     else result.outcomes[node].detail(args.register_timeout))
                      for node in result.failed]
            if result.server_error:
                errors.append(result.server_error)
            started = sum(len(o.started) for o in result.outcomes.values())
            return service.Round(topup_mod.summary(result), result.as_json(args.register_timeout), errors,
                                 result.nominal, started, result.starting,
                                 result.alive + sum(len(o.registered) for o in result.outcomes.values()))

        return one_round

    rounds = {site_args.site: factory(site_args) for site_args in for_each_site(args)}
    return service.run(args, view, backend.name, rounds)


def _configured_options(args: argparse.Namespace) -> list[str]:
    """The config's ``fleet_options`` (file or $P3S_FLEET_OPTIONS), as words."""
    from p3s.config import ConfigError, load_config

    try:
        options = load_config(args.config).fleet_options
    except ConfigError as exc:
        fail(str(exc))
    if not all(isinstance(o, (str, int, float)) for o in options):
        fail("config: key 'fleet_options': expected a list of words, e.g. [--backend, slurm, --partition, short]")
    return [str(o) for o in options]


COMMANDS = {"up": cmd_up, "report": cmd_report, "kill": cmd_kill, "top-up": cmd_top_up}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    pilot_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, pilot_args = argv[:at], argv[at + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = _configured_options(args) if args.command != "zipapp" else []
    if defaults:                       # the config's fleet_options first: the command line's own win
        args = parser.parse_args(argv[:1] + defaults + argv[1:])
    if args.command == "zipapp":
        from p3s.backends import pyz

        try:
            print(pyz.write(args.output))
        except OSError as exc:
            fail(f"cannot write {args.output}: {exc.strerror}", 1)
        sys.exit(0)
    if pilot_args and args.command not in ("up", "top-up"):
        parser.error(f"pilot options (after --) are for up and top-up, not {args.command}")
    client = make_client(args)
    view = ServerView(client.url, client.token)
    backend = _backend(args)
    commands = batch_cli.COMMANDS if backend.kind == "batch" else COMMANDS
    try:
        code = commands[args.command](args, backend, view, pilot_args)
    except P3SError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        code = 0
    finally:
        backend.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
