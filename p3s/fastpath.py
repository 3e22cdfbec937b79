"""Conditional writes by ``_id`` on the embedded engine without its query machinery.

On the embedded store (litemongo: mongomock over SQLite) a ``find_one_and_update`` runs a find
(query planner, cursor, copy, projection), then an update that finds the document again, copies it
whole to detect a change, and encodes it; 0.25-0.4 ms each, about 85 % of the server's work per
job. The writes on the hot paths (a job's claim and end, a pilot's contact) all name one document
by ``_id``, so this reads that one row, checks the rest of the filter and applies the update with
mongomock's own functions, and writes the row back: the same result in about a quarter of the time.
This is safe only because the embedded store has one writer, the server's event-loop thread (see
``p3s.store``). On MongoDB and on the ``memory:`` engine the collection's own methods are called.
"""
from __future__ import annotations

import copy
from typing import Any

from pymongo import ReturnDocument
from pymongo.results import UpdateResult


class ByIdCollection:
    """A collection whose ``find_one_and_update`` and ``update_one`` take the fast path when the
    filter names one ``_id`` and nothing else asks for more (sort, upsert, options)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self._fast = _is_embedded(collection)

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
        return doc if projection is None else self.collection._copy_only_fields(doc, dict(projection), dict)

    def update_one(self, filter: dict, update: dict, **options: Any) -> UpdateResult:
        """As pymongo's (``matched_count`` and ``modified_count`` are set)."""
        if options or not self._takes(filter, update):
            return self.collection.update_one(filter, update, **options)
        found = self._apply(filter, update, keep_before=None)
        matched = 0 if found is None else 1
        return UpdateResult({"n": matched, "nModified": matched, "upserted": None}, acknowledged=True)

    def _takes(self, filter: dict, update: dict) -> bool:
        return (self._fast and isinstance(filter.get("_id"), (str, int)) and not _has_operator_keys(filter)
                and not any(isinstance(fields, dict) and "_id" in fields for fields in update.values())
                and not any(index.get("unique") for index in self.collection._store.indexes.values()))

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
        if not filter_applies(helpers.patch_datetime_awareness_in_document(filter), doc):
            return None
        before = None
        if keep_before is not None:
            before = self.collection._copy_only_fields(doc, dict(keep_before), dict) if keep_before \
                else copy.deepcopy(doc)
        self.collection._apply_update_document(doc, filter, helpers.patch_datetime_awareness_in_document(update),
                                               False)
        store[doc["_id"]] = doc
        return before, doc


def _has_operator_keys(filter: dict) -> bool:
    """Top-level ``$and``/``$or``/… make the filter more than one document's conditions."""
    return any(key.startswith("$") for key in filter)


def _is_embedded(collection: Any) -> bool:
    try:
        from litemongo.sqlite_store import CollectionStore
    except ImportError:
        return False
    return isinstance(getattr(collection, "_store", None), CollectionStore)
