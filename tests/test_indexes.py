"""Every list page's sort is served by an index on MongoDB (p3s.indexes), and the indexes exist."""
from __future__ import annotations

import pytest

from conftest import TEST_DB
from p3s import indexes
from p3s.server.base import ApiHandler
from p3s.server.handlers import ROUTES


def _list_handlers() -> dict[str, type]:
    found = {}
    for route in ROUTES:
        pattern, handler = route[0], route[1]
        if getattr(handler, "sortable", ()) and isinstance(handler, type) and issubclass(handler, ApiHandler):
            found[pattern.strip("/").split("/")[0]] = handler
    return found


def test_every_sortable_column_has_a_sort_index():
    handlers = _list_handlers()
    assert set(handlers) == set(indexes.SORTED_LISTS)
    for collection, handler in handlers.items():
        assert set(handler.sortable) <= set(indexes.SORTED_LISTS[collection]), collection


@pytest.mark.skipif(not TEST_DB, reason="the sort indexes are made on MongoDB only (P3S_TEST_DB)")
def test_the_server_creates_them_on_mongodb(server):
    import pymongo

    client = pymongo.MongoClient(server.db)
    try:
        database = client.get_default_database()
        for collection, columns in indexes.SORTED_LISTS.items():
            leading = {next(iter(ix["key"])) for ix in database[collection].list_indexes()}
            for column in columns:
                # by the leading key: the wire server drops _id from compound keys (tests/wire_server.py)
                # and names indexes itself
                assert column in leading, (collection, column)
    finally:
        client.close()


def test_a_mongodb_older_than_5_is_refused_with_a_clear_error(tmp_path):
    import subprocess
    import sys

    from conftest import REPO, WireServer

    wire = WireServer("--report-version", "4.4.18").start()
    try:
        result = subprocess.run([sys.executable, "-m", "p3s.cli.server", "--data-dir", str(tmp_path), "--port", "0",
                                 "--db", f"{wire.uri}/p3s_old"], capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        wire.stop()
    assert result.returncode == 2
    assert "MongoDB 4.4.18" in result.stderr and "5.0 or newer" in result.stderr
