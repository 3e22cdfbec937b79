"""Run one operation on many hosts at once, at most ``fanout`` at a time (pdsh's sliding window),
with a progress line on a terminal."""
from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any, Callable, TextIO, TypeVar

from p3s.backends.base import HostResult

T = TypeVar("T")

DEFAULT_FANOUT = 32


class Progress:
    """``label: done/total hosts (n failed)`` on one rewritten line, only when ``stream`` is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last > 0.1):
            self._last = now
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_on(nodes: list[str], action: Callable[[str], T], fanout: int = DEFAULT_FANOUT, label: str = "",
           progress: Progress | None = None, on_error: Callable[[str, str], Any] = HostResult) -> dict[str, T]:
    """``action(node)`` for every node, ``fanout`` at a time; results keyed by node, in node order.

    Results have ``node`` and ``ok``. An exception escaping ``action`` becomes ``on_error(node,
    message)``; the other hosts carry on. Worker threads are daemons, so an interrupted command
    does not wait for hung hosts.
    """
    progress = progress or Progress()
    todo: queue.Queue[str] = queue.Queue()
    for node in nodes:
        todo.put(node)
    done: queue.Queue[Any] = queue.Queue()

    def worker() -> None:
        while True:
            try:
                node = todo.get_nowait()
            except queue.Empty:
                return
            try:
                result = action(node)
            except Exception as exc:  # a backend bug must not stop the fleet
                result = on_error(node, f"{type(exc).__name__}: {exc}")
            done.put(result)

    for _ in range(max(1, min(fanout, len(nodes)))):
        threading.Thread(target=worker, daemon=True).start()
    results: dict[str, Any] = {}
    failed = 0
    while len(results) < len(nodes):
        result = done.get()
        results[result.node] = result
        failed += not result.ok
        progress.show(f"{label}: {len(results)}/{len(nodes)} hosts" + (f" ({failed} failed)" if failed else ""),
                      force=len(results) == len(nodes))
    progress.clear()
    return {node: results[node] for node in nodes}
