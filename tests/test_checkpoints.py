"""The embedded store's write-ahead log: checkpoints (p3s.checkpoints) never inside a write, in
small steps from the server, the most changed collection first, none left waiting past
``checkpoint_period``; and the pilots' contacts written in one transaction (fewer pages to copy)."""
from __future__ import annotations

import sqlite3

import mongoengine as me
import pytest

from p3s import embedded
from p3s.checkpoints import Checkpointer
from p3s.store import Database


@pytest.fixture
def database(tmp_path):
    database = Database("", tmp_path / "data", "p3s")
    database.open()
    yield database
    database.close()


def _job(i: int) -> dict:
    return {"_id": f"job-{i:05d}", "state": "defined", "jobtype": "reco", "seq": i, "name": f"n{i}", "user": "u"}


def _in_database_file(store: embedded.IndexedCollectionStore, key: str) -> bool:
    """Whether the database file itself (not its write-ahead log) holds document ``key``."""
    connection = sqlite3.connect(f"file:{store._path}?mode=ro&immutable=1", uri=True)
    try:
        return connection.execute("SELECT 1 FROM documents WHERE _id = ?", ("s:" + key,)).fetchone() is not None
    finally:
        connection.close()


def _log_frames(store: embedded.IndexedCollectionStore) -> int:
    """Pages in the write-ahead log (the checkpoint this asks for copies them, and says how many)."""
    return store._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


def test_a_write_never_checkpoints_the_log_itself(database):
    """SQLite's default checkpointed inside the write that took the log past 1000 pages: one
    request in about fifty paid for copying them all."""
    jobs = me.get_db()["jobs"]
    store = jobs._store
    store.checkpoint()
    for i in range(400):                      # one transaction each, as the server's writes
        jobs.insert_one(_job(i))
    assert _log_frames(store) > 1000          # every page written is still in the log


def test_steps_checkpoint_the_most_changed_collection_first_and_none_past_the_period(database):
    now = [0.0]
    jobs, events = me.get_db()["jobs"], me.get_db()["events"]
    events.insert_one({"_id": "e0", "kind": "note"})
    for i in range(60):
        jobs.insert_one(_job(i))
    stores = {store._path.name: store for store in database.collection_stores()}
    for store in stores.values():
        store.checkpoint()
    checkpointer = Checkpointer(database.collection_stores, period=2.0, rows=100, clock=lambda: now[0])

    events.insert_one({"_id": "e1", "kind": "note"})
    jobs.update_one({"_id": "job-00001"}, {"$set": {"state": "dispatched"}})
    assert checkpointer.due() is None                          # a few rows, just written: no step yet
    for i in range(60, 120):
        jobs.insert_one(_job(i))
    assert stores["jobs"].unsynced >= 100 > stores["events"].unsynced > 0
    assert not _in_database_file(stores["jobs"], "job-00119")

    assert checkpointer.step()                                 # jobs: past the rows of a step
    assert _in_database_file(stores["jobs"], "job-00119")
    assert stores["jobs"].unsynced == 0
    assert not _in_database_file(stores["events"], "e1")
    assert not checkpointer.step()                             # events: few rows, not yet overdue

    now[0] = 2.0                                               # events' change is checkpoint_period old
    for i in range(120, 240):
        jobs.insert_one(_job(i))                               # jobs is due again, but events waited longer
    assert checkpointer.due() is stores["events"]
    assert checkpointer.step()
    assert _in_database_file(stores["events"], "e1")
    assert checkpointer.step()
    assert _in_database_file(stores["jobs"], "job-00239")
    assert not checkpointer.step()
    assert checkpointer.steps == 3


def test_a_database_closed_after_steps_holds_everything(tmp_path, database):
    jobs = me.get_db()["jobs"]
    checkpointer = Checkpointer(database.collection_stores, period=60.0, rows=50)
    for i in range(30):
        jobs.insert_one(_job(i))
        checkpointer.step()
    store = jobs._store
    database.close()
    assert _in_database_file(store, "job-00029")
    database.open()
    assert me.get_db()["jobs"].count_documents({"state": "defined"}) == 30


def test_a_flush_of_the_pilots_contacts_is_one_transaction(database):
    """Each pilot's contact was its own commit: 100 pilots, 100 commits of the same few pages in
    one loop callback every 2 s (~10 ms), and as many pages for the next checkpoint to copy."""
    from p3s.broker import PilotInfo
    from p3s.contacts import Contacts
    from p3s.lifecycle import Lifecycle
    from p3s.pilots import Registry

    pilots = me.get_db()["pilots"]
    pilots.insert_many([{"_id": f"p{i}", "state": "idle", "host": f"h{i}", "site": "s", "njobs": 0}
                        for i in range(40)])
    contacts = Contacts(Lifecycle(), Registry())
    for i in range(40):
        contacts.note(PilotInfo(f"p{i}", f"h{i}", "s", frozenset(), "idle", 0.0, job=f"j{i}"), usage={"rss": i})
    store = pilots._store
    store.checkpoint()
    assert contacts.flush() == 40
    assert [d["job"] for d in pilots.find({}, {"job": 1})] == [f"j{i}" for i in range(40)]
    assert pilots.count_documents({"state": "running"}) == 40
    assert _log_frames(store) < 40            # the pages changed, once each: not one commit per pilot
