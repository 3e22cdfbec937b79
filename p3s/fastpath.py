"""Conditional writes by ``_id`` on the embedded engine without its query machinery.

On the embedded store (litemongo: mongomock over SQLite) a ``find_one_and_update`` runs a find
(query planner, cursor, copy, projection), then an update that finds the document again, copies it
whole to detect a change, and encodes it; 0.25-0.4 ms each, about 85 % of the server's work per
job. The writes on the hot paths (a job's claim and end, a pilot's contact) all name one document
by ``_id``, so this reads that one row, checks the rest of the filter, applies the update and
writes the row back: the same result in about a quarter of the time. The operators the hot paths
use (``$set``, ``$unset``, ``$inc``, ``$max``, ``$push`` with ``$each``/``$slice`` on plain
paths through sub-documents) are applied here; anything else by mongomock's own function. Values
are checked when the row is encoded, before anything is written. tests/test_fastpath.py holds the
results equal to the engine's.
This is safe only because the embedded store has one writer, the server's event-loop thread (see
``p3s.store``). On MongoDB and on the ``memory:`` engine the collection's own methods are called.
"""
from __future__ import annotations

import copy
import datetime as _dt
from numbers import Number
from typing import Any

from pymongo import ReturnDocument
from pymongo.results import UpdateResult


class ByIdCollection:
    """A collection whose ``find_one_and_update`` and ``update_one`` take the fast path when the
    filter names one ``_id`` and nothing else asks for more (sort, upsert, options)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        # Indexes are made when the store is opened, before any writer exists: a unique index
        # (which needs the engine's check) cannot appear later.
        self._fast = _is_embedded(collection) and not any(
            index.get("unique") for index in collection._store.indexes.values())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)

    def find_one_and_update(self, filter: dict, update: dict, projection: dict | None = None,
                            return_document: bool = ReturnDocument.BEFORE, **options: Any) -> dict | None:
        """As pymongo's."""
        if options or not self._takes(filter, update):
            return self.collection.find_one_and_update(filter, update, projection=projection,
                                                       return_document=return_document, **options)
        after = return_document is ReturnDocument.AFTER
        found = self._apply(filter, update, keep_before=None if after else (projection or {}))
        if found is None:
            return None
        before, doc = found
        if not after:
            return before
        return doc if projection is None else _project(self.collection, doc, projection)

    def update_one(self, filter: dict, update: dict, **options: Any) -> UpdateResult:
        """As pymongo's (``matched_count`` and ``modified_count`` are set)."""
        if options or not self._takes(filter, update):
            return self.collection.update_one(filter, update, **options)
        found = self._apply(filter, update, keep_before=None)
        matched = 0 if found is None else 1
        return UpdateResult({"n": matched, "nModified": matched, "upserted": None}, acknowledged=True)

    def _takes(self, filter: dict, update: dict) -> bool:
        return (self._fast and isinstance(filter.get("_id"), (str, int)) and not _has_operator_keys(filter)
                and not any(isinstance(fields, dict) and "_id" in fields for fields in update.values()))

    def _apply(self, filter: dict, update: dict, keep_before: dict | None) -> tuple[dict | None, dict] | None:
        """Read the row, check the filter, update, write the row; None when nothing matched.
        ``keep_before``: the projection of the document before to return ({} for all of it)."""
        from litemongo._vendor.mongomock import helpers
        from litemongo._vendor.mongomock.collection import validate_ok_for_update
        from litemongo._vendor.mongomock.filtering import filter_applies

        validate_ok_for_update(update)
        store = self.collection._store
        try:
            doc = store[filter["_id"]]            # a fresh dict decoded from the row: ours to change
        except KeyError:
            return None
        if _needs_datetime_patch(filter):
            filter = helpers.patch_datetime_awareness_in_document(filter)
        if not filter_applies(filter, doc):
            return None
        entries = getattr(store, "entries", None)
        indexed = entries(doc) if entries else None      # p3s.embedded: write only the changed entries
        before = None
        if keep_before is not None:
            before = _project(self.collection, doc, keep_before) if keep_before else copy.deepcopy(doc)
        if _needs_datetime_patch(update):
            update = helpers.patch_datetime_awareness_in_document(update)
        if not _apply_simple_update(doc, update):
            self.collection._apply_update_document(doc, filter, update, False)
        if entries:
            store.put(doc["_id"], doc, indexed)
        else:
            store[doc["_id"]] = doc
        return before, doc


def _project(collection: Any, doc: dict, projection: dict) -> dict:
    """A copy of ``doc`` projected: here for top-level fields included, else by the engine."""
    if any(value not in (1, True) or "." in key or key.startswith("$") for key, value in projection.items()):
        return collection._copy_only_fields(doc, dict(projection), dict)
    projected = {"_id": doc["_id"]}
    for key in projection:
        if key in doc:
            value = doc[key]
            projected[key] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
    return projected


_PLAIN = (str, int, float, bool, type(None))


def _needs_datetime_patch(value: Any) -> bool:
    """Whether a value holds a datetime MongoDB would store differently (aware, or below a ms)."""
    if isinstance(value, dict):
        return any(not isinstance(v, _PLAIN) and _needs_datetime_patch(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(not isinstance(v, _PLAIN) and _needs_datetime_patch(v) for v in value)
    if isinstance(value, _dt.datetime):
        return value.tzinfo is not None or value.microsecond % 1000 != 0
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def _parent(doc: dict, path: str, create: bool) -> tuple[dict, str] | None:
    """The sub-document holding the last part of a dotted ``path``, and that part; None when the
    path runs through something other than a sub-document (the engine's rules then apply)."""
    *parents, last = path.split(".")
    if not last or last.startswith("$"):
        return None
    for part in parents:
        if not part or part.startswith("$"):
            return None
        child = doc.get(part)
        if child is None and part not in doc:
            if not create:
                return doc, ""                  # nothing to unset below a missing field
            child = doc[part] = {}
        if not isinstance(child, dict):
            return None
        doc = child
    return doc, last


def _apply_simple_update(doc: dict, update: dict) -> bool:
    """Apply ``update`` to ``doc`` if it uses only the operators handled here; False (and ``doc``
    untouched) if not."""
    plan = []
    for op, fields in update.items():
        if op not in ("$set", "$unset", "$inc", "$max", "$push") or not isinstance(fields, dict):
            return False
        for path, value in fields.items():
            found = _parent(doc, path, create=False)
            if found is None:
                return False
            parent, key = found
            current = parent.get(key) if key else None
            if op in ("$inc", "$max") and (not _is_number(value) or (key in parent and not _is_number(current))):
                return False
            if op == "$push":
                if key in parent and not isinstance(current, list):
                    return False
                if isinstance(value, dict) and any(k.startswith("$") for k in value):
                    if set(value) - {"$each", "$slice"} or not isinstance(value.get("$each"), list) or \
                            not isinstance(value.get("$slice", 0), int):
                        return False
            plan.append((op, path, value))
    for op, path, value in plan:
        parent, key = _parent(doc, path, create=op != "$unset")
        if not key:
            continue
        if op == "$set":
            parent[key] = copy.deepcopy(value) if isinstance(value, (list, tuple)) else value
        elif op == "$unset":
            parent.pop(key, None)
        elif op == "$inc":
            parent[key] = parent.get(key, 0) + value
        elif op == "$max":
            parent[key] = max(parent.get(key, value), value)
        else:
            items = parent.setdefault(key, [])
            if isinstance(value, dict) and "$each" in value:
                items.extend(copy.deepcopy(value["$each"]))
                if "$slice" in value:
                    limit = value["$slice"]
                    parent[key] = items[limit:] if limit < 0 else items[:limit]
            else:
                items.append(copy.deepcopy(value))
    return True


def _has_operator_keys(filter: dict) -> bool:
    """Top-level ``$and``/``$or``/… make the filter more than one document's conditions."""
    return any(key.startswith("$") for key in filter)


def _is_embedded(collection: Any) -> bool:
    try:
        from litemongo.sqlite_store import CollectionStore
    except ImportError:
        return False
    return isinstance(getattr(collection, "_store", None), CollectionStore)
