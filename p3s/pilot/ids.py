"""Ids for new jobs: time-ordered UUIDs (version 7, RFC 9562), made by the client library
(p3s.pilot.client gives each job its uuid, so that a retried request never duplicates) and by the
server for jobs without one. Standard library only, like the rest of p3s.pilot.

The embedded store keys a job's document and every one of its index entries by its id. Random ids
(version 4) put each new job's entries at random places of those ordered B-trees, so a bulk
creation dirtied ~10 pages per job and cost more as the collection grew (0.12 ms of SQLite work
per job when empty, 0.31 ms at 10^5 jobs). Ids made in time order land at the end, next to the
previous job's: the same write then costs ~0.03-0.05 ms at any size.

Layout: 48 bits of Unix milliseconds, the version, 12 bits of a counter within the millisecond
(so ids made in one millisecond still increase), the variant, 62 random bits. Within a process
the ids strictly increase. Clients may still give their own uuid (any version).
"""
from __future__ import annotations

import os
import threading
import time
import uuid as _uuid

_lock = threading.Lock()
_last = 0                      # 60 bits: milliseconds << 12 | counter, of the last id made


def new() -> str:
    """A new time-ordered UUID as text (thread-safe; strictly increasing within the process)."""
    global _last
    with _lock:
        stamp = max(time.time_ns() // 1_000_000 << 12, _last + 1)
        _last = stamp
    random = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0b10 << 62 | random
    return str(_uuid.UUID(int=value))


def many(count: int) -> list[str]:
    """``count`` new ids, in increasing order."""
    return [new() for _ in range(count)]
