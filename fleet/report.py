"""``p3s-fleet report``: per host, the pilots running there against what the server counts."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from p3s.backends.base import Backend, PilotProcess
from p3s.pilot.client import P3SError
from p3s.fleet.fanout import Progress, run_on
from p3s.fleet.server import ServerView, by_pid


@dataclasses.dataclass
class HostReport:
    node: str
    error: str | None = None                  # the host could not be listed
    server_error: str | None = None           # the server could not be asked
    pilots: list[PilotProcess] = dataclasses.field(default_factory=list)
    host: dict[str, Any] = dataclasses.field(default_factory=dict)
    records: list[dict] = dataclasses.field(default_factory=list)     # alive according to the server
    lost: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.server_error is None

    @property
    def counts(self) -> dict[str, int | None]:
        if self.server_error:
            return {"idle": None, "running": None, "lost": None}
        states = [r["state"] for r in self.records]
        return {"idle": states.count("idle"), "running": states.count("running"), "lost": self.lost}

    @property
    def unknown(self) -> list[PilotProcess]:
        """Running pilots the server does not count alive (not registered, or declared lost)."""
        if self.server_error:
            return []
        alive = by_pid(self.records)
        return [p for p in self.pilots if p.pid not in alive]

    @property
    def gone(self) -> list[dict]:
        """Pilots the server thinks alive that have no fleet process on the host."""
        if self.error or self.server_error:
            return []
        running = {p.pid for p in self.pilots}
        return [r for r in self.records if r.get("pid") not in running]

    @property
    def jobs(self) -> set[str]:
        return {p.job for p in self.pilots if p.job} | {r["job"] for r in self.records if r.get("job")}

    def as_json(self) -> dict[str, Any]:
        states = {r["pid"]: r for r in self.records if r.get("pid") is not None}
        return {"node": self.node, "ok": self.ok, "error": self.error, "server_error": self.server_error,
                "pilots": [{**dataclasses.asdict(p), "state": states.get(p.pid, {}).get("state"),
                            "uuid": p.uuid or states.get(p.pid, {}).get("uuid")} for p in self.pilots],
                "server": self.counts, "jobs": sorted(self.jobs),
                "cpu": round(sum(p.cpu for p in self.pilots), 2), "rss": sum(p.rss for p in self.pilots),
                "host": self.host, "unknown": [p.pid for p in self.unknown],
                "gone": [{"uuid": r["uuid"], "pid": r.get("pid"), "state": r["state"]} for r in self.gone]}


def report(backend: Backend, view: ServerView | None, nodes: list[str], site: str | None, fanout: int,
           progress: Progress) -> dict[str, HostReport]:
    """List every node and ask the server about it, ``fanout`` nodes at a time."""
    def one(node: str) -> HostReport:
        listing = backend.list_pilots(node)
        result = HostReport(node, listing.error, host=listing.host,
                            pilots=[p for p in listing.pilots if not site or p.site == site])
        if view is None:
            result.server_error = "no server"
            return result
        try:
            result.records = view.alive(node, site)
            result.lost = view.count(node, "lost", site)
        except P3SError as exc:
            result.server_error = str(exc)
        return result

    return run_on(nodes, one, fanout, "report", progress, on_error=lambda n, e: HostReport(n, e))


def _mb(value: int) -> str:
    return f"{value / 2**20:.0f}M"


def rows(reports: dict[str, HostReport]) -> list[dict[str, Any]]:
    """One table row per host, and a total row."""
    table = []
    for r in reports.values():
        notes = [n for n in (r.error, r.server_error and f"server: {r.server_error}") if n]
        host = r.host or {}
        table.append({"host": r.node, "pilots": None if r.error else len(r.pilots), **r.counts,
                      "jobs": len(r.jobs), "cpu": None if r.error else f"{sum(p.cpu for p in r.pilots):.1f}",
                      "rss": None if r.error else _mb(sum(p.rss for p in r.pilots)),
                      "load": f"{host['load']:.2f}/{host['ncpus']}" if "load" in host else None,
                      "mem": f"{host['mem_used']:.0f}%" if host.get("mem_used") is not None else None,
                      "unknown": len(r.unknown) or None, "gone": len(r.gone) or None, "note": "; ".join(notes)})
    if len(table) > 1:
        total: dict[str, Any] = {"host": "total"}
        for key in ("pilots", "idle", "running", "lost", "jobs", "unknown", "gone"):
            total[key] = sum(row[key] or 0 for row in table)
        total["cpu"] = f"{sum(p.cpu for r in reports.values() for p in r.pilots):.1f}"
        total["rss"] = _mb(sum(p.rss for r in reports.values() for p in r.pilots))
        table.append(total)
    return table


COLUMNS = ("host", "pilots", "idle", "running", "lost", "jobs", "cpu", "rss", "load", "mem", "unknown", "gone", "note")
HEADERS = ("HOST", "PILOTS", "IDLE", "RUNNING", "LOST", "JOBS", "CPU(s)", "RSS", "LOAD", "MEM", "UNKNOWN", "GONE",
           "NOTE")
PILOT_COLUMNS = ("node", "pid", "uuid", "state", "site", "job", "cpu", "rss", "started")
PILOT_HEADERS = ("HOST", "PID", "UUID", "SERVER", "SITE", "JOB", "CPU(s)", "RSS", "STARTED")


def pilot_rows(reports: dict[str, HostReport]) -> list[dict[str, Any]]:
    """One row per pilot process, with the server's state for it (``-`` when it has none)."""
    table = []
    for r in reports.values():
        records = by_pid(r.records)
        for p in r.pilots:
            record = records.get(p.pid, {})
            table.append({"node": p.node, "pid": p.pid, "uuid": p.uuid or record.get("uuid"),
                          "state": record.get("state"), "site": p.site or None, "job": p.job or record.get("job"),
                          "cpu": f"{p.cpu:.1f}", "rss": _mb(p.rss),
                          "started": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(p.started))})
        for g in r.gone:
            table.append({"node": r.node, "pid": g.get("pid"), "uuid": g["uuid"], "state": f"{g['state']} (gone)",
                          "site": g.get("site") or None, "job": g.get("job")})
    return table
