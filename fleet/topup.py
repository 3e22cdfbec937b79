"""``p3s-fleet top-up``: keep a site at its nominal pilot count, starting the missing pilots on the
least loaded hosts."""
from __future__ import annotations

import dataclasses
import heapq
from typing import Any

from p3s.backends.base import Backend, HostResult
from p3s.fleet.fanout import Progress, run_on
from p3s.fleet.server import ServerView
from p3s.fleet.up import NodeOutcome, PilotPlan, up


@dataclasses.dataclass
class TopUp:
    site: str
    nominal: int = 0
    alive: int = 0                   # the server's idle and running pilots of the site
    starting: int = 0                # fleet pilots of the site running but not (yet) registered
    plan: dict[str, int] = dataclasses.field(default_factory=dict)
    unplaced: int = 0                # missing pilots no host could take (--max-per-node)
    listed: dict[str, HostResult] = dataclasses.field(default_factory=dict)
    outcomes: dict[str, NodeOutcome] = dataclasses.field(default_factory=dict)
    server_error: str | None = None

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.listed.items() if r.error] + [n for n, o in self.outcomes.items() if not o.ok]

    def as_json(self, timeout: float) -> dict[str, Any]:
        return {"site": self.site, "nominal": self.nominal, "alive": self.alive, "starting": self.starting,
                "plan": self.plan, "unplaced": self.unplaced, "server_error": self.server_error,
                "list_errors": {n: r.error for n, r in self.listed.items() if r.error},
                "hosts": [o.as_json(timeout) for o in self.outcomes.values()]}


def place(missing: int, load: dict[str, tuple[int, float]], per_node: dict[str, int],
          max_per_node: int | None) -> tuple[dict[str, int], int]:
    """Give ``missing`` pilots, one at a time, to the host with the fewest fleet pilots (then the
    lowest load per CPU), never above ``max_per_node`` pilots of the site; (plan, unplaced)."""
    heap = [(pilots, cpu_load, node) for node, (pilots, cpu_load) in load.items()]
    heapq.heapify(heap)
    plan: dict[str, int] = {}
    while missing and heap:
        pilots, cpu_load, node = heapq.heappop(heap)
        if max_per_node is not None and per_node.get(node, 0) + plan.get(node, 0) >= max_per_node:
            continue
        plan[node] = plan.get(node, 0) + 1
        missing -= 1
        heapq.heappush(heap, (pilots + 1, cpu_load, node))
    return plan, missing


def top_up(backend: Backend, view: ServerView, plan: PilotPlan, nodes: list[str], max_per_node: int | None,
           fanout: int, register_timeout: float, progress: Progress) -> TopUp:
    """One round: count the site's pilots, start the missing ones, wait for them to register."""
    result = TopUp(plan.site)
    site = view.site(plan.site)
    result.nominal = int(site.get("pilots") or 0)
    records = view.site_pilots(plan.site)
    result.alive = len(records)
    result.listed = run_on(nodes, backend.list_pilots, fanout, "counting", progress)
    registered = {(r["host"], r.get("pid")) for r in records}
    usable = {n: r for n, r in result.listed.items() if not r.error}
    result.starting = sum(1 for n, r in usable.items() for p in r.pilots
                          if p.site == plan.site and (n, p.pid) not in registered)
    missing = result.nominal - result.alive - result.starting
    if missing <= 0:
        return result
    load = {n: (len(r.pilots), r.host.get("load", 0.0) / max(1, r.host.get("ncpus", 1))) for n, r in usable.items()}
    per_node = {n: sum(1 for p in r.pilots if p.site == plan.site) for n, r in usable.items()}
    result.plan, result.unplaced = place(missing, load, per_node, max_per_node)
    result.outcomes, result.server_error = up(backend, view, plan, result.plan, fanout, register_timeout, progress)
    return result


def summary(result: TopUp) -> str:
    """One line: the count before, and what was started where."""
    have = f"site {result.site}: nominal {result.nominal}, alive {result.alive}"
    if result.starting:
        have += f", starting {result.starting}"
    if not result.plan:
        short = result.nominal - result.alive - result.starting
        return have + ("; nothing to start" if short <= 0 else f"; {short} missing but no host can take them")
    started = sum(len(o.started) for o in result.outcomes.values())
    registered = sum(len(o.registered) for o in result.outcomes.values())
    where = ", ".join(f"{n} +{c}" for n, c in result.plan.items())
    line = f"{have}; started {started} ({where}), {registered} registered"
    if result.unplaced:
        line += f"; {result.unplaced} could not be placed (--max-per-node)"
    return line
