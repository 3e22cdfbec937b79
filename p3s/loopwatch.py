"""How late the server's event loop runs: a callback due every ``interval`` seconds notes by how
much it was late. A late callback means the loop was busy (a long request, a big bulk operation)
and answered nobody meanwhile; the longest such stalls are kept for /summary and the benches. Each stall also notes the CPU time the loop's thread used meanwhile: a stall with
little CPU is the machine's (the process was not scheduled), not the server's own work.
"""
from __future__ import annotations

import collections
import time

from tornado.ioloop import IOLoop

INTERVAL = 0.05          # seconds between checks
KEEP = 100               # stalls remembered
STALL = 0.02             # lateness (seconds) worth remembering


class LoopWatch:
    """Measures the loop's lateness; ``stalls`` holds (wall time, seconds late) of the longest."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.max_late = 0.0
        self.total_late = 0.0
        self.stalls: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=KEEP)
        self._due = 0.0
        self._cpu = 0.0
        self._handle = None

    def start(self) -> None:
        loop = IOLoop.current()
        self._due = loop.time() + self.interval
        self._cpu = time.thread_time()
        self._handle = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            IOLoop.current().remove_timeout(self._handle)
            self._handle = None

    def _tick(self) -> None:
        loop = IOLoop.current()
        now = loop.time()
        late = now - self._due
        cpu = time.thread_time()
        if late > STALL:
            self.stalls.append((round(time.time() - late, 3), round(late, 4), round(cpu - self._cpu, 4)))
        self._cpu = cpu
        self.max_late = max(self.max_late, late)
        self.total_late += max(0.0, late)
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick)

    def late_so_far(self) -> float:
        """Seconds the loop has run late in all, up to now (a stall still in progress included)."""
        if self._handle is None:
            return self.total_late
        return self.total_late + max(0.0, IOLoop.current().time() - self._due)

    def summary(self) -> dict:
        return {"max_late_ms": round(self.max_late * 1000, 1),
                "stalls": [[t, round(s * 1000, 1), round(c * 1000, 1)] for t, s, c in self.stalls]}
