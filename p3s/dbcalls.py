"""Database calls off the event loop, on the MongoDB path.

The services are plain synchronous code that keeps in-memory structures (the broker's heaps, the
pilot registry, counters) which only the event-loop thread may touch. On MongoDB, each request
handler, periodic task and broker round runs in a greenlet *on the loop thread*; when it makes a
pymongo call, the call goes to a bounded thread pool and the greenlet is suspended until the
answer comes back, while the loop goes on serving everything else. So a slow or failing-over
database makes answers slower, never the server frozen, and no service code had to change.

The interception is one patch of pymongo's I/O entry points (collection operations, cursor
batches, database commands), active only while ``OffLoop.install`` is in force and only for
calls made from such a greenlet; any other call (start-up, a pool thread) runs as it is. The
embedded store (litemongo) is not pymongo and keeps its single thread.

``Health`` times every call: /status reports the database unreachable while a call has waited
longer than ``STALL_SECONDS`` or the last one failed to reach it, and the reaper judges no pilot
for a while after such trouble (pilots could not reach the server's database either).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from typing import Any, Callable

import greenlet
from tornado.ioloop import IOLoop

log = logging.getLogger("p3s.dbcalls")

THREADS = 16             # database calls in flight at once; more wait their turn
STALL_SECONDS = 2.0      # a call waiting longer than this means the database is not answering
SLOW_SECONDS = 1.0       # a call slower than this counts as trouble for the reaper


class Health:
    """What the database's recent answers say about it (written by pool threads, read anywhere)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[int, float] = {}
        self._next = 0
        self.trouble_at: float | None = None   # monotonic time of the last slow or failed call
        self.last_error: str | None = None     # set by a failed call, cleared by a good one

    def begin(self) -> int:
        with self._lock:
            self._next += 1
            self._in_flight[self._next] = time.monotonic()
            return self._next

    def end(self, token: int, error: BaseException | None) -> None:
        now = time.monotonic()
        with self._lock:
            started = self._in_flight.pop(token, now)
            if error is not None and _unreachable(error):
                self.last_error = f"{type(error).__name__}: {error}"[:300]
                self.trouble_at = now
            else:                              # an answer, even a refusal, means it is reachable
                self.last_error = None
            if now - started > SLOW_SECONDS:
                self.trouble_at = now

    def status(self) -> dict[str, Any]:
        """``{"state": "ok"|"unreachable", "waiting_calls": n, "longest_wait": s, "error": …}``."""
        now = time.monotonic()
        with self._lock:
            oldest = min(self._in_flight.values(), default=now)
            waiting = len(self._in_flight)
            error = self.last_error
        stalled = now - oldest > STALL_SECONDS
        state = "unreachable" if stalled or error else "ok"
        if stalled and error is None:
            error = f"no answer for {now - oldest:.1f} s"
        return {"state": state, "waiting_calls": waiting, "longest_wait": round(now - oldest, 1), "error": error}


def _unreachable(error: BaseException) -> bool:
    from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, ServerSelectionTimeoutError

    return isinstance(error, (AutoReconnect, ConnectionFailure, ExecutionTimeout, ServerSelectionTimeoutError))


class _Task(greenlet.greenlet):
    """A greenlet whose pymongo calls go to the pool (the marker the patched calls look for)."""


class OffLoop:
    """The pool, the health record, and the patch of pymongo's I/O entry points."""

    active: "OffLoop | None" = None

    def __init__(self, threads: int = THREADS) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="p3s-db")
        self.health = Health()

    # --- running code in greenlets ------------------------------------------------------------
    async def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` (plain or ``async``) so that its database calls suspend it, not the loop."""
        task = _Task(_run_to_end)
        kind, value = task.switch(fn, args, kwargs)
        while True:
            if kind == "done":
                return value
            try:
                if kind == "db":
                    result = await asyncio.wrap_future(value)
                else:                                   # a future the driven coroutine awaits
                    if value is None:
                        await asyncio.sleep(0)
                    else:
                        await asyncio.wait([value])
                    result = None
            except BaseException as exc:  # noqa: BLE001 - handed to the greenlet, which raises it
                kind, value = task.throw(exc)
            else:
                kind, value = task.switch(result)

    @staticmethod
    def in_task() -> bool:
        """Whether the caller already runs in a task greenlet."""
        return isinstance(greenlet.getcurrent(), _Task)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop soon, in a greenlet."""
        IOLoop.current().add_callback(self.spawn, fn)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Make the blocking call ``fn(*args)``: in the pool when called from a task greenlet."""
        current = greenlet.getcurrent()
        if not isinstance(current, _Task):
            return fn(*args, **kwargs)
        future = self.pool.submit(self._timed, fn, args, kwargs)
        return current.parent.switch(("db", future))

    def _timed(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        token = self.health.begin()
        error = None
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.health.end(token, error)

    # --- the patch ----------------------------------------------------------------------------
    def install(self) -> None:
        """Route pymongo's I/O through ``call`` (for this process)."""
        OffLoop.active = self
        if not _PATCHED:
            _patch()

    def close(self) -> None:
        if OffLoop.active is self:
            OffLoop.active = None
        self.pool.shutdown(wait=False, cancel_futures=True)


def _run_to_end(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[str, Any]:
    result = fn(*args, **kwargs)
    if asyncio.iscoroutine(result):
        result = _drive(result)
    return "done", result


def _drive(coroutine: Any) -> Any:
    """Run a coroutine inside the task greenlet: each future it awaits is awaited by the loop."""
    parent = greenlet.getcurrent().parent
    error: BaseException | None = None
    while True:
        try:
            awaited = coroutine.throw(error) if error is not None else coroutine.send(None)
        except StopIteration as stop:
            return stop.value
        error = None
        if awaited is not None:
            awaited._asyncio_future_blocking = False    # as asyncio's Task does before waiting on it
        try:
            parent.switch(("wait", awaited))
        except BaseException as exc:  # noqa: BLE001 - e.g. cancellation: handed to the coroutine
            error = exc


_PATCHED = False
# pymongo's entry points that talk to the server (cursor batches included).
_COLLECTION_CALLS = ("find_one", "find_one_and_update", "find_one_and_replace", "find_one_and_delete",
                     "update_one", "update_many", "replace_one", "insert_one", "insert_many", "delete_one",
                     "delete_many", "count_documents", "estimated_document_count", "distinct", "bulk_write",
                     "aggregate")


def _offloaded(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        runner = OffLoop.active
        if runner is None:
            return method(*args, **kwargs)
        return runner.call(method, *args, **kwargs)
    return call


def _patch() -> None:
    global _PATCHED
    from pymongo.synchronous.collection import Collection
    from pymongo.synchronous.command_cursor import CommandCursor
    from pymongo.synchronous.cursor import Cursor
    from pymongo.synchronous.database import Database

    for name in _COLLECTION_CALLS:
        setattr(Collection, name, _offloaded(getattr(Collection, name)))
    Cursor._refresh = _offloaded(Cursor._refresh)
    CommandCursor._refresh = _offloaded(CommandCursor._refresh)
    Database.command = _offloaded(Database.command)
    _PATCHED = True
