"""Small helpers shared by the monitor's statistics and the freshness figures."""
from __future__ import annotations

import datetime as _dt


def epoch(moment: _dt.datetime | None) -> float | None:
    """Seconds since the epoch of a naive UTC datetime (None stays None)."""
    return None if moment is None else moment.replace(tzinfo=_dt.timezone.utc).timestamp()


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0 to 1) of ``values`` by the nearest-rank rule; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
