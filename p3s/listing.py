"""One page of a sorted list (``GET /jobs`` and the other lists) and the total that matches.

On MongoDB this is a sorted, skipped, limited cursor and a count. On the embedded store the page
comes from its persistent indexes when they decide the filter exactly (p3s.embedded: equality or
``$in`` of strings, sorted on an indexed column): one count and one walk of an SQLite B-tree,
whatever the collection's size. Otherwise the engine's candidates for the filter are read once
with only the sort field, sorted with a native key in MongoDB's type order, and only the page's
documents are read whole (the engine's own cursor sorts whole documents with a Python comparison
per pair, ~70 µs per match). tests/test_listing.py and tests/test_embedded.py hold the pages equal.
"""
from __future__ import annotations

import datetime as _dt
from numbers import Number
from typing import Any

from p3s.fastpath import _is_embedded, _project


def _rank(value: Any) -> tuple:
    """A sort key in MongoDB's order of types: null, numbers, strings, objects, arrays, booleans, dates."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, Number):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, _dt.datetime):
        return (9, value)
    raise TypeError(f"no native sort key for {type(value).__name__}")


def _matching(collection: Any, query: dict, field: str) -> list[tuple[Any, Any]]:
    """(_id, value of ``field``) of every document matching ``query``: the engine's candidates
    (p3s.embedded) and its filter, without its cursor and the copies of its projection."""
    from litemongo._vendor.mongomock.filtering import filter_applies

    query = _patched(query)
    documents = collection._store.find_candidates(query)
    return [(doc["_id"], doc.get(field)) for doc in documents if filter_applies(query, doc)]


def _patched(query: dict) -> dict:
    from litemongo._vendor.mongomock import helpers
    from litemongo._vendor.mongomock.filtering import filter_applies

    query = helpers.patch_datetime_awareness_in_document(query)
    filter_applies(query, {})                      # a malformed filter fails here, as in find
    return query


def page(collection: Any, query: dict, projection: dict | None, field: str, descending: bool,
         offset: int, limit: int) -> tuple[list[dict], int]:
    """The documents of one page sorted by ``field`` (then ``_id``, in the same direction, so that
    the MongoDB index ``{field: 1, _id: 1}`` serves it either way: p3s.indexes), and the number matching."""
    order = [(field, -1 if descending else 1), ("_id", -1 if descending else 1)]
    if _is_embedded(collection) and "." not in field:
        indexed = getattr(collection._store, "page", None)
        found_page = indexed and indexed(_patched(query), field, descending, offset, limit)
        if found_page:
            ids, total = found_page
            docs = collection._store._documents.get_many(ids)       # in the order of ids
            return [doc if projection is None else _project(collection, doc, projection) for doc in docs], total
        keys = _matching(collection, query, field)
        try:
            keys.sort(key=lambda d: _rank(d[0]), reverse=descending)
            keys.sort(key=lambda d: _rank(d[1]), reverse=descending)
        except TypeError:
            pass                                   # unusual values: the engine's own sort below
        else:
            ids = [d[0] for d in keys[offset:offset + limit]]
            found = {d["_id"]: d for d in collection.find({"_id": {"$in": ids}}, projection)}
            return [found[i] for i in ids if i in found], len(keys)
    cursor = collection.find(query, projection).sort(order).skip(offset).limit(limit)
    return list(cursor), collection.count_documents(query)
