"""``p3s-fleet up/report/kill/top-up`` over a batch system (``BatchBackend``: slurm, sge, …).

The batch system's view (a job per pilot: queued, running, ending, and why it waits) is joined with
the server's (the pilot registered, idle, running, lost) through the pilot's batch id, which every
pilot reports as ``extra = "<system>:<id>"``. Kill asks the server to stop the pilots first, so
their payloads are reported killed, cancels queued jobs at once and running ones that did not stop.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import time
from typing import Any, Callable

from p3s.backends.batch import BatchBackend, BatchError, BatchJob, PilotJobPlan
from p3s.fleet.server import ServerView
from p3s.pilot.client import P3SError

QUEUED = ("pending", "configuring", "held", "suspended", "requeued")
ACTIVE = QUEUED + ("running",)
ALIVE = ("idle", "running")
LINGER = 5.0              # seconds a pilot that stopped on request has to end its batch job


# --- the server's side ------------------------------------------------------------------------
def records_by_batch_id(backend: BatchBackend, view: ServerView, ids: set[str], recent: int = 0) -> dict[str, dict]:
    """batch id -> the newest server record of the pilot that carries it, among the alive records
    and the ``recent`` last registered (any state)."""
    wanted = {backend.batch_extra(i): i for i in ids}
    found: dict[str, dict] = {}
    records = list(view.client.list_all("pilots", state=",".join(ALIVE)))
    if recent:
        records += view.client.list("pilots", sort="-ts_reg", limit=max(1, min(recent, 1000)))["items"]
    for record in records:
        batch_id = wanted.get(record.get("extra") or "")
        if batch_id is not None and (batch_id not in found or (record.get("ts_reg") or "") >
                                     (found[batch_id].get("ts_reg") or "")):
            found[batch_id] = record
    return found


# --- up ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Submission:
    node: str | None
    count: int
    ids: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    registered: set[str] = dataclasses.field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "count": self.count, "ids": self.ids, "error": self.error,
                "registered": len(self.registered)}


def submit(backend: BatchBackend, plan: PilotJobPlan, counts: dict[str | None, int],
           fanout: int) -> list[Submission]:
    """Submit ``counts[node]`` pilots per node (None: anywhere), ``fanout`` submissions at once."""
    todo = [Submission(node, count) for node, count in counts.items() if count > 0]

    def one(sub: Submission) -> None:
        try:
            sub.ids = backend.launch(plan, sub.count, sub.node)
        except BatchError as exc:
            sub.error = str(exc)

    with concurrent.futures.ThreadPoolExecutor(max(1, min(fanout, len(todo) or 1))) as pool:
        list(pool.map(one, todo))
    return todo


def wait_registered(backend: BatchBackend, view: ServerView, subs: list[Submission], timeout: float,
                    show: Callable[[str], None] = lambda _: None) -> str | None:
    """Poll the server until every submitted pilot registered, or ``timeout`` s; an error message
    if the server could not be asked."""
    ids = {i for s in subs for i in s.ids}
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = records_by_batch_id(backend, view, ids, recent=len(ids) + 50)
        except P3SError as exc:
            return f"cannot check registrations: {exc}"
        for sub in subs:
            sub.registered = {i for i in sub.ids if i in records}
        done = sum(len(s.registered) for s in subs)
        show(f"registered: {done}/{len(ids)} pilots")
        if done == len(ids) or time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


# --- report -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Report:
    jobs: list[BatchJob]
    records: dict[str, dict]                  # batch id -> server record
    server_error: str | None = None

    def job_rows(self) -> list[dict[str, Any]]:
        rows = []
        for job in sorted(self.jobs, key=_job_key):
            record = self.records.get(job.id, {})
            rows.append({"id": job.id, "state": job.state, "reason": job.reason or None, "node": job.node or None,
                         "site": job.site or None, "pilot": record.get("uuid"), "server": record.get("state"),
                         "job": record.get("job")})
        return rows

    def node_rows(self) -> list[dict[str, Any]]:
        nodes: dict[str, dict[str, Any]] = collections.defaultdict(lambda: {
            "pending": 0, "running": 0, "completing": 0, "other": 0, "registered": 0, "idle": 0, "busy": 0,
            "lost": 0, "stopped": 0, "reasons": collections.Counter()})
        for job in self.jobs:
            row = nodes[job.node or "(queued)"]
            key = job.state if job.state in ("pending", "running", "completing") else "other"
            row[key] += 1
            if job.reason:
                row["reasons"][job.reason] += 1
            record = self.records.get(job.id)
            if record is not None:
                state = record.get("state")
                row["registered"] += state in ALIVE
                row["idle"] += state == "idle"
                row["busy"] += state == "running"
                row["lost"] += state == "lost"
                row["stopped"] += state == "stopped"
        table = []
        for node in sorted(nodes, key=lambda n: (n == "(queued)", n)):
            row = nodes[node]
            reasons = ", ".join(f"{r} ({c})" if c > 1 else r for r, c in row.pop("reasons").most_common())
            table.append({"node": node, **row, "reasons": reasons or None})
        if len(table) > 1:
            total: dict[str, Any] = {"node": "total"}
            for key in ("pending", "running", "completing", "other", "registered", "idle", "busy", "lost", "stopped"):
                total[key] = sum(r[key] for r in table)
            table.append(total)
        return table

    def as_json(self) -> dict[str, Any]:
        return {"nodes": self.node_rows(), "jobs": self.job_rows(), "server_error": self.server_error}


NODE_COLUMNS = ("node", "pending", "running", "completing", "other", "registered", "idle", "busy", "lost", "reasons")
NODE_HEADERS = ("NODE", "QUEUED", "RUNNING", "ENDING", "OTHER", "REGISTERED", "IDLE", "BUSY", "LOST", "REASONS")
JOB_COLUMNS = ("id", "state", "reason", "node", "site", "pilot", "server", "job")
JOB_HEADERS = ("BATCH ID", "STATE", "REASON", "NODE", "SITE", "PILOT", "SERVER", "JOB")


def _job_key(job: BatchJob) -> tuple:
    head, _, tail = job.id.replace(".", "_").partition("_")
    return (int(head) if head.isdigit() else 0, int(tail) if tail.isdigit() else 0, job.id)


def report(backend: BatchBackend, view: ServerView | None, nodes: list[str] | None, site: str | None) -> Report:
    """The fleet's jobs (on ``nodes``, of ``site``, if given) joined with the server's records."""
    jobs = [j for j in backend.jobs() if _chosen(j, nodes, site)]
    result = Report(jobs, {})
    if view is not None:
        try:
            result.records = records_by_batch_id(backend, view, {j.id for j in jobs}, recent=len(jobs) + 50)
        except P3SError as exc:
            result.server_error = str(exc)
    return result


def _chosen(job: BatchJob, nodes: list[str] | None, site: str | None) -> bool:
    return (not nodes or job.node in nodes) and (not site or job.site == site)


# --- kill -------------------------------------------------------------------------------------
@dataclasses.dataclass
class KillResult:
    found: int = 0                                 # the fleet's jobs chosen
    cancelled_queued: list[str] = dataclasses.field(default_factory=list)
    asked: list[str] = dataclasses.field(default_factory=list)          # pilot uuids the server was asked to stop
    stopped_on_request: int = 0
    cancelled_running: list[str] = dataclasses.field(default_factory=list)
    left: list[str] = dataclasses.field(default_factory=list)           # still in the batch system at the end
    server_error: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.left

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


def kill(backend: BatchBackend, view: ServerView | None, nodes: list[str] | None, site: str | None, wait: float,
         drain: float, show: Callable[[str], None] = lambda _: None) -> KillResult:
    """Stop the fleet's pilots (on ``nodes``, of ``site``): queued jobs are cancelled at once, the
    server asks the running pilots to stop (payloads reported killed) for up to ``wait`` s, the
    jobs still there are cancelled; then up to ``drain`` s for the batch system to let them go."""
    result = KillResult()
    jobs = [j for j in backend.jobs() if _chosen(j, nodes, site)]
    result.found = len(jobs)
    queued = [j.id for j in jobs if j.state in QUEUED and not j.node]
    if queued:
        backend.cancel(queued)
        result.cancelled_queued = queued
    running = {j.id for j in jobs if j.id not in set(queued) and j.state in ACTIVE + ("completing",)}
    records: dict[str, dict] = {}
    pending: set[str] = set()
    if view is not None and running:
        try:
            records = {i: r for i, r in records_by_batch_id(backend, view, running).items() if r["state"] in ALIVE}
            for record in records.values():
                result.asked += view.kill(uuid=record["uuid"])
            deadline = time.monotonic() + wait
            pending = set(result.asked)
            while pending and time.monotonic() < deadline:
                show(f"waiting for {len(pending)} pilots to stop")
                time.sleep(0.25)
                pending &= {r["uuid"] for r in view.client.list_all("pilots", state=",".join(ALIVE))}
            result.stopped_on_request = len(result.asked) - len(pending)
        except P3SError as exc:
            result.server_error = str(exc)
    remaining = {j.id for j in backend.jobs() if j.state in ACTIVE + ("completing",)} & running
    asked = set(result.asked)
    # pilots that said they stopped are exiting, their jobs ending: they get LINGER s before scancel
    exiting = {i for i in remaining if i in records and records[i]["uuid"] in asked - pending}
    result.cancelled_running = sorted(remaining - exiting, key=lambda i: _job_key(BatchJob(i, "")))
    if result.cancelled_running:
        backend.cancel(result.cancelled_running)
    chosen = {j.id for j in jobs}
    started = time.monotonic()
    while True:
        left = sorted({j.id for j in backend.jobs() if j.state in ACTIVE + ("completing",)} & chosen)
        if not left or time.monotonic() >= started + drain:
            break
        late = sorted(set(left) & exiting)
        if late and time.monotonic() >= started + LINGER:
            backend.cancel(late)
            result.cancelled_running += late
            exiting -= set(late)
        show(f"waiting for {len(left)} batch jobs to end")
        time.sleep(0.25)
    result.left = left
    if view is not None and result.cancelled_running:
        try:
            still = records_by_batch_id(backend, view, set(result.cancelled_running))
            view.say_stopped([r["uuid"] for r in still.values() if r["state"] in ALIVE],
                             f"its {backend.system} job was cancelled by p3s-fleet")
        except P3SError as exc:
            result.server_error = result.server_error or str(exc)
    return result


# --- top-up -----------------------------------------------------------------------------------
@dataclasses.dataclass
class BatchTopUp:
    site: str
    nominal: int = 0
    alive: int = 0                     # the server's idle and running pilots of the site
    queued: int = 0                    # the site's jobs in the batch system not (yet) registered
    submitted: list[Submission] = dataclasses.field(default_factory=list)

    @property
    def missing(self) -> int:
        return max(0, self.nominal - self.alive - self.queued)

    @property
    def failed(self) -> list[str]:
        return [s.error for s in self.submitted if s.error]

    def as_json(self) -> dict[str, Any]:
        return {"site": self.site, "nominal": self.nominal, "alive": self.alive, "queued": self.queued,
                "submitted": [s.as_json() for s in self.submitted], "errors": self.failed}

    def summary(self) -> str:
        line = f"site {self.site}: nominal {self.nominal}, alive {self.alive}, queued {self.queued}"
        if not self.submitted:
            return line + "; nothing to submit"
        count = sum(len(s.ids) for s in self.submitted)
        where = ", ".join(f"{s.node or 'anywhere'} +{s.count}" for s in self.submitted)
        return line + f"; submitted {count} ({where})" + (f"; {len(self.failed)} failed" if self.failed else "")


def top_up(backend: BatchBackend, view: ServerView, plan: PilotJobPlan, nodes: list[str] | None,
           fanout: int) -> BatchTopUp:
    """One round: count the site's pilots (server) and queued jobs (batch system), submit the rest."""
    result = BatchTopUp(plan.site)
    result.nominal = int(view.site(plan.site).get("pilots") or 0)
    records = view.site_pilots(plan.site)
    result.alive = len(records)
    registered = {r.get("extra") for r in records}
    result.queued = sum(1 for j in backend.jobs() if j.site == plan.site and j.state in ACTIVE
                        and backend.batch_extra(j.id) not in registered)
    missing = result.missing
    if missing <= 0:
        return result
    if nodes:
        counts: dict[str | None, int] = {n: missing // len(nodes) + (i < missing % len(nodes))
                                         for i, n in enumerate(nodes)}
    else:
        counts = {None: missing}
    result.submitted = submit(backend, plan, counts, fanout)
    return result
