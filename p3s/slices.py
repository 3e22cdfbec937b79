"""Long operations in slices: the server is one event loop, so a bulk operation (creating,
deleting, killing thousands of jobs) does a slice of its work, lets every other request and timer
run, and goes on. Each slice is a set of conditional writes that stand on their own, so what a
pause lets happen meanwhile (a claim, an end) is never overwritten.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Iterator, Sequence, TypeVar

from p3s import embedded, gcpolicy

T = TypeVar("T")
SLICE = 50           # documents written per slice (an insert costs the embedded store ~0.2-0.4 ms each)
INSERT_SLICE = 100   # new jobs inserted per slice (p3s.fastinsert): each slice's commit costs ~2-5 ms, twice fewer than at 50
PREPARED_SLICE = 250  # new jobs written per slice from rows computed off the loop (p3s.jobs): ~0.03 ms each
DELETE_SLICE = 25    # a delete by a list of ids costs the embedded engine O(slice²): kept small
SCAN = 250           # documents read between pauses


async def pause() -> None:
    """Let the event loop run whatever is ready before going on (and keep what the bulk operation
    made so far out of the full garbage collections, see p3s.gcpolicy)."""
    gcpolicy.settle()
    await asyncio.sleep(0)


def finished(count: int) -> None:
    """A bulk operation over ``count`` documents ended: keep what it left out of the full
    collections now, not at the next pause of some later operation."""
    if count > SLICE:
        gcpolicy.settle(force=True)


def chunks(items: Sequence[T], size: int = SLICE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def among(ids: Sequence, query: dict) -> dict:
    """The filter for the documents of ``ids`` that still match ``query`` (an empty ``query``
    adds no ``$and``: a wire-protocol server over SQL refused ``{"$and": [{}]}``)."""
    return {"_id": {"$in": list(ids)}, "$and": [query]} if query else {"_id": {"$in": list(ids)}}


async def scan(collection: Any, query: dict, projection: dict | None = None) -> AsyncIterator[dict]:
    """The documents matching ``query``, read with pauses every SCAN documents.

    On the embedded store the engine's own lazy iteration is used (a find() there filters every
    document before returning the first; it returns whole documents); on MongoDB the cursor
    fetches in batches anyway (``projection``: the fields it returns, default the id only).
    """
    lazy = getattr(collection, "_iter_documents", None)
    if lazy is not None:
        docs = lazy(query)
    else:
        docs = collection.find(query, projection or {"_id": 1}).batch_size(SCAN)
    for count, doc in enumerate(docs, 1):
        yield doc
        if count % SCAN == 0:
            await pause()


async def scan_holding(collection: Any, path: str, values: Sequence[str], also: dict | None = None,
                       projection: dict | None = None, share: float = 1.0,
                       batch_size: int = SCAN) -> AsyncIterator[dict]:
    """The documents whose ``path`` holds one of the string ``values``, with pauses every
    ``batch_size`` documents. On the embedded store they are read from its index a batch at a time
    (p3s.embedded.holding), so no pause waits for all of them to be read first, and the further
    conditions ``also`` are left to the caller; elsewhere the database applies them too.
    ``share`` < 1: a background task's, which rests between batches so as to take at most that
    share of the loop's time (what the caller does with each document included)."""
    if embedded.holds_only_ranked(collection, path):
        for value in values:
            batches = embedded.holding(collection, path, value, batch_size)
            while True:
                started = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                for doc in batch:
                    yield doc
                await pause()
                if share < 1.0:
                    await asyncio.sleep((time.perf_counter() - started) * (1.0 - share) / share)
        return
    async for doc in scan(collection, {path: {"$in": list(values)}, **(also or {})}, projection):
        yield doc


async def scan_ids(collection: Any, query: dict) -> list:
    """The ids of the documents matching ``query``, read with pauses every SCAN documents."""
    return [doc["_id"] async for doc in scan(collection, query)]
