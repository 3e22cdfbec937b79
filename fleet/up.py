"""``p3s-fleet up``: start pilots on hosts, then wait for them to register with the server."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from typing import Any

from p3s.backends.base import Backend, HostResult, Launch, PilotProcess
from p3s.pilot.client import P3SError
from p3s.fleet.fanout import Progress, run_on
from p3s.fleet.server import ServerView

# Set by the fleet for every pilot; given after ``--`` they would break matching or leak the token.
RESERVED = {
    "host": ("-H/--host", "it is always the node's name"),
    "server": ("-S/--server", "use p3s-fleet --pilot-server (default: --server)"),
    "token": ("--token", "use p3s-fleet --pilot-token-file (the token reaches the pilot on stdin, never on a command line)"),
    "site": ("-s/--site", "use p3s-fleet --site"),
    "logdir": ("--logdir", "use p3s-fleet --logdir"),
    "joblogdir": ("--joblogdir", "use p3s-fleet --joblogdir"),
    "workdir": ("--workdir", "use p3s-fleet --workdir"),
}
CLOCK_SKEW = 60.0


@dataclasses.dataclass
class PilotPlan:
    """What every pilot of one ``up`` gets."""

    server: str
    token: str | None
    site: str = ""
    logdir: str = "/tmp/p3s/pilots"          # {node} is replaced by the node's name
    joblogdir: str = "/tmp/p3s/jobs"
    workdir: str = "/tmp/p3s/work"
    extra: list[str] = dataclasses.field(default_factory=list)

    def launch(self, node: str) -> Launch:
        def place(template: str) -> str:
            return template.replace("{node}", node)

        args = ["-S", self.server, "-H", node, "--logdir", place(self.logdir), "--joblogdir", place(self.joblogdir),
                "--workdir", place(self.workdir)]
        if self.site:
            args += ["-s", self.site]
        return Launch(args + self.extra, place(self.logdir), self.token)


class PilotOptionsError(ValueError):
    """Pilot options (after ``--``) that the pilot would refuse, or that the fleet sets itself."""


def check_pilot_options(pilot_args: list[str]) -> None:
    """Parse ``pilot_args`` with the pilot's own parser, so a mistake is caught before any host is
    touched; the options the fleet sets itself are refused."""
    from p3s.pilot.cli import run_parser

    parser = run_parser()
    unset = object()
    parser.set_defaults(**{dest: unset for dest in RESERVED})

    def error(message: str) -> None:
        raise PilotOptionsError(f"pilot options: {message}")

    parser.error = error  # type: ignore[method-assign]
    args = parser.parse_args(pilot_args)
    for dest, (flag, hint) in RESERVED.items():
        if getattr(args, dest) is not unset:
            raise PilotOptionsError(f"pilot options: {flag} is set by p3s-fleet: {hint}")


@dataclasses.dataclass
class NodeOutcome:
    node: str
    error: str | None = None
    started: list[PilotProcess] = dataclasses.field(default_factory=list)
    exited: list[dict] = dataclasses.field(default_factory=list)      # before registering
    registered: set[int] = dataclasses.field(default_factory=set)
    waiting: int = 0                                                  # alive, not registered
    late: list[int] = dataclasses.field(default_factory=list)         # exited after starting, unregistered
    stderr_dir: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.exited and not self.late and self.waiting == 0

    def detail(self, timeout: float) -> str:
        if self.error:
            return self.error
        parts = []
        if self.exited:
            reason = next((line for e in self.exited for line in reversed(e.get("stderr", "").splitlines())
                           if line.strip()), "")
            parts.append(f"{len(self.exited)} exited at once (exit status {self.exited[0].get('code')})"
                         + (f": {reason.strip()}" if reason else ""))
        if self.late:
            parts.append(f"{len(self.late)} exited before registering")
        if self.waiting:
            parts.append(f"{self.waiting} not registered within {timeout:g} s")
        if self.late or self.waiting:
            parts.append(f"see {self.stderr_dir}/<pid>.stderr")
        return "; ".join(parts)

    def as_json(self, timeout: float) -> dict[str, Any]:
        return {"node": self.node, "ok": self.ok, "error": self.detail(timeout) or None,
                "started": [p.pid for p in self.started], "registered": sorted(self.registered),
                "exited": self.exited, "exited_late": self.late, "not_registered": self.waiting}


def _epoch(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return _dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def start(backend: Backend, plan: PilotPlan, counts: dict[str, int], fanout: int,
          progress: Progress) -> dict[str, NodeOutcome]:
    """Start ``counts[node]`` pilots on each node, in parallel."""
    results: dict[str, HostResult] = run_on(
        [n for n, c in counts.items() if c > 0], lambda node: backend.start(node, counts[node], plan.launch(node)),
        fanout, "starting", progress)
    return {node: NodeOutcome(node, r.error, r.pilots, r.exited, stderr_dir=plan.launch(node).stderr_dir)
            for node, r in results.items()}


def wait_registered(view: ServerView, outcomes: dict[str, NodeOutcome], timeout: float,
                    progress: Progress) -> str | None:
    """Poll the server until every started pilot registered or ``timeout`` s passed; an error
    message if the server could not be asked."""
    missing = {node: {p.pid: p.started for p in o.started} for node, o in outcomes.items() if o.started}
    total = sum(len(m) for m in missing.values())
    deadline = time.monotonic() + timeout
    while True:
        try:
            for node, pids in missing.items():
                if not pids:
                    continue
                for record in view.newest(node, len(pids) + 20):
                    started = pids.get(record.get("pid"))
                    if started is not None and _epoch(record.get("ts_reg")) >= started - CLOCK_SKEW:
                        outcomes[node].registered.add(record["pid"])
                        del pids[record["pid"]]
        except P3SError as exc:
            progress.clear()
            return f"cannot check registrations: {exc}"
        left = sum(len(m) for m in missing.values())
        progress.show(f"registered: {total - left}/{total} pilots")
        if not left or time.monotonic() >= deadline:
            progress.clear()
            return None
        time.sleep(0.25)


def classify_missing(backend: Backend, outcomes: dict[str, NodeOutcome], fanout: int, progress: Progress) -> None:
    """For pilots that did not register: still running, or exited?"""
    late = [n for n, o in outcomes.items() if len(o.registered) < len(o.started)]
    listed = run_on(late, backend.list_pilots, fanout, "checking", progress)
    for node, result in listed.items():
        outcome = outcomes[node]
        unregistered = {p.pid for p in outcome.started} - outcome.registered
        if result.error:
            outcome.waiting = len(unregistered)
            continue
        alive = {p.pid for p in result.pilots}
        outcome.waiting = len(unregistered & alive)
        outcome.late = sorted(unregistered - alive)


def up(backend: Backend, view: ServerView, plan: PilotPlan, counts: dict[str, int], fanout: int,
       register_timeout: float, progress: Progress) -> tuple[dict[str, NodeOutcome], str | None]:
    """Start the pilots, then (unless ``register_timeout`` is 0) wait for their registrations."""
    outcomes = start(backend, plan, counts, fanout, progress)
    server_error = None
    if register_timeout > 0:
        server_error = wait_registered(view, outcomes, register_timeout, progress)
        if server_error is None:
            classify_missing(backend, outcomes, fanout, progress)
    return outcomes, server_error


def idle_note(pilot_args: list[str], site: dict | None) -> str | None:
    """A warning when the pilots will stop by themselves after idling (their cycles are not 0)."""
    from p3s.pilot.cli import run_parser

    args = run_parser().parse_args(pilot_args)
    cycles = args.cycles if args.cycles is not None else (site or {}).get("cycles", 3)
    period = args.period if args.period is not None else (site or {}).get("period", 10)
    if not cycles:
        return None
    return (f"note: these pilots stop by themselves after {cycles} request(s) in a row with no work "
            f"(about {cycles * period:g} s idle); pass '-- -c 0' for pilots that stay")
