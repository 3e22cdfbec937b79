"""Connecting to the database: the embedded store or a real MongoDB.

The embedded store is litemongo (mongomock's query engine over one SQLite file per collection,
kept in ``<data_dir>/db``) with persistent, ordered indexes in each file (p3s.embedded). Every write is a SQLite transaction in write-ahead-log mode, so a killed
server process loses nothing it acknowledged; the log is synced to disk every
``checkpoint_period`` seconds, which bounds what a machine crash or power cut can lose. litemongo,
like mongomock, is not safe across threads (its ``modify`` is find-then-update with no lock), so
the server makes every database call on its event-loop thread, and the data directory is locked
against a second server process.

``memory:`` selects a plain in-memory mongomock database (nothing kept; for benchmarks).
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mongoengine as me

from p3s import embedded, indexes, models

log = logging.getLogger("p3s.store")
MIN_MONGODB = (5, 0)     # the oldest MongoDB p3s supports (see check_version)


class StoreError(Exception):
    """The database could not be opened; the message says why."""


def private_tree(data_dir: Path) -> None:
    """Make the data directory 0700 and what it holds 0700 (directories) or 0600 (files): it holds
    every job's environment. Files the server makes later are private through its umask (077)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(data_dir, 0o700)
        for root, dirs, files in os.walk(data_dir):
            for name in dirs + files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o700 if name in dirs else 0o600)
    except OSError as exc:
        raise StoreError(f"cannot make {data_dir} private: {exc.strerror}") from None


class DataDirLock:
    """An exclusive lock on a data directory, held for the life of the server process."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "server.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"data directory {self.path.parent} is in use by another p3s-server (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """The open database: which kind it is, and housekeeping the embedded store needs."""

    def __init__(self, uri: str, data_dir: Path, db_name: str) -> None:
        self.uri = uri
        self.data_dir = data_dir
        self.db_name = db_name
        self.embedded = not uri.startswith(("mongodb://", "mongodb+srv://"))
        self.shared = not self.embedded     # another server process may write the same database
        self._lock: DataDirLock | None = None
        self._client: Any = None

    @property
    def description(self) -> str:
        if self.uri == "memory:":
            return "in-memory mongomock (nothing kept)"
        if self.embedded:
            return f"embedded store in {self.data_dir / 'db'}"
        parsed = urlparse(self.uri)
        return f"MongoDB at {parsed.hostname}:{parsed.port or 27017}/{self.db_name}"

    def open(self) -> None:
        """Connect mongoengine's default alias and create the indexes."""
        me.disconnect_all()
        if self.uri == "memory:":
            import mongomock

            me.connect(db=self.db_name, host="mongodb://localhost", mongo_client_class=mongomock.MongoClient,
                       uuidRepresentation="standard")
        elif self.embedded:
            if self.uri:
                raise StoreError(f"unsupported database URI {self.uri!r}: use mongodb://… or leave it empty")
            private_tree(self.data_dir)
            self._lock = DataDirLock(self.data_dir)
            self._lock.acquire()
            me.connect(db=self.db_name, host="mongodb://localhost",
                       mongo_client_class=embedded.client_class(self.data_dir / "db"),
                       uuidRepresentation="standard")
        else:
            parsed = urlparse(self.uri)
            if parsed.path.strip("/"):
                self.db_name = parsed.path.strip("/").split("?")[0]
            # Every call has bounded waits (server selection, connecting, an answer), so a database
            # that fails over or stops answering shows as an error after seconds, never a hang.
            me.connect(db=self.db_name, host=self.uri, uuidRepresentation="standard",
                       serverSelectionTimeoutMS=5000, connectTimeoutMS=5000, socketTimeoutMS=20000,
                       tz_aware=False)
        self._client = me.get_connection()
        try:
            if not self.embedded:
                self.check_version()
            models.ensure_indexes()
            if not self.embedded:
                indexes.ensure(self._client[self.db_name])
        except StoreError:
            self.close()
            raise
        except Exception as exc:  # pymongo raises ServerSelectionTimeoutError and friends
            self.close()
            raise StoreError(f"cannot use {self.description}: {exc}") from None

    def check_version(self) -> None:
        """Refuse a MongoDB older than MIN_MONGODB: p3s stores user-chosen keys (usage, metadata,
        vertex names) that may hold ``.`` or ``$``, which MongoDB accepts only from 5.0 on."""
        version = str(self._client.server_info().get("version", "0"))
        numbers = tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:2])
        if numbers < MIN_MONGODB:
            wanted = ".".join(map(str, MIN_MONGODB))
            raise StoreError(f"{self.description} runs MongoDB {version}; p3s needs MongoDB {wanted} or newer "
                             f"(field names with '.' or '$')")

    def collection_stores(self) -> list[Any]:
        """The embedded engine's open collection stores (p3s.embedded; none elsewhere)."""
        store = getattr(self._client, "_store", None)
        return [collection for database in list(getattr(store, "_databases", {}).values())
                for collection in list(getattr(database, "_collections", {}).values())
                if isinstance(collection, embedded.IndexedCollectionStore) and collection._connection is not None]

    def checkpoint(self) -> None:
        """Sync the embedded store's write-ahead logs to disk, every collection's (no-op elsewhere).
        The server checkpoints in small steps meanwhile (p3s.checkpoints)."""
        for collection in self.collection_stores():
            try:
                collection.checkpoint()
            except Exception as exc:  # a checkpoint is an optimisation of durability only
                log.warning("checkpoint failed: %s", exc)

    def drop(self) -> None:
        """Drop the whole database (tests against a shared MongoDB)."""
        self._client.drop_database(self.db_name)

    def close(self) -> None:
        if self._client is not None:
            self.checkpoint()
            me.disconnect_all()
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None
        if self._lock:
            self._lock.release()
            self._lock = None
