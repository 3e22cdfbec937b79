"""Rolling statistics the monitor shows, kept in memory from the lifecycle's changes.

Per minute, for the last 24 hours: how many jobs were defined, started, finished, failed, timed
out, lost and could not start, overall and by job type, how many pilots were lost by site, and the queue wait (defined → dispatched) and dispatch
latency (defined → started) of the jobs that started in that minute. Nothing here queries the
database per page view. The minutes are kept in the database (``p3s.kept``) and read back at
start, so they survive restarts and purges of the jobs they counted; a database that has none yet
is counted once from the jobs' timestamps. On a shared MongoDB each server keeps its own minutes
(what it counted), and shows the sum of its own and the others' kept minutes.
"""
from __future__ import annotations

import collections
import datetime as _dt
import time
from typing import Any, Callable, Iterable

from p3s import models, states
from p3s.figures import epoch as _epoch, percentile
from p3s.lifecycle import Listener

WINDOWS = {"1m": 60, "10m": 600, "1h": 3600, "24h": 86400}
EVENTS = ("defined", "started", "finished", "failed", "timelimit", "pilot_lost", "nonstarter")
# Ends that count as unsuccessful in failure rates and the charts' failed line.
UNSUCCESSFUL = ("failed", "timelimit", "pilot_lost", "nonstarter")
MINUTES = 24 * 60
SAMPLES_PER_MINUTE = 2000
# Buckets of the dispatch latency histogram, in seconds (Prometheus style, +Inf added).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_END_EVENT = {states.FINISHED: "finished", states.FAILED: "failed", states.TIMELIMIT: "timelimit",
              states.PILOT_LOST: "pilot_lost", states.NONSTARTER: "nonstarter"}


def _minute(epoch: float) -> int:
    return int(epoch // 60)


class Stats(Listener):
    """Counts by minute, latency samples by minute, and a latency histogram since start."""

    def __init__(self, owner: str = "") -> None:
        # The tables below are what is shown: this server's counts plus the other servers' kept
        # minutes. ``own`` holds this server's part (what it keeps), ``others`` theirs.
        self.owner = owner                                      # whose kept minutes are this server's
        self.own: dict[str, dict[int, Any]] = {"counts": {}, "lost_pilots": {}, "waits": {}, "latencies": {}}
        self.others: dict[int, dict[str, dict]] = {}           # minute -> other server -> its kept row
        self.others_read = 0.0                                  # when the others' rows were last read
        self.counts: dict[int, collections.Counter] = {}       # minute -> Counter[(event, jobtype)]
        # Pilots declared lost, by site: apart from the jobs' counts, so a site is never a job type
        # and a lost pilot is counted once (its jobs' ``pilot_lost`` ends are counted by type).
        self.lost_pilots: dict[int, collections.Counter] = {}  # minute -> Counter[site]
        self.waits: dict[int, list[float]] = {}                 # minute -> queue waits (s)
        self.latencies: dict[int, list[float]] = {}             # minute -> dispatch latencies (s)
        self.histogram = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.dirty: set[int] = set()                            # minutes changed since last kept

    # --- recording ----------------------------------------------------------------------------
    def _count(self, event: str, jobtype: str, when: float) -> None:
        minute = _minute(when)
        self.counts.setdefault(minute, collections.Counter())[(event, jobtype)] += 1
        self.own["counts"].setdefault(minute, collections.Counter())[(event, jobtype)] += 1
        self.dirty.add(minute)
        self._trim(minute)

    def _sample(self, name: str, value: float, when: float) -> None:
        minute = _minute(when)
        bucket = self.own[name].setdefault(minute, [])
        if len(bucket) < SAMPLES_PER_MINUTE:
            bucket.append(value)
            getattr(self, name).setdefault(minute, []).append(value)
            self.dirty.add(minute)

    def _trim(self, minute: int) -> None:
        oldest = minute - MINUTES
        for table in (self.counts, self.waits, self.latencies, self.lost_pilots, self.others, *self.own.values()):
            for stale in [m for m in table if m <= oldest] if len(table) > MINUTES + 5 else ():
                del table[stale]

    def record_start(self, jobtype: str, defined: float | None, dispatched: float | None, started: float) -> None:
        self._count("started", jobtype, started)
        if defined is not None:
            latency = max(0.0, started - defined)
            self._sample("latencies", latency, started)
            self.latency_sum += latency
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if latency <= bound:
                    self.histogram[i] += 1
                    break
            else:
                self.histogram[-1] += 1
            if dispatched is not None:
                self._sample("waits", max(0.0, dispatched - defined), started)

    def load(self, jobs: Iterable[dict] | None = None, new: Callable[[float], bool] | None = None) -> None:
        """Count the last 24 hours once, from the jobs' timestamps (``jobs``: all of them, else a query);
        with ``new``, only the moments (epoch seconds) it accepts: what happened after the last save."""
        since = _dt.datetime.utcnow() - _dt.timedelta(days=1)
        fields = {"jobtype": 1, "state": 1, "ts_def": 1, "ts_dis": 1, "ts_sta": 1, "ts_sto": 1, "noop": 1}
        if jobs is None:
            jobs = models.Job._get_collection().find({"ts_def": {"$gte": since - _dt.timedelta(days=1)}}, fields)
        cutoff = since.replace(tzinfo=_dt.timezone.utc).timestamp()
        wanted = (lambda moment: moment >= cutoff and new(moment)) if new else (lambda moment: moment >= cutoff)
        for job in jobs:
            if job.get("noop"):
                continue
            jobtype = job.get("jobtype", "")
            defined, started, stopped = (_epoch(job.get(k)) for k in ("ts_def", "ts_sta", "ts_sto"))
            if defined and wanted(defined) and job.get("state") != states.TEMPLATE:
                self._count("defined", jobtype, defined)
            if started and wanted(started):
                self.record_start(jobtype, defined, _epoch(job.get("ts_dis")), started)
            event = _END_EVENT.get(job.get("state"))
            if event and stopped and wanted(stopped):
                self._count(event, jobtype, stopped)
        for pilot in models.Pilot._get_collection().find({"state": states.LOST, "ts_stop": {"$gte": since}},
                                                         {"site": 1, "ts_stop": 1}):
            if wanted(_epoch(pilot["ts_stop"])):
                self._lost(pilot.get("site") or "", _epoch(pilot["ts_stop"]))

    def minute_row(self, minute: int) -> dict[str, Any]:
        """This server's part of one minute as a document to keep: its counts and samples."""
        own = self.own
        return {"counts": [[e, t, n] for (e, t), n in own["counts"].get(minute, {}).items()],
                "waits": list(own["waits"].get(minute, [])), "latencies": list(own["latencies"].get(minute, [])),
                "lost_pilots": [[site, n] for site, n in own["lost_pilots"].get(minute, {}).items()]}

    def restore_minute(self, minute: int, row: dict[str, Any]) -> None:
        """Put back this server's kept minute (from ``minute_row``)."""
        own = self.own
        own["counts"][minute] = collections.Counter({(e, t): n for e, t, n in row.get("counts", [])})
        own["waits"][minute] = list(row.get("waits", []))[:SAMPLES_PER_MINUTE]
        own["latencies"][minute] = list(row.get("latencies", []))[:SAMPLES_PER_MINUTE]
        own["lost_pilots"][minute] = collections.Counter({site: n for site, n in row.get("lost_pilots", [])})
        self._total(minute)

    def merge_minute(self, owner: str, minute: int, row: dict[str, Any]) -> None:
        """Take (or replace) another server's kept minute into what is shown."""
        self.others.setdefault(minute, {})[owner] = row
        self._total(minute)

    def _total(self, minute: int) -> None:
        """What is shown of ``minute``: this server's part plus the others' kept rows."""
        own = self.own
        counts = collections.Counter(own["counts"].get(minute, {}))
        lost = collections.Counter(own["lost_pilots"].get(minute, {}))
        waits, latencies = list(own["waits"].get(minute, [])), list(own["latencies"].get(minute, []))
        for row in self.others.get(minute, {}).values():
            for e, t, n in row.get("counts", []):
                counts[(e, t)] += n
            for site, n in row.get("lost_pilots", []):
                lost[site] += n
            waits += row.get("waits", [])[:SAMPLES_PER_MINUTE]
            latencies += row.get("latencies", [])[:SAMPLES_PER_MINUTE]
        self.counts[minute], self.waits[minute], self.latencies[minute] = counts, waits, latencies
        if lost:
            self.lost_pilots[minute] = lost
        else:
            self.lost_pilots.pop(minute, None)

    # --- listener -----------------------------------------------------------------------------
    def job_created(self, doc: dict) -> None:
        if doc["state"] == states.DEFINED:
            self._count("defined", doc.get("jobtype", ""), time.time())

    def job_moved(self, before: dict, after: dict) -> None:
        old, new = before.get("state"), after["state"]
        if old == new or after.get("noop"):
            return
        jobtype, now = after.get("jobtype", ""), time.time()
        if new == states.DEFINED:
            self._count("defined", jobtype, now)
        elif new == states.RUNNING or (new in _END_EVENT and old == states.DISPATCHED and after.get("ts_sta")):
            started = _epoch(after.get("ts_sta")) or now
            self.record_start(jobtype, _epoch(after.get("ts_def")), _epoch(after.get("ts_dis")), started)
        if new in _END_EVENT:
            self._count(_END_EVENT[new], jobtype, now)

    def pilot_moved(self, before: dict, after: dict) -> None:
        if after["state"] == states.LOST and before.get("state") != states.LOST:
            self._lost(after.get("site") or "", time.time())

    def _lost(self, site: str, when: float) -> None:
        minute = _minute(when)
        self.lost_pilots.setdefault(minute, collections.Counter())[site] += 1
        self.own["lost_pilots"].setdefault(minute, collections.Counter())[site] += 1
        self.dirty.add(minute)
        self._trim(minute)

    # --- reading ------------------------------------------------------------------------------
    def windows(self, now: float | None = None) -> dict[str, Any]:
        """Counts for each window: overall and by job type."""
        current = _minute(now or time.time())
        out: dict[str, Any] = {}
        for name, seconds in WINDOWS.items():
            first = current - seconds // 60 + 1
            total: collections.Counter = collections.Counter()
            by_type: dict[str, collections.Counter] = {}
            for minute, counter in self.counts.items():
                if minute >= first:
                    for (event, jobtype), n in counter.items():
                        total[event] += n
                        by_type.setdefault(jobtype, collections.Counter())[event] += n
            out[name] = {"total": {e: total[e] for e in EVENTS},
                         "by_type": {t: {e: c[e] for e in EVENTS} for t, c in sorted(by_type.items())}}
        return out

    def series(self, minutes: int = 60, now: float | None = None) -> list[dict[str, Any]]:
        """Per minute for the last ``minutes``: jobs started, finished and unsuccessful, and queue
        wait and dispatch latency p50 and p95 in seconds (None in a minute with no start)."""
        current = _minute(now or time.time())
        rows = []
        for minute in range(current - minutes + 1, current + 1):
            counter = self.counts.get(minute, collections.Counter())
            waits, latencies = self.waits.get(minute, []), self.latencies.get(minute, [])
            row = {"t": minute * 60, "finished": sum(n for (e, _t), n in counter.items() if e == "finished"),
                   "started": sum(n for (e, _t), n in counter.items() if e == "started"),
                   "failed": sum(n for (e, _t), n in counter.items() if e in UNSUCCESSFUL)}
            for name, values in (("wait", waits), ("latency", latencies)):
                for q, label in ((0.5, "p50"), (0.95, "p95")):
                    value = percentile(values, q)
                    row[f"{name}_{label}_s"] = None if value is None else round(value, 3)
            rows.append(row)
        return rows

    def lost_by_site(self, seconds: int, now: float | None = None) -> dict[str, int]:
        """Pilots declared lost in the last ``seconds``, by site ('' = no site)."""
        first = _minute(now or time.time()) - seconds // 60 + 1
        out: collections.Counter = collections.Counter()
        for minute, counter in self.lost_pilots.items():
            if minute >= first:
                out.update(counter)
        return dict(out)

    def recent(self, events: Iterable[str], seconds: int, jobtype: str | None = None) -> int:
        first = _minute(time.time()) - seconds // 60 + 1
        wanted = set(events)
        return sum(n for minute, counter in self.counts.items() if minute >= first
                   for (event, jt), n in counter.items() if event in wanted and (jobtype is None or jt == jobtype))
