"""The MongoDB wire-protocol server the suite's second pass runs against: nx-27017 over neosqlite,
with a test-only adapter for the deviations from MongoDB that p3s meets.

Run as ``python tests/wire_server.py --port N --data-dir DIR`` (ready when it answers a ping).
p3s's own pymongo code is unchanged: every workaround is here, on the server's side, and each one
names the MongoDB behaviour it restores. Nothing in p3s imports this module.

Known deviations left alone (p3s does not depend on them, so no test needs them):
- no type bracketing in comparisons (MongoDB compares only values of one BSON type class);
- one lock per database, so no concurrency anomaly can ever show (real MongoDB interleaves
  writes to different documents).
"""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

import mongomock
from neosqlite.collection import Collection
from neosqlite.collection.datetime_query_processor import DateTimeQueryProcessor
from neosqlite.collection.json_helpers import neosqlite_json_dumps
from neosqlite.collection.query_helper.update_operations import UpdateOperationsMixin
from neosqlite.sql_utils import quote_table_name
from nx_27017 import handler as nx_handler
from nx_27017.handler import NeoSQLiteHandler

# One scratch mongomock collection applies update documents (see _internal_update below).
_scratch_lock = threading.Lock()
_scratch = mongomock.MongoClient().scratch.docs


def conflicts(update: dict) -> str | None:
    """The first path two operators of ``update`` both touch (MongoDB refuses it with code 40)."""
    seen: list[str] = []
    for op, fields in update.items():
        if not op.startswith("$") or not isinstance(fields, dict):
            continue
        for path in fields:
            for other in seen:
                if path == other or path.startswith(other + ".") or other.startswith(path + "."):
                    return f"Updating the path '{path}' would create a conflict at '{other}'"
            seen.append(path)
    return None


def _apply_with_mongomock(original: dict, spec: dict, array_filters: Any) -> dict:
    with _scratch_lock:
        _scratch.delete_many({})
        doc = dict(original)
        key = doc.setdefault("_id", "__upsert__")
        _scratch.insert_one(doc)
        _scratch.update_one({"_id": key}, spec, array_filters=array_filters)
        after = _scratch.find_one({"_id": key})
        _scratch.delete_many({})
    if "_id" not in original:
        after.pop("_id", None)
    return after


def _internal_update(self: Any, doc_id: Any, update_spec: dict, original_doc: dict,
                     array_filters: Any = None, query_filter: Any = None) -> tuple[dict, bool]:
    """Restores MongoDB's typed updates: neosqlite's SQL translation stores a datetime given to
    ``$set`` as a string, a boolean as 1/0, and documents given to ``$push`` as JSON strings, and its
    Python fallback treats dotted ``$max``/``$inc``/``$unset`` paths as top-level keys. MongoDB
    stores every value with its BSON type at the dotted path, as mongomock does: the new document
    is computed by mongomock and written whole."""
    after = _apply_with_mongomock(original_doc, update_spec, array_filters)
    if doc_id != 0:      # 0: an upsert, which the caller inserts
        self.collection.db.execute(
            f"UPDATE {quote_table_name(self.collection.name)} SET data = ? WHERE id = ?",
            (neosqlite_json_dumps(after), self._get_integer_id_for_oid(doc_id)))
    return after, after != original_doc


UpdateOperationsMixin._internal_update = _internal_update

# Restores MongoDB's comparison of dates to the millisecond: neosqlite's SQL tier for a query that
# compares a datetime (``{"ts": {"$lt": cutoff}}``) compares the stored ISO text with the bound
# sqlite3 renders ("…T15:00:00.011000" against "… 15:00:00.600000"), so dates less than a second
# apart, or a date stored without a fraction, compare wrongly (retention found no event older than
# a cutoff 0.1 s ago). Its Python tier compares the datetimes themselves.
DateTimeQueryProcessor.is_kill_switch_enabled = lambda self: True

# The exception a find_one_and_* call raised on this thread (nx-27017 swallows it; see below).
_failure = threading.local()


def _recording(method: Any) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            _failure.exc = exc
            raise
    return call


for _name in ("find_one_and_update", "find_one_and_replace", "find_one_and_delete"):
    setattr(Collection, _name, _recording(getattr(Collection, _name)))


def _error(request_id: int, code: int, name: str, message: str) -> tuple[int, dict]:
    return request_id, {"ok": 0, "code": code, "codeName": name, "errmsg": message}


class AdaptedHandler(NeoSQLiteHandler):
    """nx-27017's command handler with the adapter's corrections."""

    reported_version: str | None = None     # --report-version: pose as another MongoDB version

    def handle_command(self, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = next((doc for kind, doc in msg["sections"] if kind == "body"), None) or {}
        payload = [doc for kind, doc in msg["sections"] if kind == "payload" and isinstance(doc, dict)]
        request_id = msg["request_id"]
        if "buildinfo" in body and "buildInfo" not in body:
            # MongoDB's command names are case-insensitive; pymongo's server_info() sends
            # "buildinfo", which nx-27017 answers without the version.
            body["buildInfo"] = body.pop("buildinfo")
        if "createIndexes" in body:
            for index in body.get("indexes") or []:
                key = index.get("key") or {}
                if "_id" in key and len(key) > 1:
                    # MongoDB indexes _id like any field; neosqlite keeps _id outside the JSON it
                    # indexes, and an index naming it breaks every later insert ("JSON path error
                    # near '_id'"). The index without _id orders the same rows (the ties aside).
                    index["key"] = {k: v for k, v in key.items() if k != "_id"}
        if "findAndModify" in body:
            problem = conflicts(body.get("update") or {})
            if problem:
                # MongoDB refuses two operators on one path (ConflictingUpdateOperators, code 40);
                # nx-27017 applies both.
                return _error(request_id, 40, "ConflictingUpdateOperators", problem)
            return self._find_and_modify(msg, body)
        if "update" in body:
            updates = body.get("updates") or next((p["updates"] for p in payload if "updates" in p), [])
            for index, statement in enumerate(updates):
                problem = conflicts(statement.get("u") or {})
                if problem:
                    # As above, reported the way MongoDB reports a failed statement: a write error.
                    return request_id, {"ok": 1, "n": 0, "nModified": 0, "writeErrors": [
                        {"index": index, "code": 40, "codeName": "ConflictingUpdateOperators", "errmsg": problem}]}
        if "aggregate" in body and (_groups_on_document(body.get("pipeline") or [])
                                    or any(_null_in_logic(stage.get("$match")) for stage in body.get("pipeline") or []
                                           if isinstance(stage, dict))):
            return self._aggregate_with_mongomock(request_id, body)
        if "find" in body and _null_in_logic(body.get("filter")):
            return self._find_with_mongomock(request_id, body)
        request_id, answer = super().handle_command(msg)
        if self.reported_version and "buildInfo" in body:
            answer = {**answer, "version": self.reported_version,
                      "versionArray": [int(p) for p in self.reported_version.split(".")] + [0]}
        return request_id, answer

    def _find_and_modify(self, msg: dict, body: dict) -> tuple[int, dict]:
        """Restores findAndModify's errors: nx-27017 answers "no match" (value null) for every
        exception, so a duplicate key looks like a lost race. MongoDB reports the error."""
        _failure.exc = None
        answer = super().handle_command(msg)
        exc, _failure.exc = _failure.exc, None
        if exc is None:
            return answer
        text = str(exc)
        if "unique constraint" in text.lower() or "duplicate key" in text.lower():
            return _error(msg["request_id"], 11000, "DuplicateKey", f"E11000 duplicate key error: {text}")
        return _error(msg["request_id"], 2, "BadValue", text)

    @nx_handler._serialize
    def _find_with_mongomock(self, request_id: int, body: dict) -> tuple[int, dict]:
        """Restores ``{field: null}`` within ``$and``/``$or`` (it matches a null or missing field):
        nx-27017 matches nothing there. The find runs in mongomock over the collection's documents."""
        db = self.get_database(body.get("$db", "test"))
        name = body["find"]
        docs = list(db[name].find({})) if name in db.list_collection_names() else []
        scratch = mongomock.MongoClient().db.c
        if docs:
            scratch.insert_many(docs)
        cursor = scratch.find(body.get("filter") or {}, body.get("projection") or None)
        if body.get("sort"):
            cursor = cursor.sort(list(body["sort"].items()))
        if body.get("skip"):
            cursor = cursor.skip(body["skip"])
        if body.get("limit"):
            cursor = cursor.limit(abs(body["limit"]))
        return request_id, {"ok": 1, "cursor": {"id": 0, "ns": f"{body.get('$db', 'test')}.{name}",
                                                 "firstBatch": list(cursor)}}

    @nx_handler._serialize
    def _aggregate_with_mongomock(self, request_id: int, body: dict) -> tuple[int, dict]:
        """Restores ``$group`` on a document key (``{_id: {s: "$state", t: "$jobtype"}}``), which
        nx-27017 answers with the literal text, and ``{field: null}`` within ``$and``/``$or`` in a
        ``$match`` (see _find_with_mongomock): the pipeline runs in mongomock over the documents."""
        db = self.get_database(body.get("$db", "test"))
        name = body["aggregate"]
        docs = list(db[name].find({})) if name in db.list_collection_names() else []
        scratch = mongomock.MongoClient().db.c
        if docs:
            scratch.insert_many(docs)
        rows = list(scratch.aggregate(body.get("pipeline") or []))
        return request_id, {"ok": 1, "cursor": {"id": 0, "ns": f"{body.get('$db', 'test')}.{name}",
                                                 "firstBatch": rows}}


def _null_in_logic(query: Any, inside: bool = False) -> bool:
    """Whether ``query`` has ``{field: None}`` within an ``$and``/``$or``/``$nor``."""
    if isinstance(query, dict):
        for key, value in query.items():
            if key in ("$and", "$or", "$nor") and isinstance(value, list):
                if any(_null_in_logic(part, True) for part in value):
                    return True
            elif inside and value is None:
                return True
        return False
    return False


def _groups_on_document(pipeline: list) -> bool:
    return any(isinstance(stage, dict) and isinstance(stage.get("$group", {}).get("_id"), dict)
               for stage in pipeline)


def main() -> None:
    from nx_27017.server import run_server_threaded

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--report-version", help="answer buildInfo with this version (tests of the check)")
    args = parser.parse_args()
    handler = AdaptedHandler(data_dir=args.data_dir)
    handler.reported_version = args.report_version
    run_server_threaded(args.host, args.port, handler, use_threading=False)


if __name__ == "__main__":
    sys.exit(main())
