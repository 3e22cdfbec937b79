"""Freshness: data arrival, per-jobtype ETAs and deadlines, and the policies that keep critical
streams within their ETA — newest-first order, dropping stale work, shedding load at admission —
with the turnaround figures that show whether they do.

A job's **deadline** is its data's arrival plus its type's ETA (``stamp``). Per job type (the
job type's record, else the configuration's ``jobtype_defaults``; all off by default):

- ``order: newest-first`` — the broker's ready heap of the type is ordered newest first;
- ``stale`` — a job past its deadline before a pilot takes it ends ``stale`` (at the claim, and by
  a sweep every reaper period); with ``stop_running`` a running one is stopped too;
- ``shed`` — a new job that the predicted queue wait says cannot meet its deadline, or whose
  admission would push a higher-priority type with an ETA past it, is created ``stale`` with
  ``dropped: shed``, and recorded as an event.

The prediction uses only what the server measures: recent run times per type, the live pilots
that may take the type, the ready jobs ahead of a new one, the jobs running, and the rate at which
higher-priority work arrives (the pilot time it takes away). Everything here is memory kept from
the lifecycle's changes; the database is read once at start.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import heapq
import logging
import math
import time
from typing import Any, Callable, Iterable

from p3s import events, models, states
from p3s.figures import epoch, percentile
from p3s.lifecycle import Listener, Lifecycle
from p3s.models import utcnow

log = logging.getLogger("p3s.freshness")

POLICY_FIELDS = ("eta", "order", "stale", "stop_running", "shed", "alarm_within_eta")
WINDOWS = {"10m": 600, "1h": 3600, "24h": 86400}
DROP_REASONS = ("stale", "shed")
SAMPLES_PER_MINUTE = 300           # turnaround samples kept per type and minute
RUNTIME_SAMPLES = 50               # recent run times per type the prediction averages
ARRIVAL_WINDOW = 60.0              # seconds over which arrival rates are measured
# Turnaround histogram buckets (seconds) for /metrics, +Inf added.
BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400)
# Share of a higher-priority type's ETA that admitting lower-priority work may use up.
PROTECT_MARGIN = 0.8


@dataclasses.dataclass(frozen=True)
class Policy:
    """A job type's freshness settings in force."""

    eta: int | None = None
    order: str = "fifo"
    stale: bool = False
    stop_running: bool = False
    shed: bool = False
    alarm_within_eta: float | None = None

    @property
    def newest_first(self) -> bool:
        return self.order == "newest-first"


def stamped(doc: dict, type_eta: int | None) -> dict:
    """``doc`` given its arrival (default: its definition), ETA (default: ``type_eta``, its type's)
    and deadline. Pure: a bulk creation stamps its jobs off the event loop (p3s.jobs)."""
    doc["arrived"] = doc.get("arrived") or doc.get("ts_def") or utcnow()
    eta = doc.get("eta") or type_eta
    doc["eta"] = eta
    doc["deadline"] = doc["arrived"] + _dt.timedelta(seconds=eta) if eta else None
    doc.setdefault("dropped", None)
    doc.setdefault("output_dir", None)
    return doc


class Freshness(Listener):
    """Policies per job type, the admission and staleness decisions, and the turnaround figures."""

    def __init__(self, lifecycle: Lifecycle, config: Any, pilots: Callable[[], Iterable[Any]]) -> None:
        self.lifecycle, self.config = lifecycle, config
        self.live_pilots = pilots            # () -> the registry's live PilotInfo objects
        self.stored: dict[str, dict] = {}    # jobtype records, by name
        self.broker: Any = None
        self.kill_job: Callable[[dict], None] | None = None
        self.runtimes: dict[str, collections.deque] = {}
        self.priority: dict[str, int] = {}                     # last priority seen per type
        self.site_of: dict[str, str] = {}                      # last site restriction seen per type
        # (type, priority, site) -> defined jobs
        self.ready: collections.Counter[tuple[str, int, str]] = collections.Counter()
        self._ready_of: dict[str, tuple[str, int, str]] = {}
        self.arrivals: dict[str, collections.deque] = {}       # creation times of recent jobs per type
        self.samples: dict[int, dict[str, list[float]]] = {}   # minute -> type -> turnarounds (s)
        self.counts: dict[int, collections.Counter] = {}       # minute -> (type, done|within|eta|stale|shed)
        self.wf_samples: dict[int, dict[str, list[float]]] = {}
        self.injector: dict[int, collections.Counter] = {}     # minute -> skip reason -> files
        self.histogram: dict[str, list[int]] = {}              # type -> cumulative-ready bucket counts
        self.hist_sum: collections.Counter[str] = collections.Counter()
        self._deadlines: list[tuple[float, str, str]] = []      # (deadline, job, jobtype)
        self._cached: tuple[float, dict] | None = None
        self._dirty = True                   # figures changed since the cached report
        self._capacity_memo: dict[tuple[str, str], tuple[int, int]] | None = None
        self.shared: Any = None              # p3s.freshshare.SharedFigures on a shared MongoDB
        lifecycle.listeners.append(self)
        events.subscribers.append(self.event_recorded)

    def share(self, collection: Any) -> None:
        """Merge the figures with the other servers' through ``collection`` (a shared MongoDB)."""
        from p3s.freshshare import SharedFigures
        self.shared = SharedFigures(self, collection, SAMPLES_PER_MINUTE)

    def sync_shared(self) -> None:
        """The periodic exchange of figures with the other servers (p3s.freshshare)."""
        if self.shared is not None:
            try:
                self.shared.sync()
            except Exception:
                log.exception("exchanging the freshness figures with the other servers failed")

    def close(self) -> None:
        if self.event_recorded in events.subscribers:
            events.subscribers.remove(self.event_recorded)

    # --- policies -----------------------------------------------------------------------------
    def load(self) -> None:
        """Read the job types' settings, the ready jobs, the watched deadlines and 24 h of figures."""
        self.stored = {d["_id"]: d for d in models.JobType._get_collection().find()}
        jobs = models.Job._get_collection()
        self.ready.clear()
        self._ready_of.clear()
        self._deadlines = []
        for doc in jobs.find({"state": {"$in": [states.DEFINED, *states.JOB_ACTIVE]}},
                             {"state": 1, "jobtype": 1, "priority": 1, "deadline": 1, "site": 1}):
            if doc["state"] == states.DEFINED:
                self._ready_in(doc)
            self.priority.setdefault(doc.get("jobtype", ""), doc.get("priority", 0))
            self._watch(doc)
        since = utcnow() - _dt.timedelta(days=1)
        fields = {"jobtype": 1, "state": 1, "arrived": 1, "deadline": 1, "eta": 1, "ts_sta": 1, "ts_sto": 1,
                  "dropped": 1, "noop": 1}
        for doc in jobs.find({"state": {"$in": [states.FINISHED, states.STALE]}, "ts_sto": {"$gte": since}},
                             {**fields, "priority": 1}):
            if not doc.get("noop"):
                self._ended(doc, epoch(doc["ts_sto"]))
                self.priority.setdefault(doc.get("jobtype", ""), doc.get("priority", 0))
        for doc in models.Workflow._get_collection().find(
                {"state": states.WF_FINISHED, "ts_sto": {"$gte": since}}, {"template": 1, "arrived": 1, "ts_sto": 1}):
            self._workflow_ended(doc)

    def reload_policies(self) -> None:
        """Re-read the job types' settings (another server on the same database may change them)."""
        for doc in models.JobType._get_collection().find():
            if doc != self.stored.get(doc["_id"]):
                self.set_stored(doc["_id"], doc)

    def policy(self, jobtype: str) -> Policy:
        """The settings in force: the type's record, over its configured defaults, over '*'."""
        defaults = self.config.jobtype_defaults or {}
        merged: dict[str, Any] = {}
        for layer in (defaults.get("*") or {}, defaults.get(jobtype) or {}, self.stored.get(jobtype) or {}):
            merged.update({k: layer[k] for k in POLICY_FIELDS if layer.get(k) is not None})
        return Policy(**merged)

    def set_stored(self, name: str, doc: dict | None) -> None:
        """A job type's record changed (or was removed): reorder its ready heap if needed."""
        before = self.policy(name).newest_first
        if doc is None:
            self.stored.pop(name, None)
        else:
            self.stored[name] = doc
        self._dirty = True
        if self.broker is not None and self.policy(name).newest_first != before:
            self.broker.queue.reorder(name, not before)

    def describe(self, name: str) -> dict[str, Any]:
        """The policy fields in force for a job type (its own settings over the configured defaults)."""
        return dataclasses.asdict(self.policy(name))

    def newest_first_types(self) -> set[str]:
        names = set(self.stored) | set((self.config.jobtype_defaults or {}))
        if self.policy("*").newest_first:
            names |= set(self.priority)
        return {n for n in names if self.policy(n).newest_first}

    def is_newest_first(self, jobtype: str) -> bool:
        return self.policy(jobtype).newest_first

    # --- arrival and deadline -----------------------------------------------------------------
    def stamp(self, doc: dict) -> dict:
        """Give a new job its arrival (default: its definition), ETA and deadline."""
        return stamped(doc, self.policy(doc.get("jobtype", "")).eta)

    # --- measured figures for the prediction ----------------------------------------------------
    def runtime(self, jobtype: str) -> float | None:
        """Mean of the recent run times of the type (None: none measured yet)."""
        recent = self.runtimes.get(jobtype)
        return sum(recent) / len(recent) if recent else None

    def arrival_rate(self, jobtype: str, now: float | None = None) -> float:
        """Jobs of the type defined per second over the last minute."""
        now = now or time.time()
        recent = self.arrivals.get(jobtype)
        if not recent:
            return 0.0
        while recent and recent[0] < now - ARRIVAL_WINDOW:
            recent.popleft()
        return len(recent) / ARRIVAL_WINDOW

    def capacity(self, jobtype: str, site: str = "") -> tuple[int, int]:
        """Live pilots that may take the type (of ``site``, for a job restricted to it), and how many
        of them are idle (counted once per admission batch)."""
        memo = self._capacity_memo
        if memo is not None and (jobtype, site) in memo:
            return memo[(jobtype, site)]
        total = idle = 0
        for pilot in self.live_pilots():
            if (not pilot.jobtypes or jobtype in pilot.jobtypes) and (not site or pilot.site == site):
                total += 1
                idle += pilot.job is None and pilot.state == states.IDLE
        if memo is not None:
            memo[(jobtype, site)] = (total, idle)
        return total, idle

    def predicted_wait(self, jobtype: str, priority: int, now: float | None = None,
                       site: str | None = None) -> float | None:
        """Seconds a job of ``jobtype`` and ``priority`` (restricted to ``site``; None: as the type's
        jobs last were) defined now would wait for a pilot.

        Only the pilots that may take it count, and only the work that competes for them (jobs of
        another site do not; work spread over every pilot counts by these pilots' share of them).
        None when nothing is measured yet (no pilot, or no run time of the types involved).
        ``math.inf`` when higher-priority work arriving takes all the pilots' time.
        """
        site = self.site_of.get(jobtype, "") if site is None else site
        pilots, idle = self.capacity(jobtype, site)
        if pilots == 0:
            return None
        everywhere = self.capacity(jobtype)[0] if site else pilots
        fraction = pilots / everywhere if everywhere else 1.0
        newest = self.is_newest_first(jobtype)
        ahead = 0.0
        for (other, prio, other_site), n in self.ready.items():
            if n <= 0 or prio < priority or (site and other_site and other_site != site):
                continue
            if prio == priority and other == jobtype and newest:
                continue              # a new job of a newest-first type goes before its own backlog
            run = self.runtime(other)
            if run is None:
                run = self.runtime(jobtype)
            if run is None:
                return None
            ahead += n * run
        if ahead == 0 and idle > 0:
            return 0.0
        busy = 0.0            # half the run time of every job running now, spread over the pilots
        for (state, other), n in self.lifecycle.counters.jobs.items():
            if state in states.JOB_ACTIVE and n > 0:
                busy += n * (self.runtime(other) or 0.0) / 2
        busy *= fraction      # the jobs running on these pilots, if spread evenly
        # Pilot time that higher-priority arrivals take away from this priority (on these pilots).
        taken = 0.0
        for other, prio in self.priority.items():
            other_site = self.site_of.get(other, "")
            if prio <= priority or (site and other_site and other_site != site):
                continue
            share_here = 1.0 if other_site == site else fraction
            taken += self.arrival_rate(other, now) * (self.runtime(other) or 0.0) * share_here
        share = pilots - taken
        if share <= 0.05 * pilots:
            return math.inf
        return (ahead + busy) / share

    # --- admission (shedding) -----------------------------------------------------------------
    def admit(self, docs: list[dict]) -> list[dict]:
        """Mark the new ``defined`` jobs to shed (state stale, dropped shed) before they are inserted;
        returns the shed ones. Lowest priority goes first: only work below a protected type's
        priority is shed to protect it. Each job admitted counts as ahead of the next of the batch."""
        shed: list[dict] = []
        now = time.time()
        counted: collections.Counter[tuple[str, int, str]] = collections.Counter()
        self._capacity_memo = {}
        try:
            for doc in docs:
                if doc.get("state") not in (states.DEFINED, states.TEMPLATE) or doc.get("noop"):
                    continue
                key = (doc.get("jobtype", ""), doc.get("priority", 0), doc.get("site") or "")
                reason = self.shed_reason(key[0], key[1], epoch(doc.get("deadline")), now, site=key[2])
                if reason is not None:
                    doc.update(state=states.STALE, dropped="shed", error=reason, ts_sto=utcnow())
                    shed.append(doc)
                elif doc["state"] == states.DEFINED:
                    self.ready[key] += 1
                    counted[key] += 1
        finally:
            self._capacity_memo = None
            for key, n in counted.items():        # job_created counts them for real once inserted
                self.ready[key] -= n
                if self.ready[key] <= 0:
                    del self.ready[key]
        return shed

    def shed_reason(self, jobtype: str, priority: int, deadline: float | None, now: float | None = None,
                    site: str = "") -> str | None:
        """Why a new job (restricted to ``site``, '' = any) would be shed now, or None to admit it."""
        policy = self.policy(jobtype)
        if not policy.shed:
            return None
        now = now or time.time()
        run = self.runtime(jobtype)
        if deadline is not None and run is not None:
            wait = self.predicted_wait(jobtype, priority, now, site)
            if wait is not None and now + wait + run > deadline:
                wait_text = "unbounded (higher-priority work takes every pilot)" if math.isinf(wait) else f"{wait:.0f} s"
                return (f"shed: predicted wait {wait_text} + run {run:.1f} s would end past its deadline "
                        f"({deadline - now:.0f} s from now)")
        for other, other_prio in sorted(self.priority.items(), key=lambda kv: -kv[1]):
            other_site = self.site_of.get(other, "")
            if other_prio <= priority or other == jobtype or (site and other_site and other_site != site):
                continue                     # (a job of another site never holds the other's pilots)
            eta = self.policy(other).eta
            other_run = self.runtime(other)
            if not eta or other_run is None or run is None:
                continue
            wait = self.predicted_wait(other, other_prio, now, other_site)
            pilots, _idle = self.capacity(other, other_site)
            if wait is None or not pilots:
                continue
            if wait + run / pilots + other_run > eta * PROTECT_MARGIN:
                return (f"shed: admitting it would push {other} (priority {other_prio}) past its ETA of {eta} s "
                        f"(predicted wait {wait:.0f} s)")
        return None

    def admission(self, vertices: Iterable[dict], arrived: _dt.datetime) -> dict[str, Any]:
        """Whether jobs with these (root) vertices' types, priorities and ETAs, for data that arrived
        at ``arrived``, would be admitted now: ``{"admit": bool, "reason", "jobtype"}``."""
        now = time.time()
        for vertex in vertices:
            jobtype = vertex.get("jobtype", "")
            eta = vertex.get("eta") or self.policy(jobtype).eta
            deadline = epoch(arrived) + eta if eta else None
            reason = self.shed_reason(jobtype, vertex.get("priority", 0), deadline, now, vertex.get("site") or "")
            if reason is not None:
                return {"admit": False, "reason": reason, "jobtype": jobtype}
        return {"admit": True, "reason": None, "jobtype": None}

    def record_shed(self, docs: Iterable[dict]) -> None:
        """Events for jobs shed at admission (after they are written)."""
        for doc in docs:
            events.record("job.shed", f"job {doc['_id']} ({doc.get('jobtype')}) {doc['error']}", job=doc["_id"],
                          severity="warning", data={"jobtype": doc.get("jobtype"), "reason": "shed",
                                                    "workflow": doc.get("workflow")})

    # --- staleness ----------------------------------------------------------------------------
    def drop_if_stale(self, uuid: str, jobtype: str, deadline: float | None, now: float | None = None) -> bool:
        """At a claim: end ``stale`` a ``defined`` job past its deadline, or that could no longer
        finish by it (its type's measured run time from now), when its type says so. True when the
        job must not be handed out: a pilot then takes the next one, which may still be in time."""
        now = now or time.time()
        if deadline is None or not self.policy(jobtype).stale:
            return False
        run = self.runtime(jobtype) or 0.0
        if deadline > now + run:
            return False
        self._make_stale(uuid, jobtype, deadline, {states.DEFINED}, run if deadline > now else None)
        return True

    def _make_stale(self, uuid: str, jobtype: str, deadline: float, sources: set[str],
                    run: float | None = None) -> dict | None:
        late = time.time() - deadline
        if run is not None:
            reason = (f"stale: it could no longer finish by its deadline ({-late:.1f} s away; its type runs "
                      f"{run:.1f} s) when a pilot would have taken it")
        else:
            reason = f"stale: its deadline passed {late:.0f} s ago before it " + (
                "was taken by a pilot" if states.DEFINED in sources else "finished")
        try:
            job = self.lifecycle.move_job(uuid, states.STALE, sources=sources,
                                          set_={"ts_sto": utcnow(), "error": reason, "dropped": "stale"})
        except Exception:           # it moved meanwhile (taken, cancelled, deleted)
            return None
        events.record("job.stale", f"job {uuid} ({jobtype}) {reason}", job=uuid, severity="warning",
                      pilot=job.get("pilot"), data={"jobtype": jobtype, "reason": "stale"})
        return job

    def tick(self, now: float | None = None) -> list[str]:
        """The sweep: jobs past their deadline that their type's policy drops."""
        try:
            return self._sweep(now or time.time())
        except Exception:
            log.exception("freshness sweep failed")
            return []

    def _sweep(self, now: float) -> list[str]:
        dropped = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, uuid, jobtype = heapq.heappop(self._deadlines)
            policy = self.policy(jobtype)
            if not (policy.stale or policy.stop_running):
                continue
            job = self.lifecycle.jobs.find_one({"_id": uuid}, {"state": 1, "jobtype": 1, "pilot": 1, "deadline": 1})
            if job is None or epoch(job.get("deadline")) != deadline:
                continue
            policy = self.policy(job.get("jobtype", ""))
            if job["state"] == states.DEFINED and policy.stale:
                if self._make_stale(uuid, job.get("jobtype", ""), deadline, {states.DEFINED}):
                    dropped.append(uuid)
            elif job["state"] in states.JOB_ACTIVE and policy.stop_running:
                if self._make_stale(uuid, job.get("jobtype", ""), deadline, set(states.JOB_ACTIVE)):
                    dropped.append(uuid)
                    if job.get("pilot") and self.kill_job is not None:
                        self.kill_job({"_id": uuid, "pilot": job["pilot"]})
        return dropped

    # --- listener -----------------------------------------------------------------------------
    def _watch(self, doc: dict) -> None:
        """Look at the job again at its deadline (the sweep)."""
        if doc.get("deadline"):
            heapq.heappush(self._deadlines, (epoch(doc["deadline"]), doc["_id"], doc.get("jobtype", "")))

    def _ready_in(self, doc: dict) -> None:
        key = (doc.get("jobtype", ""), doc.get("priority", 0), doc.get("site") or "")
        self.site_of[key[0]] = key[2]
        self._ready_out(doc["_id"])
        self._ready_of[doc["_id"]] = key
        self.ready[key] += 1

    def _ready_out(self, uuid: str) -> None:
        key = self._ready_of.pop(uuid, None)
        if key is not None:
            self.ready[key] -= 1
            if self.ready[key] <= 0:
                del self.ready[key]

    def job_created(self, doc: dict) -> None:
        if doc.get("noop"):
            return
        jobtype = doc.get("jobtype", "")
        self.priority[jobtype] = doc.get("priority", 0)
        if doc["state"] == states.DEFINED:
            self._ready_in(doc)
            self.arrivals.setdefault(jobtype, collections.deque(maxlen=20000)).append(time.time())
            self._watch(doc)
        elif doc["state"] == states.STALE:
            self._ended(doc, time.time())
        elif doc["state"] == states.TEMPLATE:
            self.arrivals.setdefault(jobtype, collections.deque(maxlen=20000))

    def job_removed(self, doc: dict) -> None:
        self._ready_out(doc["_id"])

    def job_moved(self, before: dict, after: dict) -> None:
        old, new = before.get("state"), after["state"]
        if old == new or after.get("noop"):
            return
        if new == states.DEFINED:
            self._ready_in(after)
            if old == states.TEMPLATE:
                jobtype = after.get("jobtype", "")
                self.priority[jobtype] = after.get("priority", 0)
                self.arrivals.setdefault(jobtype, collections.deque(maxlen=20000)).append(time.time())
            self._watch(after)
        elif old == states.DEFINED:
            self._ready_out(after["_id"])
        if new == states.RUNNING:
            self._watch(after)
        if new in (states.FINISHED, states.STALE):
            self._ended(after, time.time())

    def workflow_moved(self, after: dict) -> None:
        if after.get("state") == states.WF_FINISHED:
            self._workflow_ended(after)

    def event_recorded(self, doc: dict) -> None:
        if doc.get("kind") == "injector.skipped":
            reason = (doc.get("data") or {}).get("reason") or "other"
            minute = int(time.time() // 60)
            self._dirty = True
            self.injector.setdefault(minute, collections.Counter())[str(reason)[:32]] += 1
            if self.shared is not None:
                self.shared.count(minute, "inj", str(reason)[:32], "n")

    # --- turnaround ---------------------------------------------------------------------------
    def _ended(self, job: dict, when: float) -> None:
        self._dirty = True
        jobtype = job.get("jobtype", "")
        minute = int(when // 60)
        counts = self.counts.setdefault(minute, collections.Counter())
        if job["state"] == states.STALE:
            counts[(jobtype, job.get("dropped") or "stale")] += 1
            if self.shared is not None:
                self.shared.count(minute, "job", jobtype, job.get("dropped") or "stale")
            return
        started, stopped = epoch(job.get("ts_sta")), epoch(job.get("ts_sto")) or when
        if started is not None and stopped >= started:
            self.runtimes.setdefault(jobtype, collections.deque(maxlen=RUNTIME_SAMPLES)).append(stopped - started)
        arrived = epoch(job.get("arrived"))
        if arrived is None:
            return
        turnaround = max(0.0, stopped - arrived)
        bucket = self.samples.setdefault(minute, {}).setdefault(jobtype, [])
        if len(bucket) < SAMPLES_PER_MINUTE:
            bucket.append(turnaround)
        counts[(jobtype, "done")] += 1
        deadline = epoch(job.get("deadline"))
        if deadline is not None:
            counts[(jobtype, "eta")] += 1
            counts[(jobtype, "within")] += stopped <= deadline
        if self.shared is not None:
            self.shared.sample(minute, "job", jobtype, turnaround)
            self.shared.count(minute, "job", jobtype, "done")
            if deadline is not None:
                self.shared.count(minute, "job", jobtype, "eta")
                self.shared.count(minute, "job", jobtype, "within", int(stopped <= deadline))
        hist = self.histogram.setdefault(jobtype, [0] * (len(BUCKETS) + 1))
        hist[next((i for i, b in enumerate(BUCKETS) if turnaround <= b), len(BUCKETS))] += 1
        self.hist_sum[jobtype] += turnaround
        self._trim(minute)

    def _workflow_ended(self, wf: dict) -> None:
        arrived, stopped = epoch(wf.get("arrived")), epoch(wf.get("ts_sto"))
        if arrived is None or stopped is None:
            return
        minute = int(stopped // 60)
        bucket = self.wf_samples.setdefault(minute, {}).setdefault(wf.get("template", ""), [])
        if len(bucket) < SAMPLES_PER_MINUTE:
            bucket.append(max(0.0, stopped - arrived))
        if self.shared is not None:
            self.shared.sample(minute, "wf", wf.get("template", ""), max(0.0, stopped - arrived))

    def _trim(self, minute: int) -> None:
        oldest = minute - 24 * 60
        for table in (self.samples, self.counts, self.wf_samples, self.injector):
            if len(table) > 24 * 60 + 5:
                for stale in [m for m in table if m <= oldest]:
                    del table[stale]

    # --- reading ------------------------------------------------------------------------------
    def report(self, now: float | None = None) -> dict[str, Any]:
        """Per job type: policy, backlog, predicted wait and, per window, turnaround p50/p95, share
        within ETA and dropped counts; per template the workflows' turnaround; injector drops.
        Reused for a second while no job ended or was dropped (pages, alarms and /summary ask often)."""
        if (now is None and self._cached is not None and not self._dirty
                and time.monotonic() - self._cached[0] < 1.0):
            return self._cached[1]
        self._dirty = False
        fresh = self._report(now or time.time())
        if now is None:
            self._cached = (time.monotonic(), fresh)
        return fresh

    def _report(self, now: float) -> dict[str, Any]:
        current = int(now // 60)
        names = set(self.priority) | set(self.stored) | {t for c in self.counts.values() for t, _k in c}
        names |= {k for k in (self.config.jobtype_defaults or {}) if k != "*"}
        names.discard("noop")
        types: dict[str, Any] = {}
        for name in sorted(names):
            policy = self.policy(name)
            priority = self.priority.get(name, 0)
            wait = self.predicted_wait(name, priority, now)
            windows = {}
            for label, seconds in WINDOWS.items():
                first = current - seconds // 60 + 1
                values = [v for m, by in self.samples.items() if m >= first for v in by.get(name, ())]
                counter: collections.Counter = collections.Counter()
                for m, c in self.counts.items():
                    if m >= first:
                        for key in ("done", "eta", "within", *DROP_REASONS):
                            counter[key] += c.get((name, key), 0)
                p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
                windows[label] = {
                    "done": counter["done"], "within_eta": counter["within"],
                    "share_within_eta": round(counter["within"] / counter["eta"], 4) if counter["eta"] else None,
                    "turnaround_p50_s": None if p50 is None else round(p50, 2),
                    "turnaround_p95_s": None if p95 is None else round(p95, 2),
                    "dropped": {r: counter[r] for r in DROP_REASONS}}
            types[name] = {**dataclasses.asdict(policy), "priority": priority,
                           "alarm_within_eta": policy.alarm_within_eta if policy.alarm_within_eta is not None
                           else self.config.alarm_within_eta,
                           "backlog": sum(n for (t, _p, _s), n in self.ready.items() if t == name),
                           "runtime_s": None if self.runtime(name) is None else round(self.runtime(name), 2),
                           "predicted_wait_s": None if wait is None else (-1 if math.isinf(wait) else round(wait, 1)),
                           "windows": windows}
        workflows: dict[str, Any] = {}
        for label, seconds in WINDOWS.items():
            first = current - seconds // 60 + 1
            by_template: dict[str, list[float]] = {}
            for m, by in self.wf_samples.items():
                if m >= first:
                    for template, values in by.items():
                        by_template.setdefault(template, []).extend(values)
            for template, values in by_template.items():
                workflows.setdefault(template, {})[label] = {
                    "done": len(values), "turnaround_p50_s": round(percentile(values, 0.5), 2),
                    "turnaround_p95_s": round(percentile(values, 0.95), 2)}
        injector = {}
        for label, seconds in WINDOWS.items():
            first = current - seconds // 60 + 1
            total: collections.Counter = collections.Counter()
            for m, c in self.injector.items():
                if m >= first:
                    total.update(c)
            injector[label] = dict(total)
        return {"types": types, "workflows": workflows, "injector_dropped": injector}

    def metrics_data(self) -> dict[str, Any]:
        """For /metrics: per type the cumulative turnaround buckets (bound, count) and their sum, and
        the jobs dropped in the last 24 h by (type, reason) (files the injector dropped: type '')."""
        histograms = {}
        for jobtype, hist in sorted(self.histogram.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*BUCKETS, float("inf")), hist):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            histograms[jobtype] = (buckets, self.hist_sum[jobtype])
        dropped: collections.Counter = collections.Counter()
        for counter in self.counts.values():
            for (jobtype, key), n in counter.items():
                if key in DROP_REASONS:
                    dropped[(jobtype, key)] += n
        for counter in self.injector.values():
            for reason, n in counter.items():
                dropped[("", f"injector_{reason}")] += n
        return {"turnaround": histograms, "dropped": dict(sorted(dropped.items()))}
