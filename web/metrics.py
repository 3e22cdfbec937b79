"""``/metrics`` for Prometheus, written by ``prometheus_client`` (its types, its escaping of label
values: a site named with a newline or a quote cannot break the scrape), from the counters the
server keeps; nothing is counted in the database."""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import exposition
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
                                    SummaryMetricFamily)
from prometheus_client.registry import CollectorRegistry

from p3s.web.stats import LATENCY_BUCKETS

CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)


class ServerCollector:
    """Collects the server's figures at scrape time."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        jobs = GaugeMetricFamily("p3s_jobs", "Jobs by state and type.", labels=["state", "jobtype"])
        for (state, jobtype), n in sorted(server.lifecycle.counters.jobs.items()):
            if n:
                jobs.add_metric([state, jobtype], n)
        yield jobs
        pilots = GaugeMetricFamily("p3s_pilots", "Pilots by state and site.", labels=["state", "site"])
        for site, counts in sorted(server.counts()["pilots_by_site"].items()):
            for state, n in sorted(counts.items()):
                if n:
                    pilots.add_metric([state, site], n)
        yield pilots
        yield GaugeMetricFamily("p3s_ready_jobs", "Jobs in the broker's ready queue.", value=len(server.broker.queue))
        yield GaugeMetricFamily("p3s_waiting_pilots", "Pilots parked in a long poll.", value=server.broker.waiting)
        yield CounterMetricFamily("p3s_pilot_record_writes", "Writes of live pilots' records (contacts, written "
                                  "in batches).", value=server.pilot_service.contacts.writes)
        yield CounterMetricFamily("p3s_job_usage_writes", "Writes of running jobs' heartbeat samples (written in "
                                  "batches).", value=server.pilot_service.usage.writes)
        stats = server.stats
        buckets, cumulative = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), stats.histogram):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        yield HistogramMetricFamily("p3s_dispatch_latency_seconds", "Job defined to payload started.",
                                    buckets=buckets, sum_value=stats.latency_sum)
        requests = CounterMetricFamily("p3s_http_requests", "HTTP requests by method and status.",
                                       labels=["method", "code"])
        for (method, status), n in sorted(server.requests.items()):
            requests.add_metric([method, str(status)], n)
        yield requests
        durations = SummaryMetricFamily("p3s_http_request_duration_seconds",
                                        "Time spent answering requests, by method.", labels=["method"])
        for method, seconds in sorted(server.request_seconds.items()):
            count = sum(n for (m, _s), n in server.requests.items() if m == method)
            durations.add_metric([method], count_value=count, sum_value=seconds)
        yield durations
        yield from freshness_families(server.freshness)


def freshness_families(freshness: Any) -> Iterator[Metric]:
    """Turnaround (data arrival to job finished) per job type, and jobs dropped by reason (p3s.freshness)."""
    data = freshness.metrics_data()
    turnaround = HistogramMetricFamily("p3s_turnaround_seconds", "Data arrival to job finished, by job type.",
                                       labels=["jobtype"])
    for jobtype, (buckets, total) in data["turnaround"].items():
        turnaround.add_metric([jobtype], buckets, sum_value=total)
    yield turnaround
    dropped = GaugeMetricFamily("p3s_dropped", "Jobs dropped to keep others fresh in the last 24 h, by job type "
                                               "and reason (stale, shed; injector_*: files the injector dropped).",
                                labels=["jobtype", "reason"])
    for (jobtype, reason), n in data["dropped"].items():
        dropped.add_metric([jobtype, reason], n)
    yield dropped


def render(server: Any) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return exposition.generate_latest(registry), CONTENT_TYPE
