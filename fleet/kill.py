"""``p3s-fleet kill``: ask the server to stop the pilots, then make sure through the backend.

The server is asked to stop every pilot it knows on each host (of the site, if one is given). The
request reaches a pilot in its next reply (at once for a pilot waiting for work, at its next
heartbeat for a busy one): it stops its payload, reports the job killed and itself stopped. The
fleet watches the server's records meanwhile; after ``wait`` seconds, or as soon as they all
said they stopped, one pass over the hosts lets the exiting pilots finish and gives every other
fleet pilot SIGTERM (the pilot does the same on SIGTERM), then SIGKILL after ``grace`` seconds.
Pilots killed with SIGKILL are recorded stopped on the server. Signals only ever reach the
fleet's own pilot processes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from p3s.backends.base import Backend, PilotProcess
from p3s.pilot.client import P3SError
from p3s.fleet.fanout import Progress, run_on
from p3s.fleet.server import ServerView, by_pid


@dataclasses.dataclass
class KillOutcome:
    node: str
    error: str | None = None
    found: list[PilotProcess] = dataclasses.field(default_factory=list)
    records: list[dict] = dataclasses.field(default_factory=list)     # alive on the server before the kill
    requested: list[str] = dataclasses.field(default_factory=list)    # uuids the server was asked to stop
    pending: set[str] = dataclasses.field(default_factory=set)        # asked, not yet stopped on the server
    server_error: str | None = None
    stopped: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.stopped.get("survived")

    @property
    def on_request(self) -> list[int]:
        """Pilots that ended by themselves (asked through the server) before any signal."""
        return self.stopped.get("gone", [])

    @property
    def asked_pids(self) -> dict[str, int]:
        """uuid -> pid of the running fleet pilots the server was asked to stop."""
        running, asked = {p.pid for p in self.found}, set(self.requested)
        return {r["uuid"]: r["pid"] for r in self.records if r["uuid"] in asked and r.get("pid") in running}

    def detail(self) -> str:
        notes = [self.error, self.server_error and f"server: {self.server_error}"]
        if self.stopped.get("survived"):
            notes.append(f"{len(self.stopped['survived'])} survived SIGKILL: {self.stopped['survived']}")
        return "; ".join(n for n in notes if n)

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "ok": self.ok, "error": self.error, "server_error": self.server_error,
                "found": [p.pid for p in self.found], "server_requested": self.requested,
                "on_request": self.on_request, "sigterm": self.stopped.get("term", []),
                "sigkill": self.stopped.get("kill", []), "survived": self.stopped.get("survived", [])}


def _chosen(pilots: list[PilotProcess], records: list[dict], site: str | None) -> list[PilotProcess]:
    if not site:
        return pilots
    of_site = by_pid(records)
    return [p for p in pilots if p.site == site or p.pid in of_site]


def kill(backend: Backend, view: ServerView | None, nodes: list[str], site: str | None, wait: float, grace: float,
         fanout: int, progress: Progress) -> dict[str, KillOutcome]:
    """Stop the pilots on ``nodes`` (only those of ``site`` if given)."""
    def ask(node: str) -> KillOutcome:
        listing = backend.list_pilots(node)
        outcome = KillOutcome(node, listing.error)
        if view is not None:
            try:
                outcome.records = view.alive(node, site)
                outcome.requested = view.kill(host=node, site=site or None)
            except P3SError as exc:
                outcome.server_error = str(exc)
        outcome.found = _chosen(listing.pilots, outcome.records, site)
        outcome.pending = set(outcome.asked_pids)
        return outcome

    outcomes = run_on(nodes, ask, fanout, "asking to stop", progress, on_error=lambda n, e: KillOutcome(n, e))
    if view is not None:
        _wait_for_server(view, outcomes, site, wait, progress)
    escalate = [n for n, o in outcomes.items() if o.found and not o.error]
    if escalate:
        def stop(node: str):
            outcome = outcomes[node]
            exiting = frozenset(pid for uuid, pid in outcome.asked_pids.items() if uuid not in outcome.pending)
            return backend.stop(node, outcome.found, grace, exiting)

        for node, result in run_on(escalate, stop, fanout, "stopping", progress).items():
            outcomes[node].stopped = result.stopped
            outcomes[node].error = result.error
    if view is not None:
        _record_killed(view, outcomes)
    return outcomes


def _wait_for_server(view: ServerView, outcomes: dict[str, KillOutcome], site: str | None, wait: float,
                     progress: Progress) -> None:
    """Until ``wait`` s have passed or the server has every asked pilot stopped."""
    deadline = time.monotonic() + wait
    delay = 0.05
    while time.monotonic() < deadline:
        pending = [o for o in outcomes.values() if o.pending and not o.error]
        if not pending:
            break
        progress.show(f"waiting for {sum(len(o.pending) for o in pending)} pilots to stop", force=True)
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)
        try:
            for outcome in pending:
                outcome.pending &= {r["uuid"] for r in view.alive(outcome.node, site)}
        except P3SError:
            break
    progress.clear()


def _record_killed(view: ServerView, outcomes: dict[str, KillOutcome]) -> None:
    """Pilots killed with SIGKILL cannot report; say on their behalf that they stopped."""
    for outcome in outcomes.values():
        records = by_pid(outcome.records)
        uuids = [records[pid]["uuid"] for pid in outcome.stopped.get("kill", []) if pid in records]
        try:
            view.say_stopped(uuids, "killed with SIGKILL by p3s-fleet")
        except P3SError as exc:
            outcome.server_error = outcome.server_error or f"cannot record SIGKILLed pilots: {exc}"


COLUMNS = ("hosts", "result", "found", "on_request", "sigterm", "sigkill", "detail")
HEADERS = ("HOSTS", "RESULT", "PILOTS", "ON REQUEST", "SIGTERM", "SIGKILL", "DETAIL")


def row(outcome: KillOutcome) -> dict[str, Any]:
    return {"result": "ok" if outcome.ok else "failed", "found": len(outcome.found),
            "on_request": len(outcome.on_request), "sigterm": len(outcome.stopped.get("term", [])),
            "sigkill": len(outcome.stopped.get("kill", [])), "detail": outcome.detail()}
