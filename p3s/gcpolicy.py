"""Garbage collection that does not stall the event loop.

CPython's full (generation-2) collection walks every tracked object. With tens of thousands of
jobs held in memory (the broker's ready queue, the listeners' figures; before p3s.embedded, also
the store's cached documents) that was up to a million objects and 60-170 ms during which the loop
answers nobody; a bulk create or delete allocates enough to trigger several. The objects that
survive are long-lived and hold no reference cycles (plain dicts, freed by reference counting), so
the server moves what survives into the permanent generation (``gc.freeze``), which collections
skip: after loading at start, and now and then during bulk operations (from ``slices.pause``).

The price: an object alive at a freeze that later becomes part of a reference cycle is kept until
the server restarts. A freeze follows a young-generation collection, so only what is in use at
that moment (the requests in flight during a bulk operation) can be kept that way.
"""
from __future__ import annotations

import gc
import time

EVERY = 0.5          # seconds: at most this often during bulk operations
_last = 0.0
_freezes = 0                     # freezes done by this process
_counted: tuple[int, int] = (-1, 0)  # (freezes done, objects frozen) when last counted


def settle(force: bool = False) -> bool:
    """Collect the young generations, then freeze what survived (at most every EVERY seconds
    unless ``force``). Returns whether it did."""
    global _last, _freezes
    now = time.monotonic()
    if not force and now - _last < EVERY:
        return False
    _last = now
    gc.collect(1)
    gc.freeze()
    _freezes += 1
    return True


def summary() -> dict:
    """Objects kept out of the full collections, and how many full collections ran. The count
    is taken again only after a freeze: ``gc.get_freeze_count`` walks every frozen object (5 ms
    of the loop per /summary with 10^4 jobs ready, polled by monitors and scripts)."""
    global _counted
    if _counted[0] != _freezes:
        _counted = (_freezes, gc.get_freeze_count())
    return {"frozen": _counted[1], "full_collections": gc.get_stats()[2]["collections"]}
