"""``/metrics`` in the Prometheus text format, from the counters the server keeps."""
from __future__ import annotations

from typing import Any

from p3s.web.stats import LATENCY_BUCKETS


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def render(server: Any) -> str:
    """The exposition text: jobs, pilots, dispatch latency, HTTP requests."""
    lines = ["# HELP p3s_jobs Jobs by state and type.", "# TYPE p3s_jobs gauge"]
    for (state, jobtype), n in sorted(server.lifecycle.counters.jobs.items()):
        if n:
            lines.append(f"p3s_jobs{_labels(state=state, jobtype=jobtype)} {n}")
    lines += ["# HELP p3s_pilots Pilots by state and site.", "# TYPE p3s_pilots gauge"]
    for (state, site), n in sorted(server.lifecycle.counters.pilots.items()):
        if n:
            lines.append(f"p3s_pilots{_labels(state=state, site=site)} {n}")
    lines += ["# HELP p3s_ready_jobs Jobs in the broker's ready queue.", "# TYPE p3s_ready_jobs gauge",
              f"p3s_ready_jobs {len(server.broker.queue)}",
              "# HELP p3s_waiting_pilots Pilots parked in a long poll.", "# TYPE p3s_waiting_pilots gauge",
              f"p3s_waiting_pilots {server.broker.waiting}"]
    stats = server.stats
    lines += ["# HELP p3s_dispatch_latency_seconds Job defined to payload started.",
              "# TYPE p3s_dispatch_latency_seconds histogram"]
    cumulative = 0
    for bound, n in zip((*LATENCY_BUCKETS, float("inf")), stats.histogram):
        cumulative += n
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f"p3s_dispatch_latency_seconds_bucket{_labels(le=le)} {cumulative}")
    lines += [f"p3s_dispatch_latency_seconds_sum {stats.latency_sum:.6f}",
              f"p3s_dispatch_latency_seconds_count {stats.latency_count}"]
    lines += ["# HELP p3s_http_requests_total HTTP requests by method and status.",
              "# TYPE p3s_http_requests_total counter"]
    for (method, status), n in sorted(server.requests.items()):
        lines.append(f"p3s_http_requests_total{_labels(method=method, code=str(status))} {n}")
    lines += ["# HELP p3s_http_request_duration_seconds Time spent answering requests, by method.",
              "# TYPE p3s_http_request_duration_seconds summary"]
    for method, seconds in sorted(server.request_seconds.items()):
        count = sum(n for (m, _s), n in server.requests.items() if m == method)
        lines.append(f"p3s_http_request_duration_seconds_sum{_labels(method=method)} {seconds:.6f}")
        lines.append(f"p3s_http_request_duration_seconds_count{_labels(method=method)} {count}")
    lines += server.freshness.metrics_lines()
    return "\n".join(lines) + "\n"
