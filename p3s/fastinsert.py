"""``insert_many`` of plain documents on the embedded engine without mongomock's per-document machinery.

mongomock inserts a list one document at a time: it checks the keys, encodes the document to BSON
(a check only), asks the store whether the ``_id`` exists (a SELECT), copies the whole document to
make its datetimes MongoDB's (naive UTC, whole milliseconds), and the store encodes the copy again
and writes it with its index entries; about 0.1 ms per job of a bulk creation, most of its cost.

Here each document is encoded once and the rows (documents, index entries, counts) are written with
one ``executemany`` each, under one savepoint. The stored bytes are those of mongomock's path: BSON
keeps datetimes in whole UTC milliseconds, so encoding the document or its patched copy gives the
same bytes (the index entries are computed the same way from either); tuples and mappings encode as
their patched list and dict would. Whatever might differ goes mongomock's way instead: a document
that is not a plain ``dict`` with an ``_id`` of type str, int or ObjectId, a top-level ``$`` key,
any BSON error, a BSON Timestamp (mongomock replaces an empty one), a unique index (mongomock
checks it by a query), different codec options. A duplicate ``_id`` (stored, or twice in the list)
rolls the savepoint back and the whole call goes mongomock's way, so its error (``BulkWriteError``
with ``nInserted``, documents before the duplicate kept) is exactly mongomock's.
tests/test_embedded.py holds the stored collections and errors equal to the generic path's.

The work is split so that only the database calls need the event-loop thread: ``layout`` reads
what the rows depend on from the store (on the loop), ``prepare`` computes the rows from that
alone (any thread: p3s.jobs builds a bulk creation's rows off the loop), ``write`` writes them
(on the loop, like every use of the engine) unless the store's layout changed meanwhile.
"""
from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import bson
from bson import ObjectId, Timestamp

_KEY_TYPES = (str, int, ObjectId)
# An empty Timestamp (which mongomock replaces by the current one) is a name's NUL and 8 zero bytes;
# only documents holding 9 zero bytes in a row (a 0.0, a 64-bit 0...) are searched for one.
_EMPTY_VALUE = b"\x00" * 9


def _encoded(codec: Any, doc: Any) -> bytes | None:
    """The BSON of ``doc`` when it can be inserted here, else None (mongomock's way then)."""
    if type(doc) is not dict or type(doc.get("_id")) not in _KEY_TYPES:
        return None
    for key in doc:
        if type(key) is not str or key.startswith("$"):
            return None
    try:
        blob = bson.encode(doc, codec_options=codec)
    except Exception:                 # mongomock raises its own error for it
        return None
    if _EMPTY_VALUE in blob and _has_timestamp(doc):
        return None
    return blob


def _has_timestamp(value: Any) -> bool:
    """Whether ``value`` holds a BSON Timestamp where mongomock's datetime patch looks for one."""
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, (dict, list, tuple)):
            if _has_timestamp(item):
                return True
        elif isinstance(item, Timestamp):
            return True
    return False


def _order(row: tuple) -> tuple:
    """An index row (p, k, t, v) by the ordered index's key (p, t, v, k); one type per (p, t)."""
    number, key, t, v = row
    return number, t, 0 if v is None else v, key


@dataclass(frozen=True)
class Layout:
    """What computing a collection's rows needs of its store, read on the loop: the rows are then
    computed anywhere (``prepare``), and written on the loop only if the store still has it."""
    codec: Any
    paths: tuple[tuple[str, int], ...]          # (path, its number in the index)
    counted: frozenset[int]
    key_format: int

    def current(self, store: Any) -> bool:
        return self == _layout(store)


@dataclass
class Rows:
    """A list of documents as the store's rows, ready for ``write``."""
    ids: list
    docs: list[tuple[str, bytes]]
    index: list[tuple]                          # sorted in the ordered index's order
    counts: Counter
    complex_paths: set[str]


def store_of(collection: Any) -> Any:
    """The indexed embedded store of ``collection``, or None (MongoDB, plain mongomock)."""
    from p3s.embedded import IndexedCollectionStore
    store = getattr(collection, "_store", None)
    return store if isinstance(store, IndexedCollectionStore) else None


def _layout(store: Any) -> Layout | None:
    if any(index.get("unique") for index in store.indexes.values()):
        return None                                 # mongomock checks those by a query
    return Layout(store._codec_options, tuple(store._paths.items()), frozenset(store._counted),
                  store._documents.key_format)


def layout(collection: Any) -> Layout | None:
    """The layout of ``collection``'s embedded store (on the loop), or None when its inserts must
    go mongomock's way (or it is not the embedded store)."""
    store = store_of(collection)
    if store is None:
        return None
    checked = collection._codec_options           # mongomock's own class: as its check encodes with it
    checked = checked.to_pymongo() if hasattr(checked, "to_pymongo") else checked
    if checked != store._codec_options:
        return None
    return _layout(store)


def prepare(layout: Layout, documents: Iterable) -> Rows | None:
    """The rows of ``documents`` (a pure computation: any thread), or None when one of them must
    go mongomock's way."""
    from litemongo.sqlite_store import KEY_FORMAT_LEGACY, _encode_key_legacy, _encode_key_typed

    from p3s.embedded import COMPLEX, entry
    encode_key = _encode_key_legacy if layout.key_format == KEY_FORMAT_LEGACY else _encode_key_typed
    codec, paths, counted = layout.codec, layout.paths, layout.counted
    ids, docs, rows, counts, complex_paths = [], [], [], Counter(), set()
    for doc in documents:
        blob = _encoded(codec, doc)
        if blob is None:
            return None
        key = encode_key(doc["_id"])
        ids.append(doc["_id"])
        docs.append((key, blob))
        for path, number in paths:
            t, v = entry(doc, path)
            if t == COMPLEX:
                complex_paths.add(path)
            rows.append((number, key, t, v))
            if number in counted:
                counts[(number, t, "" if v is None else v, type(v))] += 1
    # in the ordered index's order: each of its pages is then visited once, in turn
    rows.sort(key=_order)
    return Rows(ids, docs, rows, counts, complex_paths)


def write(store: Any, layout: Layout, rows: Rows | None) -> list | None:
    """Write prepared ``rows`` (on the loop), all or none; their ids, or None when nothing was
    written: no rows (``prepare`` said mongomock's way), the store's layout changed since, or an
    ``_id`` is taken (mongomock's path must then say which, exactly)."""
    if rows is None or store is None or not layout.current(store):
        return None
    connection = store._connection
    with store.batch():
        try:
            with store._transaction():          # a savepoint inside the batch: rolled back on any error
                connection.executemany(f"INSERT INTO {store.DOCUMENTS} VALUES (?, ?)", rows.docs)
                if rows.index:
                    store._write_rows(rows.index)
                if layout.paths:
                    store._count([(0, 0, "", len(rows.docs))] +
                                 [(p, t, v, n) for (p, t, v, _), n in rows.counts.items()])
        except sqlite3.IntegrityError:       # a duplicate _id
            return None
    for name, _number in layout.paths:
        if name in rows.complex_paths:
            store._complex[name] = True
        elif store._complex.get(name):
            del store._complex[name]
    return rows.ids


def insert_many(collection: Any, store: Any, documents: Any) -> list | None:
    """Insert ``documents`` (already checked by the caller to be a non-empty list) into the
    indexed ``store`` of ``collection``, all or none; their ids, or None when mongomock's path
    must do it (nothing written then)."""
    shape = layout(collection)
    if shape is None:
        return None
    rows = prepare(shape, documents)
    return None if rows is None else write(store, shape, rows)
