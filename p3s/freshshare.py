"""The freshness figures of every server on a shared MongoDB, merged by minute.

Each server sees only the jobs that end through it. On a shared database each one adds what it
saw to per-minute documents of the ``freshness`` collection — one per (minute, kind, name): job
type, workflow template or injector reason — with ``$inc`` for the counts and ``$push`` (capped
like the local samples) for the turnarounds, and reads back the minutes changed since its last
read, replacing its own copy of them. So ``/freshness``, the summary, the dashboard and the
alarms show the same figures on every server, a sync period late at most.

Names are stored as values, never as field names, so any job type is a valid document. The
turnaround histogram of ``/metrics`` stays per process (Prometheus sums the instances), and so
do the run times the prediction uses.
"""
from __future__ import annotations

import collections
import datetime as _dt
import logging
import time
from typing import Any

log = logging.getLogger("p3s.freshshare")

COUNT_FIELDS = ("done", "eta", "within", "stale", "shed")
READ_MARGIN = 120.0        # seconds: a document written this long before the last read is read again
KEEP_MINUTES = 24 * 60 + 5


def _key(minute: int, kind: str, name: str) -> str:
    return f"{minute}:{kind}:{name}"


class SharedFigures:
    """Pending additions of this server, written and merged with the others' by ``sync``."""

    def __init__(self, freshness: Any, collection: Any, samples_cap: int) -> None:
        self.freshness, self.collection, self.cap = freshness, collection, samples_cap
        self.counts: dict[tuple[int, str, str], collections.Counter] = {}
        self.samples: dict[tuple[int, str, str], list[float]] = {}
        self.last_read: float | None = None
        self._last_trim = 0.0

    # --- what this server saw (called from p3s.freshness on the loop) -----------------------------
    def count(self, minute: int, kind: str, name: str, field: str, n: int = 1) -> None:
        self.counts.setdefault((minute, kind, name), collections.Counter())[field] += n

    def sample(self, minute: int, kind: str, name: str, value: float) -> None:
        self.samples.setdefault((minute, kind, name), []).append(value)

    # --- the periodic exchange ------------------------------------------------------------------
    def sync(self) -> int:
        """Write the pending additions, then read back the minutes changed since the last read.
        Returns the documents read."""
        counts, self.counts = self.counts, {}
        samples, self.samples = self.samples, {}
        now = time.time()
        stamp = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).replace(tzinfo=None)
        try:
            for key in set(counts) | set(samples):
                minute, kind, name = key
                update: dict[str, Any] = {"$set": {"minute": minute, "kind": kind, "name": name, "updated": stamp}}
                if counts.get(key):
                    update["$inc"] = {f: n for f, n in counts[key].items() if n}
                if samples.get(key):
                    update["$push"] = {"samples": {"$each": samples[key], "$slice": self.cap}}
                self.collection.update_one({"_id": _key(minute, kind, name)}, update, upsert=True)
        except Exception:
            self._restore(counts, samples)      # tried again at the next sync
            raise
        since = (self.last_read or 0.0) - READ_MARGIN
        first = int(now // 60) - KEEP_MINUTES
        query: dict[str, Any] = {"minute": {"$gte": first}}
        if self.last_read is not None:
            query["updated"] = {"$gte": _dt.datetime.fromtimestamp(since, _dt.timezone.utc).replace(tzinfo=None)}
        read = list(self.collection.find(query))
        self.last_read = now
        self._merge(read)
        if now - self._last_trim > 600:
            self._last_trim = now
            self.collection.delete_many({"minute": {"$lt": first}})
        return len(read)

    def _restore(self, counts: dict, samples: dict) -> None:
        for key, counter in counts.items():
            self.counts.setdefault(key, collections.Counter()).update(counter)
        for key, values in samples.items():
            self.samples.setdefault(key, [])[:0] = values

    def _merge(self, docs: list[dict]) -> None:
        """Replace this server's copy of the minutes read with the merged figures, plus what it
        saw meanwhile and has not written yet."""
        fresh = self.freshness
        for doc in docs:
            minute, kind, name = doc.get("minute"), doc.get("kind"), doc.get("name")
            if not isinstance(minute, int) or not isinstance(name, str):
                continue
            pending = self.counts.get((minute, kind, name), collections.Counter())
            values = list(doc.get("samples") or []) + self.samples.get((minute, kind, name), [])
            if kind == "job":
                counter = fresh.counts.setdefault(minute, collections.Counter())
                for field in COUNT_FIELDS:
                    counter[(name, field)] = int(doc.get(field) or 0) + pending[field]
                fresh.samples.setdefault(minute, {})[name] = values[:self.cap]
            elif kind == "wf":
                fresh.wf_samples.setdefault(minute, {})[name] = values[:self.cap]
            elif kind == "inj":
                fresh.injector.setdefault(minute, collections.Counter())[name] = int(doc.get("n") or 0) + pending["n"]
        if docs:
            fresh._dirty = True
