"""``p3s-fleet top-up --every S``: the fleet as a long-running pilot factory, over any backend.

Each round tops up each site given (``--site``, repeatable; host backends: ``p3s.fleet.topup``,
batch backends: ``p3s.fleet.batch``), prints one line per site, and records what it did as a
server event (kind ``fleet.topup``, source ``p3s-fleet``, the site, and in ``data``: backend,
wanted, submitted, queued, registered, error), which the monitor's site page shows. When a site's
round fails (the backend or the server refuses), the next round comes after a delay that doubles
up to ``MAX_BACKOFF`` times the period (the sites share the backend), and back to the period once
every site's round works.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, Callable

from p3s.backends.batch import BatchError
from p3s.cli.common import print_json
from p3s.fleet.server import ServerView
from p3s.pilot.client import P3SError

PROG = "p3s-fleet"
EVENT_KIND = "fleet.topup"
MAX_BACKOFF = 16          # times the period
MAX_DELAY = 3600.0        # seconds, at most, between two rounds


@dataclasses.dataclass
class Round:
    """What one top-up round did."""

    summary: str
    data: dict[str, Any]
    errors: list[str]
    wanted: int = 0
    submitted: int = 0
    queued: int = 0
    registered: int = 0


def record(view: ServerView, site: str, backend: str, outcome: Round | None, error: str | None) -> None:
    """The round as a server event (a failure to record it is only warned about)."""
    data: dict[str, Any] = {"backend": backend, "error": error}
    if outcome is not None:
        data.update(wanted=outcome.wanted, submitted=outcome.submitted, queued=outcome.queued,
                    registered=outcome.registered)
    message = error or (outcome.summary if outcome else "")
    try:
        view.client.call("POST", "/events", {"kind": EVENT_KIND, "message": message[:1000], "site": site,
                                              "source": PROG, "severity": "error" if error else "info",
                                              "data": data})
    except P3SError as exc:
        print(f"{PROG}: warning: cannot record the round on the server: {exc}", file=sys.stderr)


def next_delay(period: float, current: float, failed: bool) -> float:
    """The wait before the next round: the period after a round that worked, else double the
    last wait (at least the period), at most MAX_BACKOFF periods and MAX_DELAY seconds."""
    if not failed:
        return period
    return min(max(current * 2, period), period * MAX_BACKOFF, MAX_DELAY) if period > 0 else 0.0


def run(args: argparse.Namespace, view: ServerView, backend: str, rounds: dict[str, Callable[[], Round]],
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Run each site's round once (``--every`` not given: exit status 1 if any failed) or every
    ``args.every`` s, backing off while any fails (the sites share the backend)."""
    delay = args.every or 0.0
    while True:
        failed = False
        for site, one_round in rounds.items():
            outcome, error = None, None
            try:
                outcome = one_round()
                if outcome.errors:
                    error = "; ".join(outcome.errors)
            except (P3SError, BatchError) as exc:
                error = str(exc)
            if outcome is not None:
                if args.json:
                    print_json(outcome.data)
                else:
                    print(time.strftime("%H:%M:%SZ ", time.gmtime()) + outcome.summary, flush=True)
            if error:
                print(f"{PROG}: error: site {site}: {error}", file=sys.stderr, flush=True)
            record(view, site, backend, outcome, error)
            failed |= error is not None
        if args.every is None:
            return 1 if failed else 0
        delay = next_delay(args.every, delay, failed)
        if failed:
            print(f"{PROG}: next round in {delay:g} s", file=sys.stderr, flush=True)
        sys.stdout.flush()
        sleep(delay)
