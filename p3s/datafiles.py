"""Registering and deleting many data-file records at once, in slices that let the event loop run
(p3s.slices): a list of tens of thousands of records fits in one body, and the embedded engine
deletes by a list of ids in O(list²).
"""
from __future__ import annotations

from typing import Any, Callable

from p3s import models, schema, slices
from p3s.errors import ApiError
from p3s.models import utcnow
from p3s.pilot.ids import new as new_id     # time-ordered: appended to the store's indexes

MAX_PER_REQUEST = 10000      # records in one POST, as for jobs


async def create(items: list, listed: bool, owner: str, check_datatype: Callable[[str, str], None]) -> list[dict]:
    """Validate and insert ``items`` (a body's list, or its one object when not ``listed``): all of
    them, or none (422 naming the first bad field; what was inserted is removed on an error)."""
    if len(items) > MAX_PER_REQUEST:
        raise ApiError(413, f"at most {MAX_PER_REQUEST} data files per request, got {len(items)}")
    now = utcnow()
    docs: list[dict] = []
    known: set[str] = set()
    for i, item in enumerate(items):
        where = f"[{i}]" if listed else ""
        clean = schema.DATA_CREATE.validate(item, where)
        if clean["datatype"] not in known:
            check_datatype(clean["datatype"], f"{where}.datatype" if where else "datatype")
            known.add(clean["datatype"])
        docs.append({"_id": new_id(), **clean, "owner": owner, "workflow": None, "datatag": None,
                     "source": None, "target": None, "source_job": None, "target_job": None, "ts_reg": now,
                     "ts_upd": now, "arrived": clean["arrived"] or now})
        if i % slices.SLICE == slices.SLICE - 1:
            await slices.pause()
    collection = models.DataFile._get_collection()
    tried: list[Any] = []           # fresh uuids: removing one that did not go in touches nothing
    try:
        for chunk in slices.chunks(docs):
            tried += [d["_id"] for d in chunk]
            collection.insert_many(list(chunk), ordered=True)
            await slices.pause()
    except BaseException:
        for part in slices.chunks(tried, slices.DELETE_SLICE):
            collection.delete_many({"_id": {"$in": list(part)}})
        raise
    slices.finished(len(docs))
    return docs


async def delete(query: dict) -> list:
    """Delete the records matching ``query``, in slices; return their ids."""
    collection = models.DataFile._get_collection()
    ids = await slices.scan_ids(collection, query)
    deleted: list = []
    for chunk in slices.chunks(ids, slices.DELETE_SLICE):
        result = collection.delete_many(slices.among(chunk, query))
        if getattr(result, "deleted_count", len(chunk)) == len(chunk):
            deleted += chunk
        else:       # changed or deleted meanwhile: report only what this request deleted
            still = {d["_id"] for d in collection.find({"_id": {"$in": list(chunk)}}, {"_id": 1})}
            deleted += [i for i in chunk if i not in still]
        await slices.pause()
    slices.finished(len(ids))
    return deleted
