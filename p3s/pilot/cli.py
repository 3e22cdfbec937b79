"""Running a pilot: ``python3 p3s-pilot.pyz [OPTIONS]``, ``python3 -m p3s.pilot [OPTIONS]`` or
``p3s-pilot [OPTIONS]`` (which hands over to ``main`` here).

Part of the pilot package: standard library only (psutil when present), nothing else of p3s.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from p3s.pilot.flags import retire

ADMIN_COMMANDS = ("list", "show", "kill", "delete")    # p3s-pilot's management sub-commands (p3s.cli.pilot)


def run_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="p3s-pilot", description="Run a p3s pilot: register, ask for jobs, run them, report. "
        f"Management: p3s-pilot {{{','.join(ADMIN_COMMANDS)}}} --help.")
    parser.add_argument("-S", "--server", default=None, metavar="URL",
                        help="server URL [default: $P3S_SERVER_URL or http://127.0.0.1:8470]")
    parser.add_argument("--token-file", default=env("P3S_TOKEN_FILE"), metavar="FILE",
                        help="file holding the pilot (bootstrap) token, readable by its owner only "
                             "[$P3S_TOKEN_FILE; default: $P3S_TOKEN, else the server's token file]")
    parser.add_argument("--token", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", default=env("P3S_CA_FILE"), metavar="FILE",
                        help="CA certificates (PEM) to verify an https server with [$P3S_CA_FILE; default: the system's]")
    parser.add_argument("-s", "--site", default=env("P3S_SITE", ""),
                        help="site: period, beat, cycles and env are bootstrapped from its record [$P3S_SITE]")
    parser.add_argument("-H", "--host", default=None, help="host name to report [default: this host's name]")
    parser.add_argument("--logdir", type=Path, default=Path(env("P3S_PILOTLOG", "/tmp/p3s/pilots")),
                        help="pilot log directory [$P3S_PILOTLOG or /tmp/p3s/pilots]")
    parser.add_argument("--joblogdir", type=Path, default=Path(env("P3S_JOBLOG", "/tmp/p3s/jobs")),
                        help="directory of job stdout/stderr files [$P3S_JOBLOG or /tmp/p3s/jobs]")
    parser.add_argument("--workdir", type=Path, default=Path(env("P3S_WORKDIR", "/tmp/p3s/work")),
                        help="parent of the per-job work directories [$P3S_WORKDIR or /tmp/p3s/work]")
    parser.add_argument("-R", "--resultdir", type=Path, default=Path(env("P3S_RESULTDIR", "/tmp/p3s/results")),
                        help="parent of the per-job output directories ($P3S_OUTPUT_DIR), which the monitor "
                             "shows [$P3S_RESULTDIR or /tmp/p3s/results]")
    parser.add_argument("-c", "--cycles", type=int, default=None,
                        help="consecutive idle requests before stopping; 0 = never [default 3]")
    parser.add_argument("-p", "--period", type=float, default=None,
                        help="seconds each idle request waits for work [default 10]")
    parser.add_argument("-b", "--beat", type=float, default=None, help="heartbeat seconds while a job runs [default 10]")
    parser.add_argument("-e", "--extra", default="", help="free text recorded with the pilot, e.g. a batch job id")
    parser.add_argument("--jobtypes", default="", help="comma-separated job types to run [default: any]")
    parser.add_argument("--shell", action="store_true", help="run every payload through the shell")
    parser.add_argument("--register-deadline", type=float, default=300.0,
                        help="seconds to keep trying to register [default 300]")
    # The original pilot's -l, -L, -w and -x mean other things in p3s's other commands (README, "Short flags").
    for flag, now in (("-l", "--logdir DIR"), ("-L", "--joblogdir DIR (-L is the limit in p3s-job)"),
                      ("-w", "--workdir DIR (-w names hosts in p3s-fleet)"),
                      ("-x", "--shell (-x excludes hosts in p3s-fleet)")):
        retire(parser, flag, f"is not a pilot option any more: write {now}")
    parser.add_argument("--outage", type=float, default=600.0,
                        help="seconds the server may be unreachable before the pilot gives up [default 600]")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL [default 10]")
    parser.add_argument("-v", "--verbosity", type=int, default=1, choices=range(0, 4),
                        help="0 errors and warnings, 1 progress, 2+ debug [default 1]")
    return parser


def run_pilot(argv: list[str]) -> int:
    from p3s.pilot.client import (CREDENTIAL_VARIABLES, Client, P3SError, TokenFileError, find_token,
                                  read_token_file)
    from p3s.pilot.agent import Pilot, PilotOptions, PilotStop, bootstrap_site
    from p3s.pilot.dirs import UnsafePath, private_dir

    parser = run_parser()
    args = parser.parse_args(argv)
    if args.token is not None:
        parser.error("--token is refused: a token on the command line is shown to every user of this node "
                     "(ps); put it in a file only you can read (--token-file FILE, chmod 600) or in $P3S_TOKEN")
    try:
        token = read_token_file(args.token_file) if args.token_file else find_token()
    except TokenFileError as exc:
        parser.error(str(exc))
    for name in CREDENTIAL_VARIABLES:        # nothing this pilot starts may inherit a credential
        os.environ.pop(name, None)
    explicit = {name for name in ("cycles", "period", "beat") if getattr(args, name) is not None}
    if args.server:
        explicit.add("server")
    options = PilotOptions(
        server=args.server or os.environ.get("P3S_SERVER_URL") or "http://127.0.0.1:8470",
        token=token, site=args.site, host=args.host or socket.getfqdn(), logdir=args.logdir,
        joblogdir=args.joblogdir, workdir=args.workdir, resultdir=args.resultdir, extra=args.extra,
        jobtypes=[t for t in args.jobtypes.split(",") if t], register_deadline=args.register_deadline,
        outage=args.outage, grace=args.grace, shell=args.shell)
    for name in explicit - {"server"}:
        setattr(options, name, getattr(args, name))
    for name in ("logdir", "joblogdir", "workdir", "resultdir"):
        try:
            setattr(options, name, private_dir(getattr(options, name)))
        except UnsafePath as exc:
            print(f"p3s-pilot: error: {exc}", file=sys.stderr)
            return 2
    client = Client(options.server, options.token, timeout=30, retries=0, ca_file=args.ca_file)
    pilot = Pilot(options, client)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbosity, logging.DEBUG)
    logging.basicConfig(level=level, force=True, format="%(asctime)s %(levelname)s pilot: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr),
                                  logging.FileHandler(options.logdir / f"{pilot.uuid}.log")])
    pilot.install_signal_handlers()
    if options.site:
        try:
            bootstrap_site(client, options, explicit)
        except P3SError as exc:
            logging.error("cannot read site %r from %s: %s", options.site, options.server, exc)
            return 2
        except PilotStop:
            return 0
    if options.cycles < 0 or options.period < 0 or options.beat <= 0:
        print("p3s-pilot: error: cycles and period must not be negative, beat must be positive", file=sys.stderr)
        return 2
    return pilot.run()


def main(argv: list[str] | None = None) -> None:
    """Run one pilot with ``argv`` (default: the command line); exits with its status."""
    sys.exit(run_pilot(sys.argv[1:] if argv is None else list(argv)))
