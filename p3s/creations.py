"""A bulk creation is all or nothing, even when the server is killed in the middle of it.

A large creation is written in slices (p3s.slices) that let the event loop run, each its own
transaction, so a kill -9 between two slices would leave the first ones in. Before its first
slice, such a creation records the ids and seq range of its jobs here; it removes the record
once the last slice is in. At start, before anything is counted or queued, the server removes
the jobs of any record left (``undo_interrupted``): the request was never answered, so none of
its jobs may stay. A job is removed only if its seq is the creation's too, so a job another
request made under the same uuid is not, and only if no pilot holds it.

On a shared MongoDB another server may be in the middle of a creation: a server takes as
interrupted its own records (``owner``: its name among the servers, p3s.kept.owner, set at start)
and the others' only once older than ``ORPHAN_SECONDS`` (far longer than any creation takes).
"""
from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

from p3s import models, slices, states
from p3s.models import utcnow
from p3s.pilot import ids

log = logging.getLogger("p3s.creations")

COLLECTION = "creations"
ORPHAN_SECONDS = 600
_CHUNK = 500
owner = ""            # this server's name on a shared database (set at start); "" on the embedded store


def _collection() -> Any:
    return models.Job._get_db()[COLLECTION]


def begin(docs: list[dict]) -> str:
    """Record a creation about to be written in several transactions; returns its token."""
    token = ids.new()
    seqs = [doc.get("seq") for doc in docs]
    known = None not in seqs and all(isinstance(seq, int) for seq in seqs)
    job_ids = [doc["_id"] for doc in docs]
    if all(isinstance(i, str) and "\n" not in i for i in job_ids):
        job_ids = "\n".join(job_ids)     # one text: the embedded engine copies a list of thousands item by item
    _collection().insert_one({"_id": token, "ids": job_ids,
                              "seq": [min(seqs), max(seqs)] if known else None, "ts": utcnow(), "owner": owner})
    return token


def end(token: str) -> None:
    """The creation is all in (or all removed): forget it."""
    _collection().delete_one({"_id": token})


def undo_interrupted(jobs: Any, shared: bool) -> int:
    """Remove the jobs of creations a kill interrupted (at start, before counting); how many."""
    query: dict = {}
    if shared:
        old = {"ts": {"$lt": utcnow() - _dt.timedelta(seconds=ORPHAN_SECONDS)}}
        query = {"$or": [{"owner": owner}, old]} if owner else old
    removed = 0
    for record in list(_collection().find(query)):
        ours = {"seq": {"$gte": record["seq"][0], "$lte": record["seq"][1]}} if record.get("seq") else {}
        # a job a pilot already holds (another server of a shared database may have offered it) stays
        ours["state"] = {"$nin": sorted(states.JOB_ACTIVE)}
        job_ids = record["ids"].split("\n") if isinstance(record["ids"], str) else record["ids"]
        undone = 0
        for chunk in slices.chunks(job_ids, _CHUNK):
            undone += jobs.delete_many({"_id": {"$in": list(chunk)}, **ours}).deleted_count
        end(record["_id"])
        removed += undone
        log.warning("a creation of %d jobs was interrupted (the server stopped during it): "
                    "removed the %d of its jobs written", len(job_ids), undone)
    return removed
