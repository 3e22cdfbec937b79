"""When the embedded store's write-ahead logs are copied into its database files: in small steps.

A checkpoint copies every page written since the last one into the database file and syncs both
files. It runs on the event loop's thread (the store is used there only), so nothing else is
served meanwhile, and it costs in proportion to the pages written since the last one. SQLite's
own policy checkpoints inside the write that takes the log past 1000 pages: with jobs claimed and
ended, one request in about fifty was 4-15 ms slower; and the server's checkpoint of every file
each ``checkpoint_period`` seconds was a stall of its own. The engine now leaves checkpoints to the
server (p3s.embedded.WAL_PAGES), which every ``STEP`` seconds checkpoints at most one collection:
one whose changes are ``checkpoint_period`` old (the bound on what a power cut can lose, as
before), else the one with the most rows changed once they reach ``STEP_ROWS`` (about ten jobs
claimed and ended: 1-2 ms of work with 10^6 jobs).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

log = logging.getLogger("p3s.store")

STEP = 0.1            # seconds between steps
STEP_ROWS = 120       # rows changed in a collection that make its checkpoint due


class Checkpointer:
    """Chooses and runs the next checkpoint step over the stores ``stores()`` returns."""

    def __init__(self, stores: Callable[[], Iterable[Any]], period: float, rows: int = STEP_ROWS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stores = stores
        self.period = period
        self.rows = rows
        self.clock = clock
        self.steps = 0
        self._since: dict[int, float] = {}     # id(store) -> when its oldest unsynced change was seen

    def due(self) -> Any | None:
        """The store to checkpoint now, or None."""
        now = self.clock()
        best, rank = None, None
        for store in self.stores():
            changed = store.unsynced
            if changed <= 0:
                self._since.pop(id(store), None)
                continue
            overdue = now - self._since.setdefault(id(store), now) >= self.period
            if (overdue or changed >= self.rows) and (rank is None or (overdue, changed) > rank):
                best, rank = store, (overdue, changed)       # overdue ones first, then the most changed
        return best

    def step(self) -> bool:
        """Checkpoint the store that is due, if any; True if one was."""
        store = self.due()
        if store is None:
            return False
        try:
            store.checkpoint()
        except Exception as exc:      # a checkpoint is an optimisation of durability only
            log.warning("checkpoint failed: %s", exc)
            return False
        self._since.pop(id(store), None)
        self.steps += 1
        return True
