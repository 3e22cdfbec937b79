"""The embedded store's engine: litemongo's SQLite files with persistent, ordered indexes.

litemongo keeps each collection as BSON rows in one SQLite file and plans queries through hash
indexes it rebuilds in memory from every document when a collection is first queried (5.5 s and
~500 MB per 10^5 jobs), and it cannot sort through them. Here the collection store keeps, in the
same file, a table ``ix`` with one row per (document, indexed path): the value's MongoDB type rank
and the value itself, keyed by document (a document's entries share a page) and indexed in the
order MongoDB sorts (path, type, value, ``_id``). It is written in the same SQLite
transaction as the document, so a kill -9 leaves both or neither. Nothing is rebuilt at start.

The paths indexed are those of the collection's declared indexes (p3s.models) and of p3s.indexes
(the columns list pages sort on, the housekeeping queries). A path indexed for the first time (a
data directory written before this engine, or a new index) is built once, at open, with a log line.

Queries keep mongomock's semantics exactly: the index only selects *candidates* (a superset of the
matches: values it cannot rank, such as arrays or sub-documents, are candidates of every query on
their path) and mongomock's ``filter_applies`` decides on each, as before. Only ``page`` answers
from the index alone, and only when every condition is one the index decides exactly (equality or
``$in`` of strings on a path holding no unrankable value) and the sort path holds only rankable
values; anything else goes the candidates' way. tests/test_embedded.py holds the answers equal to
plain mongomock's on the query shapes p3s uses.

Like litemongo, this is used on the server's event-loop thread only.
"""
from __future__ import annotations

import calendar
import collections
import contextlib
import functools
import datetime as _dt
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import bson
from litemongo import sqlite_store
from litemongo._vendor.mongomock import collection as _cursor
from litemongo._vendor.mongomock import filtering as _filtering
from litemongo._vendor.mongomock import indexing

log = logging.getLogger("p3s.store")

IX = "ix"
LAYOUT = "p3s-ix-1"       # the tables' layout: another one found at open is dropped and made again
IXC = "ixc"
# paths whose entries are also counted by value (few values each), so that a list's total is one read
COUNTED = frozenset({"state", "jobtype", "user", "kind", "severity", "site", "datatype", "template"})
COMPLEX = -1          # a value the index cannot rank: a candidate of every query on its path
NULL, NUMBER, STRING, BOOL, DATE = 0, 1, 2, 8, 9     # MongoDB's order of types (those ranked here)
_CHUNK = 500
_WALK = 100_000       # least steps a list page's walk of the sort order may take before sorting the matches
_WALK_FACTOR = 8      # ... or this many times the steps its page needs, were matches spread evenly
_PROBE = 5_000        # entries counted at most per clause to choose the one that drives a query
_EPOCH = _dt.datetime(1970, 1, 1)
_ONE_MS = _dt.timedelta(milliseconds=1)
_FEW = 30_000         # up to this many matches, a page sorts them all (bounded); beyond, it walks the sort order
_MS = 1000            # slack (ms) around a date in a query: stored dates are whole ms, queries may not be
# Pages the write-ahead log may hold before a write checkpoints it itself (SQLite's default is 1000,
# about 50 jobs claimed and ended: 4-15 ms added to one request in 50). The server checkpoints in
# small steps instead (p3s.checkpoints); this is the bound for any other user of the files.
WAL_PAGES = 20_000


def _next(self: Any) -> dict:
    """mongomock's ``Cursor.__next__`` without its copy of the remaining results at every step
    (``results[skip:][:limit][emitted]``, quadratic: 22 s for a cursor of 1.2x10^5 documents)."""
    results = self._compute_results()
    index = (self._skip or 0) + self._emitted
    if (self._limit and self._emitted >= abs(self._limit)) or not 0 <= index < len(results):
        raise StopIteration
    self._emitted += 1
    return results[index]


_cursor.Cursor.__next__ = _cursor.Cursor.next = _next
_plain_get_dataset = _cursor.Collection._get_dataset


def _get_dataset(self: Any, spec: Any, sort: Any, fields: Any, as_class: Any) -> Iterator[dict]:
    """mongomock's, telling the indexed store a one-key sort first: when it can, it hands the
    candidates over in that order (ties in natural order: the engine's stable sort), and they are
    streamed rather than sorted in memory (tests/test_embedded.py holds the orders equal)."""
    store = self._store
    if not isinstance(store, IndexedCollectionStore) or not sort or isinstance(sort, dict) or len(sort) != 1:
        yield from _plain_get_dataset(self, spec, sort, fields, as_class)
        return
    store._sort_hint = tuple(sort[0])
    store._sorted = False
    try:
        dataset = self._iter_documents(spec)        # the store plans now, reading the hint
    finally:
        store._sort_hint = None
    key, direction = sort[0]
    if store._sorted:
        pass                                        # already in the engine's order: streamed, not held
    elif key == "$natural":
        if direction < 0:
            dataset = iter(reversed(list(dataset)))
    elif key.startswith("$"):
        raise NotImplementedError(f"Sorting by {key} is not implemented in mongomock yet")
    else:
        dataset = iter(sorted(dataset, key=lambda x: _filtering.resolve_sort_key(key, x), reverse=direction < 0))
    for document in dataset:
        yield self._copy_only_fields(document, fields, as_class)


_cursor.Collection._get_dataset = _get_dataset


def _batched(name: str) -> None:
    """Make the engine's ``name`` (a write of many documents) one transaction on the indexed store."""
    plain = getattr(_cursor.Collection, name)

    @functools.wraps(plain)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        store = self._store
        if not isinstance(store, IndexedCollectionStore):
            return plain(self, *args, **kwargs)
        with store.batch():
            if name == "insert_many":
                ids = _insert_plain(self, store, *args, **kwargs)
                if ids is not None:
                    return _cursor.InsertManyResult(ids, acknowledged=True)
            return plain(self, *args, **kwargs)

    setattr(_cursor.Collection, name, method)


def _insert_plain(collection: Any, store: Any, documents: Any = None, ordered: bool = True,
                  bypass_document_validation: bool = False, session: Any = None) -> list | None:
    """p3s.fastinsert's insert of a non-empty list of plain documents; None: mongomock's way."""
    if session or not isinstance(documents, list) or not documents:
        return None
    from p3s import fastinsert
    return fastinsert.insert_many(collection, store, documents)


for _name in ("insert_many", "delete_many", "update_many"):
    _batched(_name)


def wanted_paths(collection: str, declared: Iterable[dict]) -> set[str]:
    """The paths to index for ``collection``: its declared indexes and p3s.indexes'."""
    from p3s import indexes

    paths = set(indexing.index_paths(declared))
    paths.update(indexes.SORTED_LISTS.get(collection, ()))
    for key in indexes.OTHER.get(collection, ()):
        paths.update(key)
    paths.discard("_id")
    return {p for p in paths if p and not p.startswith("$")}


def _epoch_ms(value: _dt.datetime) -> int:
    if value.tzinfo is None:
        return (value - _EPOCH) // _ONE_MS
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000


def _utf8(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:            # a lone surrogate: SQLite cannot hold it
        return False
    return True


def rank(value: Any) -> tuple[int, Any]:
    """(type rank, value as SQLite orders it) of one value, or (COMPLEX, None)."""
    cls = type(value)
    if cls is str:
        return (STRING, value) if _utf8(value) else (COMPLEX, None)
    if cls is _dt.datetime:
        return DATE, _epoch_ms(value)
    if value is None:
        return NULL, None
    if isinstance(value, bool):
        return BOOL, int(value)
    if isinstance(value, int):
        return (NUMBER, int(value)) if -2 ** 63 <= value < 2 ** 63 else (COMPLEX, None)
    if isinstance(value, float):
        return (COMPLEX, None) if math.isnan(value) else (NUMBER, float(value))
    if isinstance(value, str):
        return (STRING, str(value)) if _utf8(value) else (COMPLEX, None)
    if isinstance(value, _dt.datetime):
        return DATE, _epoch_ms(value)
    return COMPLEX, None


def entry(doc: dict, path: str) -> tuple[int, Any]:
    """The index entry of ``doc`` at a dotted ``path``: missing counts as null (as in a sort)."""
    if "." not in path:
        return rank(doc.get(path))
    value: Any = doc
    for part in path.split("."):
        if isinstance(value, dict):
            if part not in value:
                return NULL, None
            value = value[part]
        elif isinstance(value, (list, tuple)):
            return COMPLEX, None         # arrays have their own matching rules: never keyed
        else:
            return NULL, None
    return rank(value)


class _Clause:
    """A condition on one path, as SQL over the ``ix`` columns ``t`` and ``v`` of alias ``{a}``."""

    def __init__(self, path: str, sql: str, params: list, exact: bool) -> None:
        self.path, self.sql, self.params, self.exact = path, sql, params, exact


def _eq_sql(value: Any) -> tuple[str, list, bool] | None:
    """SQL selecting (a superset of) the entries equal to ``value``; exact only for strings."""
    if isinstance(value, str):
        t, v = rank(value)
        return (f"({{a}}.t = {STRING} AND {{a}}.v = ?)", [v], True) if t == STRING else None
    if isinstance(value, (bool, int, float)):
        t, v = rank(value)
        if t == COMPLEX:
            return None
        return f"({{a}}.t IN ({NUMBER}, {BOOL}) AND {{a}}.v = ?)", [v], False   # mongomock: True == 1
    if isinstance(value, _dt.datetime):
        ms = _epoch_ms(value)
        return f"({{a}}.t = {DATE} AND {{a}}.v BETWEEN ? AND ?)", [ms - _MS, ms + _MS], False
    if value is None:
        return f"({{a}}.t = {NULL})", [], False
    return None


def _range_sql(op: str, value: Any) -> tuple[str, list] | None:
    """SQL selecting (a superset of) the entries ``op`` ``value`` (type-bracketed, as mongomock)."""
    sign = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        t, v = rank(value)
        return (f"({{a}}.t = {STRING} AND {{a}}.v {sign} ?)", [v]) if t == STRING else None
    if isinstance(value, (int, float)):
        t, v = rank(value)
        return (f"({{a}}.t IN ({NUMBER}, {BOOL}) AND {{a}}.v {sign} ?)", [v]) if t == NUMBER else None
    if isinstance(value, _dt.datetime):
        ms = _epoch_ms(value) + (_MS if sign[0] == "<" else -_MS)
        return f"({{a}}.t = {DATE} AND {{a}}.v {sign} ?)", [ms]
    return None


_PLAIN_IN = (str, bool, int, float, _dt.datetime, type(None))


def _condition(path: str, condition: Any) -> list[_Clause] | None:
    """Clauses for ``{path: condition}``; None when the index cannot narrow it (the condition is
    then left wholly to mongomock's filter). All clauses returned hold together (AND)."""
    if isinstance(condition, dict):
        if not condition or not all(isinstance(k, str) and k.startswith("$") for k in condition):
            return None                                   # equality with a sub-document
        clauses: list[_Clause] = []
        exact_ops = True
        for op, value in condition.items():
            found = None
            if op == "$eq" and not isinstance(value, (dict, list, tuple)):
                eq = _eq_sql(value)
                if eq:
                    found = _Clause(path, *eq)
            elif op == "$in" and isinstance(value, (list, tuple)) and all(isinstance(x, _PLAIN_IN) for x in value):
                parts = [_eq_sql(x) for x in value]
                if all(parts):
                    strings = [p[1][0] for p in parts if p[2]]
                    others = [p for p in parts if not p[2]]
                    sql = [f"({{a}}.t = {STRING} AND {{a}}.v IN ({','.join('?' * len(strings))}))"] if strings else []
                    params = list(strings)
                    for part in others:
                        sql.append(part[0])
                        params.extend(part[1])
                    found = _Clause(path, "(" + " OR ".join(sql) + ")" if sql else "0", params, not others)
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                ranged = _range_sql(op, value)
                if ranged:
                    found = _Clause(path, ranged[0], ranged[1], False)
            elif op in ("$nin", "$ne"):
                values = value if op == "$nin" else [value]
                if isinstance(values, (list, tuple)) and values and all(isinstance(x, str) for x in values) \
                        and all(rank(x)[0] == STRING for x in values):
                    found = _Clause(path, f"NOT ({{a}}.t = {STRING} AND {{a}}.v IN ({','.join('?' * len(values))}))",
                                    list(values), False)
            if found is None:
                exact_ops = False
            else:
                clauses.append(found)
        if not exact_ops:
            for clause in clauses:
                clause.exact = False
        return clauses or None
    if isinstance(condition, (list, tuple, re.Pattern, bson.Regex)):
        return None
    eq = _eq_sql(condition)
    return [_Clause(path, *eq)] if eq else None


class IndexedCollectionStore(sqlite_store.CollectionStore):
    """litemongo's SQLite collection store, planning and sorting through persistent indexes."""

    def __init__(self, filename: Path, codec_options: bson.CodecOptions | None = None) -> None:
        self._paths: dict[str, int] = {}       # path -> its number in ``ix``
        self._counted: set[int] = set()        # numbers of the paths counted in ``ixc``
        self._sort_hint: tuple[str, int] | None = None     # set by _get_dataset while it plans
        self._batched = False                  # inside batch(): one transaction
        self._sorted = False                   # find_candidates answered the sort hint
        self._complex: dict[str, bool] = {}    # path -> holds an unrankable value (cached per write)
        super().__init__(filename, codec_options=codec_options)

    # --- schema and upkeep ---------------------------------------------------------------------
    def open(self) -> None:
        super().open()
        self._connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES}")
        self.checkpointed = self._connection.total_changes     # rows changed up to the last checkpoint
        with self._connection:
            row = self._connection.execute(f"SELECT value FROM {self.INFO} WHERE key = 'ix_layout'").fetchone()
            if row is None or row[0] != LAYOUT:                 # none yet, or another one: made again
                self._connection.execute(f"DROP TABLE IF EXISTS {IX}")
                self._connection.execute(f"DROP TABLE IF EXISTS {IXC}")
                self._connection.execute(f"DELETE FROM {self.INFO} WHERE key IN ('ix_paths', 'ix_counted')")
                self._connection.execute(f"INSERT OR REPLACE INTO {self.INFO} VALUES ('ix_layout', ?)", (LAYOUT,))
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS {IX}(p INTEGER, k, t INTEGER, v, "
                                     f"PRIMARY KEY (k, p)) WITHOUT ROWID")
            self._connection.execute(f"CREATE INDEX IF NOT EXISTS {IX}_order ON {IX}(p, t, v, k)")
            # how many documents hold each value of a counted path (v '' for null); p 0: all documents
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS {IXC}(p INTEGER, t INTEGER, v, n INTEGER, "
                                     f"PRIMARY KEY (p, t, v)) WITHOUT ROWID")
        row = self._connection.execute(f"SELECT value FROM {self.INFO} WHERE key = 'ix_paths'").fetchone()
        self._paths = json.loads(row[0]) if row else {}
        self._complex = {}
        self._sync_paths()

    def _sync_paths(self) -> None:
        """Index exactly the wanted paths: build new ones from the documents (once), drop old ones."""
        wanted = wanted_paths(self._path.name, self.indexes.values())
        self._counted = {self._paths[p] for p in COUNTED if p in self._paths}
        if wanted == set(self._paths):
            marker = json.dumps(sorted(COUNTED & set(self._paths)))
            stored = self._connection.execute(f"SELECT value FROM {self.INFO} WHERE key = 'ix_counted'").fetchone()
            if stored is None or stored[0] != marker:
                with self._connection:
                    self._recount(self._paths)
            return
        paths = {p: n for p, n in self._paths.items() if p in wanted}
        new = sorted(wanted - set(paths))
        number = max(self._paths.values(), default=0)
        for path in new:
            number += 1
            paths[path] = number
        count = len(self._documents)
        started = time.monotonic()
        if new and count:
            log.info("indexing %s of the embedded store's %s (%d documents): once", ", ".join(new),
                     self._path.name, count)
        with self._connection:
            for path, number in self._paths.items():
                if path not in paths:
                    self._connection.execute(f"DELETE FROM {IX} WHERE p = ?", (number,))
            if new and count:
                self._build(paths, new)
            self._connection.execute(f"INSERT OR REPLACE INTO {self.INFO} VALUES ('ix_paths', ?)",
                                     (json.dumps(paths),))
            self._recount(paths)
        self._paths = paths
        self._counted = {paths[p] for p in COUNTED if p in paths}
        self._complex = {}
        if new and count:
            log.info("indexed %s in %.1f s", self._path.name, time.monotonic() - started)

    def _build(self, paths: dict[str, int], new: list[str]) -> None:
        """Write the entries of ``new`` paths for every document (in the caller's transaction):
        the ordered index is dropped meanwhile and made again in one sorted pass."""
        self._connection.execute("PRAGMA cache_size = -262144")
        self._connection.execute(f"DROP INDEX IF EXISTS {IX}_order")
        codec = self._codec_options
        insert = f"INSERT OR REPLACE INTO {IX}(p, k, t, v) VALUES (?, ?, ?, ?)"
        rows = []
        # in key order: each path's entries are then appended, not scattered through the B-tree
        for key, blob in self._connection.execute(f"SELECT {self.ID}, {self.DOC} FROM {self.DOCUMENTS} "
                                                  f"ORDER BY {self.ID}"):
            doc = bson.decode(blob, codec_options=codec)
            rows.extend((paths[path], key, *entry(doc, path)) for path in new)
            if len(rows) >= 50_000:
                self._connection.executemany(insert, rows)
                rows = []
        self._connection.executemany(insert, rows)
        self._connection.execute(f"CREATE INDEX {IX}_order ON {IX}(p, t, v, k)")
        self._connection.execute("PRAGMA cache_size = -2000")

    def _recount(self, paths: dict[str, int]) -> None:
        """Count the documents by value of every counted path, and all of them (p 0), from scratch."""
        self._connection.execute(f"INSERT OR REPLACE INTO {self.INFO} VALUES ('ix_counted', ?)",
                                 (json.dumps(sorted(COUNTED & set(paths))),))
        self._connection.execute(f"DELETE FROM {IXC}")
        self._connection.execute(f"INSERT INTO {IXC} SELECT 0, 0, '', count(*) FROM {self.DOCUMENTS}")
        for path in sorted(COUNTED & set(paths)):
            self._connection.execute(f"INSERT INTO {IXC} SELECT p, t, coalesce(v, ''), count(*) FROM {IX} "
                                     f"WHERE p = ? GROUP BY p, t, v", (paths[path],))

    def _count(self, rows: list) -> None:
        """Apply (p, t, v, +1/-1) to the counts."""
        self._connection.executemany(
            f"INSERT INTO {IXC} VALUES (?, ?, coalesce(?, ''), ?) ON CONFLICT(p, t, v) DO UPDATE SET n = n + excluded.n",
            rows)

    def _write_rows(self, rows: list) -> None:
        self._connection.executemany(
            f"INSERT INTO {IX}(p, k, t, v) VALUES (?, ?, ?, ?) ON CONFLICT(k, p) DO UPDATE "
            f"SET t = excluded.t, v = excluded.v WHERE t IS NOT excluded.t OR v IS NOT excluded.v", rows)

    def create_index(self, index_name: str, index_dict: dict) -> None:
        super().create_index(index_name, index_dict)
        self._sync_paths()

    def drop_index(self, index_name: str) -> None:
        super().drop_index(index_name)
        self._sync_paths()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One SQLite transaction for many writes (``insert_many``, ``delete_many``…): each write
        still holds with its index entries or not at all, and what was written is committed at
        the end even if a write fails (as those calls keep the documents written before an error)."""
        if self._batched:
            yield
            return
        self._connection.commit()
        self._connection.execute("BEGIN")
        self._batched = True
        try:
            yield
        finally:
            self._batched = False
            self._connection.commit()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write: its own transaction, or a savepoint inside a batch."""
        if not self._batched:
            with self._connection:
                yield
            return
        self._connection.execute("SAVEPOINT p3s_write")
        try:
            yield
        except BaseException:
            self._connection.execute("ROLLBACK TO p3s_write")
            self._connection.execute("RELEASE p3s_write")
            raise
        self._connection.execute("RELEASE p3s_write")

    def entries(self, doc: dict) -> dict[str, tuple[int, Any]]:
        """The index entries of ``doc`` (to pass to ``put`` after changing it)."""
        return {path: entry(doc, path) for path in self._paths}

    def __setitem__(self, key: Any, val: dict) -> None:
        self.put(key, val)

    def put(self, key: Any, val: dict, before: dict[str, tuple[int, Any]] | None = None) -> None:
        """Write a document and its index entries in one transaction. ``before``: the entries of
        the stored document it replaces (``entries``); else they are read from the index. Only the
        changed entries are written."""
        encoded = self._documents.encode_key(key)
        blob = self._documents._encode_doc(val)              # fails before anything is written
        with self._transaction():
            if before is None:
                before = self._stored_entries(encoded)
                if not before and self._paths:
                    self._count([(0, 0, "", 1)])          # a new document
            rows, counts = [], []
            for path, number in self._paths.items():
                t, v = entry(val, path)
                if t == COMPLEX:
                    self._complex[path] = True
                elif self._complex.get(path):
                    del self._complex[path]          # it may have held the last one: asked again
                old = before.get(path)
                if old is None or old != (t, v) or type(old[1]) is not type(v):
                    rows.append((number, encoded, t, v))
                    if number in self._counted:
                        counts.append((number, t, v, 1))
                        if old is not None:
                            counts.append((number, old[0], old[1], -1))
            self._cur.execute(f"INSERT INTO {self.DOCUMENTS} VALUES (?, ?) ON CONFLICT({self.ID}) "
                              f"DO UPDATE SET {self.DOC} = excluded.{self.DOC}", (encoded, blob))
            if rows:
                self._write_rows(rows)
            if counts:
                self._count(counts)

    def _stored_entries(self, encoded: str) -> dict[str, tuple[int, Any]]:
        names = {number: path for path, number in self._paths.items()}
        found = self._connection.execute(f"SELECT p, t, v FROM {IX} WHERE k = ?", (encoded,))
        return {names[p]: (t, v) for p, t, v in found if p in names}

    def __delitem__(self, key: Any) -> None:
        encoded = self._documents.encode_key(key)
        with self._transaction():
            deleted = self._cur.execute(f"DELETE FROM {self.DOCUMENTS} WHERE {self.ID} = ?", (encoded,)).rowcount
            if deleted > 0 and self._paths:
                before = self._stored_entries(encoded)
                self._count([(0, 0, "", -1)] + [(self._paths[path], t, v, -1) for path, (t, v) in before.items()
                                                if self._paths[path] in self._counted])
                self._connection.execute(f"DELETE FROM {IX} WHERE k = ?", (encoded,))
        self._complex = {path: held for path, held in self._complex.items() if not held}
        if deleted <= 0:
            raise KeyError(encoded)

    def drop(self) -> None:
        super().drop()
        with self._connection:
            self._connection.execute(f"DELETE FROM {IX}")
            self._connection.execute(f"DELETE FROM {IXC}")
        self._paths = {}
        self._complex = {}
        self._sync_paths()

    def copy_from(self, source: Any) -> None:
        super().copy_from(source)
        with self._connection:
            self._connection.execute(f"DELETE FROM {IX}")
            self._connection.execute(f"DELETE FROM {self.INFO} WHERE key = 'ix_paths'")
        self._paths = {}
        self._complex = {}
        self._sync_paths()

    @property
    def unsynced(self) -> int:
        """Rows changed since the last checkpoint (a measure of the pages it will copy)."""
        return self._connection.total_changes - self.checkpointed if self._connection is not None else 0

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file, syncing both (SQLite's PASSIVE mode)."""
        changes = self._connection.total_changes
        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.checkpointed = changes

    def _get_query_index(self) -> Any:
        raise NotImplementedError("the indexed store plans through SQLite (p3s.embedded)")

    # --- planning ------------------------------------------------------------------------------
    def _has_complex(self, path: str) -> bool:
        if path not in self._complex:
            self._complex[path] = self._connection.execute(
                f"SELECT 1 FROM {IX} WHERE p = ? AND t = ? LIMIT 1", (self._paths[path], COMPLEX)).fetchone() is not None
        return self._complex[path]

    def _clauses(self, filter: Any) -> tuple[list[_Clause], bool]:
        """The index clauses of a filter (all must hold), and whether they decide it exactly."""
        if not isinstance(filter, dict):
            return [], False
        clauses: list[_Clause] = []
        exact = True
        for field, condition in filter.items():
            if field == "$and" and isinstance(condition, (list, tuple)):
                for sub in condition:
                    found, sub_exact = self._clauses(sub)
                    clauses.extend(found)
                    exact = exact and sub_exact
                continue
            found = _condition(field, condition) if field in self._paths else None
            if found is None:
                exact = False
                continue
            for clause in found:
                if self._has_complex(field):
                    clause.sql = f"({clause.sql} OR {{a}}.t = {COMPLEX})"
                    clause.exact = False
                exact = exact and clause.exact
            clauses.extend(found)
        return clauses, exact and bool(clauses)

    def _exists(self, clauses: list[_Clause], outer: str) -> tuple[str, list]:
        sql, params = [], []
        for n, clause in enumerate(clauses):
            alias = f"c{n}"
            sql.append(f"EXISTS (SELECT 1 FROM {IX} {alias} WHERE {alias}.p = ? AND {alias}.k = {outer}.k "
                       f"AND {clause.sql.format(a=alias)})")
            params.extend([self._paths[clause.path], *clause.params])
        return " AND ".join(sql), params

    def _fewest_first(self, clauses: list[_Clause]) -> list[_Clause]:
        """The clauses, the one matching fewest entries first (counted up to a bound): it drives."""
        if len(clauses) < 2:
            return clauses
        sizes = []
        for clause in clauses:
            row = self._connection.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {IX} a WHERE a.p = ? AND {clause.sql.format(a='a')} LIMIT ?)",
                [self._paths[clause.path], *clause.params, _PROBE]).fetchone()
            sizes.append(row[0])
        return [clause for _, _, clause in sorted(zip(sizes, range(len(clauses)), clauses))]

    def _where(self, clauses: list[_Clause]) -> tuple[str, list]:
        """SQL selecting the index entries ``a`` of the first clause's path that match it, and whose
        documents match every other clause; with its parameters."""
        first, rest = clauses[0], clauses[1:]
        where = f"a.p = ? AND {first.sql.format(a='a')}"
        params = [self._paths[first.path], *first.params]
        if rest:
            more, more_params = self._exists(rest, "a")
            where += " AND " + more
            params += more_params
        return where, params

    def _candidate_keys(self, clauses: list[_Clause]) -> Iterator[str]:
        where, params = self._where(clauses)
        for row in self._connection.execute(f"SELECT a.k FROM {IX} a WHERE {where}", params):
            yield row[0]

    def _id_keys(self, condition: Any) -> list[str] | None:
        """The stored keys an ``_id`` condition can match, when it names scalars (else None)."""
        if isinstance(condition, dict):
            if set(condition) == {"$eq"}:
                values = [condition["$eq"]]
            elif set(condition) == {"$in"} and isinstance(condition["$in"], (list, tuple)):
                values = list(condition["$in"])
            else:
                return None
        else:
            values = [condition]
        legacy = self._documents.key_format == sqlite_store.KEY_FORMAT_LEGACY
        keys = []
        for value in values:
            if isinstance(value, (str, bson.ObjectId)):
                keys.append(self._documents.encode_key(value))
            elif not legacy and isinstance(value, (bool, int, float)) and not (isinstance(value, float)
                                                                               and math.isnan(value)):
                keys.append(self._documents.encode_key(value))
                if value in (0, 1):               # mongomock's equality holds True == 1
                    keys.append(self._documents.encode_key(bool(value)))
                    keys.append(self._documents.encode_key(int(value)))
            else:
                return None
        return keys

    def find_candidates(self, filter: Any) -> Iterator[dict]:  # noqa: A002 - mongomock's name
        """The documents, in natural order, that may match ``filter`` (mongomock decides)."""
        self._remove_expired_documents()
        if isinstance(filter, dict) and "_id" in filter:
            keys = self._id_keys(filter["_id"])
            if keys is not None:
                return self._docs_by_keys(keys)
        clauses, _ = self._clauses(filter)
        if not clauses:
            return self.documents
        order = None
        if self._sort_hint and self._sort_hint[0] in self._paths and not self._has_complex(self._sort_hint[0]):
            order = (self._paths[self._sort_hint[0]], self._sort_hint[1] < 0)
            self._sorted = True
        return self._docs_by_keys(self._candidate_keys(self._fewest_first(clauses)), order)

    def _docs_by_keys(self, keys: Iterable[str], order: tuple[int, bool] | None = None) -> Iterator[dict]:
        """The documents of ``keys`` in natural (rowid) order, or sorted on the entries of path
        number ``order[0]`` (descending if ``order[1]``), ties in natural order."""
        found: list[tuple] = []
        chunk: list[str] = []

        def flush() -> None:
            marks = ",".join("?" * len(chunk))
            if order is None:
                found.extend(self._connection.execute(
                    f"SELECT ROWID, {self.ID} FROM {self.DOCUMENTS} WHERE {self.ID} IN ({marks})", chunk).fetchall())
            else:
                found.extend(self._connection.execute(
                    f"SELECT d.ROWID, d.{self.ID}, s.t, s.v FROM {self.DOCUMENTS} d JOIN {IX} s "
                    f"ON s.k = d.{self.ID} AND s.p = ? WHERE d.{self.ID} IN ({marks})", [order[0], *chunk]).fetchall())
            chunk.clear()

        for key in dict.fromkeys(keys):
            chunk.append(key)
            if len(chunk) >= _CHUNK:
                flush()
        if chunk:
            flush()
        found.sort()
        if order is not None:
            found.sort(key=lambda row: (row[2], row[3]), reverse=order[1])     # stable: ties stay natural
        codec = self._codec_options
        for start in range(0, len(found), _CHUNK):
            rowids = [row[0] for row in found[start:start + _CHUNK]]
            blobs = dict(self._connection.execute(
                f"SELECT ROWID, {self.DOC} FROM {self.DOCUMENTS} WHERE ROWID IN ({','.join('?' * len(rowids))})",
                rowids).fetchall())
            for rowid in rowids:
                if rowid in blobs:
                    yield bson.decode(blobs[rowid], codec_options=codec)

    # --- list pages ----------------------------------------------------------------------------
    def _only_string_ids(self) -> bool:
        if self._documents.key_format != sqlite_store.KEY_FORMAT_TYPED:
            return False
        other = self._connection.execute(
            f"SELECT 1 FROM {self.DOCUMENTS} WHERE {self.ID} < 's:' OR {self.ID} >= 's;' LIMIT 1").fetchone()
        return other is None

    def _counted_total(self, clause: _Clause) -> int | None:
        """How many documents an exact clause matches, from the counts (None if not counted)."""
        if not clause.exact or self._paths[clause.path] not in self._counted:
            return None
        if not clause.params:
            return 0
        values = list(dict.fromkeys(clause.params))       # $in may name a value twice
        row = self._connection.execute(
            f"SELECT sum(n) FROM {IXC} WHERE p = ? AND t = {STRING} AND v IN ({','.join('?' * len(values))})",
            [self._paths[clause.path], *values]).fetchone()
        return row[0] or 0

    def page(self, filter: dict, field: str, descending: bool, offset: int,
             limit: int) -> tuple[list[str], int] | None:
        """The ``_id`` of one page of the documents matching ``filter`` sorted by ``field`` then
        ``_id`` (both the same way), and how many match; None when the index cannot decide it alone."""
        if field not in self._paths or self._has_complex(field) or not self._only_string_ids():
            return None
        if filter:
            clauses, exact = self._clauses(filter)
            if not exact:
                return None
        else:
            clauses = []
        sort = self._paths[field]
        if clauses:
            counts = [self._counted_total(clause) for clause in clauses]
            if all(n is not None for n in counts):
                clauses = [c for _, c in sorted(zip(counts, clauses), key=lambda pair: pair[0])]   # fewest first
                counts.sort()
            else:
                clauses = self._fewest_first(clauses)
                counts = [self._counted_total(clause) for clause in clauses]
            where, params_where = self._where(clauses)
            if len(clauses) == 1 and counts[0] is not None:
                total = counts[0]
            else:
                total = self._connection.execute(f"SELECT count(*) FROM {IX} a WHERE {where}",
                                                 params_where).fetchone()[0]
        else:
            total = self._connection.execute(f"SELECT n FROM {IXC} WHERE p = 0").fetchone()[0]
        if total == 0 or limit <= 0 or offset >= total:
            return [], total
        direction = "DESC" if descending else "ASC"
        order = f"ORDER BY s.t {direction}, s.v {direction}, s.k {direction}"
        size = self._connection.execute(f"SELECT max(ROWID) FROM {self.DOCUMENTS}").fetchone()[0] or total
        if not clauses:
            rows = self._connection.execute(f"SELECT s.k FROM {IX} s INDEXED BY {IX}_order WHERE s.p = ? {order} "
                                            f"LIMIT ? OFFSET ?", [sort, limit, offset]).fetchall()
            return [row[0][2:] for row in rows], total
        wanted = offset + limit
        if total > _FEW and wanted * size <= 4 * total * total:
            # dense matches: walk the sort order, checking each document's conditions, for a
            # bounded number of steps (matches may all sit at the far end)
            exists, params = self._exists(clauses, "s")
            walk = self._connection.execute(
                f"SELECT s.k, {exists} FROM {IX} s INDEXED BY {IX}_order WHERE s.p = ? {order}", [*params, sort])
            budget = max(_WALK, _WALK_FACTOR * wanted * size // total)
            keys: list[str] = []
            for steps, (key, matches) in enumerate(walk, 1):
                if matches:
                    keys.append(key)
                    if len(keys) >= wanted:
                        break
                if steps >= budget:
                    break
            else:
                return [key[2:] for key in keys[offset:]], total
            walk.close()
            if len(keys) >= wanted:
                return [key[2:] for key in keys[offset:]], total
        # few matches (or a walk that found too few): take them, then their sort values
        rows = self._connection.execute(
            f"SELECT s.k FROM {IX} a CROSS JOIN {IX} s WHERE {where} AND s.p = ? AND s.k = a.k {order} LIMIT ? OFFSET ?",
            [*params_where, sort, limit, offset]).fetchall()
        return [row[0][2:] for row in rows], total


class IndexedDatabaseStore(sqlite_store.DatabaseStore):
    def __getitem__(self, col_name: str) -> IndexedCollectionStore:
        if col_name not in self._collections:
            self._collections[col_name] = IndexedCollectionStore(self._dirpath / col_name,
                                                                 codec_options=self._codec_options)
        return self._collections[col_name]


class IndexedServerStore(sqlite_store.ServerStore):
    def __getitem__(self, db_name: str) -> IndexedDatabaseStore:
        if db_name not in self._databases:
            self._databases[db_name] = IndexedDatabaseStore(self._dirpath / db_name)
        return self._databases[db_name]


def indexed(collection: Any) -> bool:
    """Whether ``collection`` (a pymongo-like collection) is one of this engine's."""
    return isinstance(getattr(collection, "_store", None), IndexedCollectionStore)


def transaction(collection: Any) -> contextlib.AbstractContextManager:
    """Many writes to ``collection`` in one SQLite transaction on this engine (each still whole or
    not at all: ``IndexedCollectionStore.batch``); elsewhere nothing (each write its own)."""
    return collection._store.batch() if indexed(collection) else contextlib.nullcontext()


def group_counts(collection: Any, first: str, second: str) -> collections.Counter | None:
    """How many documents hold each pair of values at paths ``first`` and ``second`` (a missing
    value counts as None), read from the index alone: one pass in SQLite, no document decoded
    (a walk of 10^6 jobs took ~5 s). None when the index cannot say: not this engine, a path not
    indexed, or a value other than a string or null at either path."""
    if not indexed(collection):
        return None
    store = collection._store
    if first not in store._paths or second not in store._paths:
        return None
    rows = store._connection.execute(
        f"SELECT a.t, a.v, b.t, b.v, count(*) FROM {IX} a INDEXED BY {IX}_order JOIN {IX} b "
        f"ON b.k = a.k AND b.p = ? WHERE a.p = ? GROUP BY a.t, a.v, b.t, b.v",
        (store._paths[second], store._paths[first])).fetchall()
    counts: collections.Counter = collections.Counter()
    for t1, v1, t2, v2, n in rows:
        if t1 not in (NULL, STRING) or t2 not in (NULL, STRING):
            return None
        counts[(v1, v2)] += n
    total = store._connection.execute(f"SELECT n FROM {IXC} WHERE p = 0").fetchone()
    if total is None or sum(counts.values()) != total[0]:
        return None                            # every document has an entry at each path: else not trusted
    return counts


def client_class(path: Path) -> type:
    """A litemongo client class over the indexed store in ``path`` (mongoengine makes the client)."""
    import litemongo

    class IndexedClient(litemongo.MongoClient):
        """litemongo client that ignores the host mongoengine passes and opens ``path``."""

        def __init__(self, host: Any = None, port: Any = None, **kwargs: Any) -> None:
            super().__init__(IndexedServerStore(path), **kwargs)

    return IndexedClient
