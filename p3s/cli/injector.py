"""`p3s-injector`: watch directories for new data files and start a workflow for each one.

    p3s-injector -d /data/inbox -t 1filter [--pattern 'np04*.root'] [--datatype ROOT]
                 [--every N | --fraction F] [--max-per-window N --window S]
                 [--backlog-limit N [--backlog-type JOBTYPE]] [--poll S] [--once]

A long-lived service: stop it with SIGTERM or SIGINT (exit 0). ``--once`` back-fills: it processes
the files already in the directories and exits. Exit codes: 0 done or stopped, 1 the server stayed
unreachable past --max-outage, 2 a configuration error (unknown template or data type, bad options,
a refused token).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from p3s.cli.common import add_client_arguments

    parser = argparse.ArgumentParser(
        prog="p3s-injector",
        description="Watch directories for new data files (inotify, or polling); register each complete "
                    "file and instantiate a workflow template with it as input. Files that are duplicates, "
                    "too small, sampled out, over the rate or dropped for backlog are registered as skipped "
                    "(duplicates are not registered again); every decision is also a server event.")
    watch = parser.add_argument_group("watching")
    watch.add_argument("-d", "--dir", dest="dirs", action="append", required=True, metavar="DIR",
                       help="directory to watch (repeatable)")
    watch.add_argument("--pattern", dest="patterns", action="append", metavar="GLOB",
                       help="file name pattern (repeatable) [default: *; names starting with a dot only "
                            "match a pattern that starts with one]")
    watch.add_argument("--poll", type=float, metavar="SECONDS",
                       help="scan every SECONDS instead of using inotify (network file systems) "
                            "[default: inotify, or polling every 1 s where it is not available]")
    watch.add_argument("--settle", type=float, default=2.0, metavar="SECONDS",
                       help="a file not known to be closed is complete when its size and mtime have not "
                            "changed for SECONDS (polling; files open when the injector started) [default 2]")
    watch.add_argument("--once", action="store_true",
                       help="process the files present now (all counted complete) and exit: back-filling")
    watch.add_argument("--ignore-existing", action="store_true",
                       help="leave alone the files present when the injector starts (not with --once)")
    watch.add_argument("--min-size", type=int, default=1, metavar="BYTES",
                       help="files smaller than this are skipped [default 1: empty files are skipped]")

    work = parser.add_argument_group("workflows")
    work.add_argument("--template", required=True, help="workflow template to instantiate per file")
    work.add_argument("--input-tag", metavar="TAG",
                      help="data tag or edge id the file is bound to [default: the template's first input]")
    work.add_argument("--filenames", choices=("derived", "generated", "template"), default="derived",
                      help="names of the files the workflow produces [default: derived from the input's name]")
    work.add_argument("--outdir", default="", metavar="DIR",
                      help="directory of the produced files [default: each edge's dirpath in the template]")
    work.add_argument("--datatype", default="", metavar="TYPE", help="data type of the registered files")
    work.add_argument("--hold", action="store_true",
                      help="create workflows in state template (start them later) instead of defined")
    work.add_argument("--no-link", action="store_true",
                      help="do not record the workflow uuid in the data record's metadata")

    sampling = parser.add_argument_group("sampling and dropping")
    sampling.add_argument("--every", type=int, metavar="N", help="process every Nth file (the 1st, N+1th, ...)")
    sampling.add_argument("--fraction", type=float, metavar="F",
                          help="process a fraction F of the files, chosen by a hash of the name (reproducible)")
    sampling.add_argument("--max-per-window", type=int, metavar="N", help="process at most N files per window")
    sampling.add_argument("--window", type=float, default=60.0, metavar="SECONDS",
                          help="sliding window of --max-per-window [default 60]")
    sampling.add_argument("--backlog-limit", type=int, metavar="N",
                          help="skip new files while more than N jobs are defined (waiting)")
    sampling.add_argument("--backlog-type", metavar="JOBTYPE",
                          help="count only defined jobs of this type for --backlog-limit [default: all]")

    service = parser.add_argument_group("service")
    service.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                         help="timeout of one server call [default 10]")
    service.add_argument("--max-backoff", type=float, default=30.0, metavar="SECONDS",
                         help="longest wait between retries while the server is away [default 30]")
    service.add_argument("--max-outage", type=float, default=0.0, metavar="SECONDS",
                         help="exit 1 when the server has been away this long [default 0: wait forever]")
    service.add_argument("-v", "--verbosity", type=int, default=1, choices=range(0, 4),
                         help="0 errors and warnings, 1 every decision, 2+ debug [default 1]")
    service.add_argument("--log-file", metavar="FILE", help="also log to FILE")
    add_client_arguments(parser)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.poll is not None and args.poll <= 0:
        parser.error("--poll must be positive")
    if args.settle < 0 or args.min_size < 0 or args.window <= 0 or args.timeout <= 0 or args.max_backoff <= 0 \
            or args.max_outage < 0:
        parser.error("--settle, --min-size and --max-outage must not be negative; --window, --timeout and "
                     "--max-backoff must be positive")
    if args.every is not None and args.every < 1:
        parser.error("--every must be at least 1")
    if args.fraction is not None and not 0 <= args.fraction <= 1:
        parser.error("--fraction must be between 0 and 1")
    if args.max_per_window is not None and args.max_per_window < 1:
        parser.error("--max-per-window must be at least 1")
    if args.backlog_limit is not None and args.backlog_limit < 0:
        parser.error("--backlog-limit must not be negative")
    if args.backlog_type and args.backlog_limit is None:
        parser.error("--backlog-type needs --backlog-limit")
    if args.once and args.ignore_existing:
        parser.error("--once processes the existing files: it cannot --ignore-existing")
    for directory in args.dirs:
        if not os.path.isdir(directory):
            parser.error(f"{directory} is not a directory")


def main(argv: list[str] | None = None) -> None:
    from p3s.cli.common import make_client, print_json
    from p3s.injector import Injector, Options

    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbosity, logging.DEBUG)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=level, force=True, handlers=handlers,
                        format="%(asctime)s %(levelname)s injector: %(message)s")
    client = make_client(args)
    client.retries, client.timeout = 0, args.timeout      # the injector retries itself, and keeps watching
    options = Options(
        dirs=[str(Path(d).resolve()) for d in args.dirs], template=args.template,
        patterns=args.patterns or ["*"], input_tag=args.input_tag, filenames=args.filenames, outdir=args.outdir,
        datatype=args.datatype, settle=args.settle, min_size=args.min_size, poll=args.poll, once=args.once,
        ignore_existing=args.ignore_existing, every=args.every, fraction=args.fraction,
        max_per_window=args.max_per_window, window=args.window, backlog_limit=args.backlog_limit,
        backlog_type=args.backlog_type, workflow_state="template" if args.hold else "defined",
        link=not args.no_link, max_backoff=args.max_backoff, max_outage=args.max_outage)
    injector = Injector(options, client)
    code = injector.run()
    if args.once and code == 0:
        if args.json:
            print_json(injector.summary())
        else:
            print(injector.summary_text())
    sys.exit(code)


if __name__ == "__main__":
    main()
