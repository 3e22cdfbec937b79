"""The indexes a MongoDB needs beyond those the models declare (p3s.models): one per sortable
column of each list page, and those of the multi-server housekeeping.

A list page sorts on ``[(column, d), ("_id", d)]`` (``_id`` is the unique tie-break, in the same
direction), so an index ``{column: 1, _id: 1}`` serves it either way round without an in-memory
sort. The embedded store indexes the same columns its own way (p3s.embedded reads these tables):
one ordered entry per document and column, with ``_id`` as the tie-break.

The README's "Running on MongoDB" has the review table: each query the server makes, and its index.
"""
from __future__ import annotations

from typing import Any

# collection -> the columns its list page may sort on (p3s.server.handlers, the ``sortable`` tuples)
SORTED_LISTS: dict[str, tuple[str, ...]] = {
    "jobs": ("ts_def", "ts_dis", "ts_sta", "ts_sto", "priority", "state", "jobtype", "name", "user", "seq"),
    "pilots": ("ts_reg", "ts_lhb", "state", "host", "site", "njobs"),
    "data": ("ts_reg", "ts_upd", "name", "state", "datatype", "size"),
    "events": ("ts", "kind", "severity"),
    "workflows": ("ts_def", "ts_sta", "ts_sto", "state", "name", "template"),
}

# collection -> compound indexes of other queries (beyond the models' own)
OTHER: dict[str, list[tuple[str, ...]]] = {
    "jobs": [("state", "ts_sta"),              # the reaper's re-read of running jobs' deadlines
             ("state", "ts_dis"),              # the reaper's dispatched jobs never started
             ("state", "ts_sto")],             # p3s.failures: the errors view's failed jobs, newest first
    "pilots": [("ts_stop", "_id")],            # retention: the oldest ended pilots first
    "jobtype_slots": [("holds.t",)],           # the repair of slots left by a killed server
    "freshness": [("updated",)],               # p3s.freshshare: the minutes changed since the last read
    "stats": [("saved",)],                     # p3s.kept: the other servers' minutes saved since the last read
}


def sort_index(column: str) -> list[tuple[str, int]]:
    return [(column, 1), ("_id", 1)]


def ensure(database: Any) -> None:
    """Create the indexes above (idempotent)."""
    for collection, columns in SORTED_LISTS.items():
        for column in columns:
            database[collection].create_index(sort_index(column), name=f"sort_{column}")
    for collection, keys in OTHER.items():
        for key in keys:
            database[collection].create_index([(k, 1) for k in key], name="_".join(key))
