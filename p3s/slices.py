"""Long operations in slices: the server is one event loop, so a bulk operation (creating,
deleting, killing thousands of jobs) does a slice of its work, lets every other request and timer
run, and goes on. Each slice is a set of conditional writes that stand on their own, so what a
pause lets happen meanwhile (a claim, an end) is never overwritten.
"""
from __future__ import annotations

import asyncio
from typing import Any, Iterator, Sequence, TypeVar

from p3s import gcpolicy

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


async def scan_ids(collection: Any, query: dict) -> list:
    """The ids of the documents matching ``query``, read with pauses every SCAN documents.

    On the embedded store the engine's own lazy iteration is used (a find() there filters every
    document before returning the first); on MongoDB the cursor fetches in batches anyway.
    """
    lazy = getattr(collection, "_iter_documents", None)
    if lazy is not None:
        docs = lazy(query)
    else:
        docs = collection.find(query, {"_id": 1}).batch_size(SCAN)
    ids = []
    for doc in docs:
        ids.append(doc["_id"])
        if len(ids) % SCAN == 0:
            await pause()
    return ids
