"""Archive files: what retention removes from the database, as gzip-compressed JSON lines by day.

``<data_dir>/archive/<kind>/<YYYY-MM-DD>.jsonl.gz`` holds one document per line in MongoDB's
relaxed extended JSON (dates as ``{"$date": "…Z"}``), so ``zcat FILE | jq`` reads it without p3s
and ``bson.json_util.loads`` gives the stored document back exactly. The day is the day the record
ended (a job's or workflow's end, a pilot's stop, a data record's last update, an event's time).

Each write appends one gzip member (``zcat`` reads concatenated members as one stream) and is
synced to disk before the caller deletes anything. A process killed during a write leaves a
truncated last member: nothing of it was deleted yet, the reader ignores it, and the next write
to that file first cuts it off. A record may therefore be archived twice (killed after the sync,
before the delete); a restore skips documents whose ``_id`` is already in the database.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import io
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from bson import json_util

log = logging.getLogger("p3s.archive")
KINDS = ("jobs", "pilots", "workflows", "data", "events")
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The days check_day accepts whatever the month, as a pattern for the API's document (a day past
# the 28th is not always a date: check_day tells).
DAY_PATTERN = "^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$"
_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=False)


class ArchiveError(Exception):
    """An archive name or file that cannot be used; the message says which and why."""


def encode(doc: dict) -> bytes:
    """One document as one line of relaxed extended JSON."""
    return json_util.dumps(doc, json_options=_JSON, sort_keys=False).encode() + b"\n"


def decode(line: bytes | str) -> dict:
    return json_util.loads(line, json_options=_JSON)


def check_day(day: str) -> str:
    """``day`` if it is a valid YYYY-MM-DD date, else ArchiveError."""
    if not isinstance(day, str) or not DAY_RE.match(day):
        raise ArchiveError(f"{day!r} is not a day (YYYY-MM-DD)")
    try:
        _dt.date.fromisoformat(day)
    except ValueError:
        raise ArchiveError(f"{day!r} is not a valid date") from None
    return day


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ArchiveError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    return kind


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_length(data: bytes) -> tuple[int, bytes]:
    """The length of the leading complete gzip members of ``data``, and their uncompressed bytes."""
    good, out, pos = 0, [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(data[pos:])
        except zlib.error:
            break
        if not inflater.eof:
            break                          # a member cut short (a write that was interrupted)
        out.append(chunk)
        pos = len(data) - len(inflater.unused_data)
        good = pos
    return good, b"".join(out)


class Archive:
    """The archive directory of one server: append documents, list files, read them back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._checked: set[Path] = set()      # files whose tail was checked by this process

    def path(self, kind: str, day: str) -> Path:
        return self.root / check_kind(kind) / f"{check_day(day)}.jsonl.gz"

    def append(self, kind: str, docs_by_day: dict[str, list[dict]]) -> int:
        """Append documents to their day files, each file synced before returning; the bytes written."""
        written = 0
        for day, docs in sorted(docs_by_day.items()):
            if not docs:
                continue
            path = self.path(kind, day)
            new_dir = not path.parent.exists()
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if new_dir:
                _fsync_dir(path.parent.parent)
            created = not path.exists()
            if not created and path not in self._checked:
                self._repair(path)
            payload = gzip.compress(b"".join(encode(d) for d in docs), compresslevel=6, mtime=0)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(path.parent)
            self._checked.add(path)
            written += len(payload)
        return written

    def _repair(self, path: Path) -> None:
        """Cut off a last member left incomplete by a killed process (its records were not deleted)."""
        data = path.read_bytes()
        good, _ = complete_length(data)
        if good < len(data):
            log.warning("archive %s: cutting off %d bytes of an interrupted write", path, len(data) - good)
            with open(path, "r+b") as handle:
                handle.truncate(good)
                handle.flush()
                os.fsync(handle.fileno())
        self._checked.add(path)

    def files(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every archive file: kind, day, path, size in bytes."""
        out = []
        for k in ([check_kind(kind)] if kind else KINDS):
            folder = self.root / k
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.jsonl.gz")):
                day = path.name[:-len(".jsonl.gz")]
                if DAY_RE.match(day):
                    out.append({"kind": k, "day": day, "path": str(path), "bytes": path.stat().st_size})
        return out

    def read(self, kind: str, day: str) -> Iterator[dict]:
        """The documents of one day file (an interrupted last write is skipped)."""
        path = self.path(kind, day)
        if not path.is_file():
            raise ArchiveError(f"no archive of {kind} for {day} ({path})")
        yield from read_file(path)


def read_file(path: Path) -> Iterator[dict]:
    """The documents of an archive file, given by path (for offline use)."""
    data = path.read_bytes()
    good, text = complete_length(data)
    if good < len(data):
        log.warning("archive %s: ignoring %d bytes of an interrupted write", path, len(data) - good)
    for line in io.BytesIO(text):
        if line.strip():
            yield decode(line)


def day_of(moment: _dt.datetime | None) -> str:
    """The archive day of a record that ended at ``moment`` (today when unknown)."""
    return (moment or _dt.datetime.utcnow()).strftime("%Y-%m-%d")


def group_by_day(docs: Iterable[dict], field_of: Any) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in docs:
        out.setdefault(day_of(field_of(doc)), []).append(doc)
    return out
