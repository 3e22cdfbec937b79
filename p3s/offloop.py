"""CPU work of a request handed off the event-loop thread.

Parsing a large body, validating it, building documents and their BSON and index rows, and
rendering a large reply are pure computations over values nobody else holds: they run on one
worker thread here while the loop serves other requests. Database calls never do: the embedded
engine is used on the loop thread only (the MongoDB path has p3s.dbcalls). The work still shares
the interpreter's lock with the loop, so it costs the process the same CPU; what it spares is the
loop's time, the time every other request waits behind it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
EVERY = 16            # items of work between two hand-backs of the interpreter's lock (see yielding)
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        # one thread: the work is CPU-bound under the interpreter's lock; more would only contend
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="p3s-offloop")
    return _pool


async def run(function: Callable[..., T], *args: Any, inline: bool = False, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on the worker thread; its exception is raised here. It must
    not touch the database nor any structure the loop owns. ``inline``: call it here instead (small
    work, for which the hand-over would cost more than it spares)."""
    if inline:
        return function(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(function, *args, **kwargs))


def yielding(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """``items``, handing the interpreter's lock back every ``every`` of them (on the worker).

    A thread holding the lock keeps it until another has waited the switch interval (5 ms): the
    loop, which gives the lock up at each socket or SQLite call, would wait that long after each
    one while the worker computes. Handing it back every few items bounds that wait to their cost
    (~0.2 ms here)."""
    for n, item in enumerate(items, 1):
        yield item
        if n % every == 0:
            time.sleep(0)
