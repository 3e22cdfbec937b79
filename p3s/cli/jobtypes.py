"""``p3s-job types``: list job types with their limits and freshness policies, or change them.

    p3s-job types [-T TYPE[,TYPE…]] [-L N|none] [--eta S|none] [--order fifo|newest-first]
                  [--stale on|off] [--stop-running on|off] [--shed on|off] [--alarm-within-eta F|none]

Only the settings given change (the others keep their values); ``none`` unsets one, so the
configuration's ``jobtype_defaults`` apply again.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from p3s.cli.common import Failures, add_client_arguments, fail, make_client, print_json, print_table, split_csv

COLUMNS = ("name", "limit", "eta", "order", "stale", "stop_running", "shed", "alarm_within_eta", "active", "defined")
HEADERS = ("NAME", "LIMIT", "ETA", "ORDER", "STALE", "STOP_RUNNING", "SHED", "ALARM<", "ACTIVE", "DEFINED")
SWITCHES = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False, "none": None}


def _or_none(convert: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text.lower() in ("none", "null", "unset"):
            return None
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or 'none', got {text!r}") from None
        if isinstance(value, (int, float)) and value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
        return value
    return parse


def _switch(text: str) -> bool | None:
    try:
        return SWITCHES[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected on, off or none, got {text!r}") from None


def add_parser(sub: Any, unset: object) -> None:
    """Register ``types`` on the ``p3s-job`` sub-command parser."""
    p = sub.add_parser("types", help="list or set per-jobtype limits and freshness policies (ETA, order, "
                                     "stale, shed)",
                       description="List job types with their limit and freshness policies, or change the "
                                   "given settings of the -T types. 'none' unsets a setting (the configured "
                                   "default applies).")
    p.add_argument("-T", "--jobtype", action="append", metavar="TYPE[,TYPE...]", help="job type(s)")
    p.add_argument("-L", "--limit", type=_or_none(int, "a number of jobs"), default=unset, metavar="N|none",
                   help="most jobs of the type dispatched or running at once")
    p.add_argument("--eta", type=_or_none(int, "seconds"), default=unset, metavar="S|none",
                   help="seconds from data arrival within which a result is wanted (deadline = arrival + ETA)")
    p.add_argument("--order", choices=("fifo", "newest-first", "none"), default=unset,
                   help="order within a priority")
    p.add_argument("--stale", type=_switch, default=unset, metavar="on|off",
                   help="drop jobs whose deadline passed before a pilot took them")
    p.add_argument("--stop-running", type=_switch, default=unset, metavar="on|off",
                   help="also stop running jobs past their deadline")
    p.add_argument("--shed", type=_switch, default=unset, metavar="on|off",
                   help="drop at admission jobs that cannot meet their deadline or would push a "
                        "higher-priority type past its ETA")
    p.add_argument("--alarm-within-eta", type=_or_none(float, "a share (0-1)"), default=unset, metavar="F|none",
                   help="alarm when the share within ETA over 10 minutes falls below this")
    p.add_argument("--comment", help="note stored with the type")
    add_client_arguments(p)
    p.set_defaults(func=lambda args: cmd_types(args, unset), parser=p)


def cmd_types(args: argparse.Namespace, unset: object) -> None:
    client = make_client(args)
    names = split_csv(args.jobtype)
    changes = {key: getattr(args, key) for key in ("limit", "eta", "order", "stale", "stop_running", "shed",
                                                    "alarm_within_eta")
               if getattr(args, key) is not unset}
    if changes.get("order") == "none":
        changes["order"] = None
    if args.comment is not None:
        changes["comment"] = args.comment
    failures = Failures("p3s-job")
    if changes:
        if not names:
            fail("name the job type(s) to change with -T TYPE")
        types = failures.each(names, lambda name: client.set_jobtype(name, **changes))
    else:
        known = {t["name"]: t for t in client.list("jobtypes")["items"]}
        types = [known.get(n) or client.get("jobtypes", n) for n in names] if names else list(known.values())
    if args.json:
        print_json(types)
    elif types:
        rows = [{**t, **{k: ("none" if t.get(k) is None else t[k]) for k in ("limit", "eta", "alarm_within_eta")}}
                for t in types]
        print_table(rows, COLUMNS, HEADERS)
    else:
        print("no job types yet", file=sys.stderr)
    failures.exit_if_any()
