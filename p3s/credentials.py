"""Credentials the server issues: a pilot's own credential and a monitor session, stored hashed.

Only the SHA-256 of a secret is ever written (``_id`` of a document in the ``credentials``
collection), so a copy of the database gives nobody a usable token. A lookup is by ``_id``; the
pilots' credentials are also cached in memory, so a pilot's request costs no extra query.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import secrets
from typing import Any

import mongoengine as me

from p3s.models import utcnow

COLLECTION = "credentials"
PILOT = "pilot"
SESSION = "session"


def digest(secret: str) -> str:
    """The stored form of a secret: its SHA-256 in hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe, never starting with '-')."""
    return secrets.token_hex(32)


class CredentialStore:
    """Issue, look up and revoke hashed credentials (use on the event-loop thread only)."""

    def __init__(self) -> None:
        self.collection = me.get_db()[COLLECTION]
        self._pilots: dict[str, dict] = {}      # digest -> credential document (pilots only)

    def issue(self, kind: str, secret: str | None = None, ttl: float | None = None, **binding: Any) -> str:
        """Store a credential of ``kind`` bound to ``binding``; returns the secret (shown once)."""
        secret = secret or new_secret()
        now = utcnow()
        doc = {"_id": digest(secret), "kind": kind, "ts": now,
               "expires": now + _dt.timedelta(seconds=ttl) if ttl else None, **binding}
        self.collection.insert_one(doc)
        if kind == PILOT:
            self._pilots[doc["_id"]] = doc
        return secret

    def lookup(self, secret: str, kind: str) -> dict | None:
        """The credential document for ``secret`` if it is of ``kind`` and not expired."""
        key = digest(secret)
        doc = self._pilots.get(key) if kind == PILOT else None
        if doc is None:
            doc = self.collection.find_one({"_id": key})
            if doc is None or doc.get("kind") != kind:
                return None
            if kind == PILOT:
                self._pilots[key] = doc
        if doc.get("expires") is not None and doc["expires"] < utcnow():
            self.revoke(secret)
            return None
        return doc

    def taken(self, secret: str) -> bool:
        """Whether ``secret`` is already some credential."""
        return self.collection.find_one({"_id": digest(secret)}, {"_id": 1}) is not None

    def owns(self, secret: str, **binding: Any) -> bool:
        """Whether ``secret`` is a stored credential with exactly this binding (e.g. pilot=uuid)."""
        doc = self.collection.find_one({"_id": digest(secret)})
        return doc is not None and all(doc.get(k) == v for k, v in binding.items())

    def revoke(self, secret: str) -> bool:
        key = digest(secret)
        self._pilots.pop(key, None)
        return self.collection.delete_one({"_id": key}).deleted_count > 0

    def revoke_pilots(self, uuids: list[str]) -> None:
        """Revoke the credentials of these pilots (their records were deleted)."""
        if not uuids:
            return
        wanted = set(uuids)
        self.collection.delete_many({"kind": PILOT, "pilot": {"$in": sorted(wanted)}})
        for key in [k for k, d in self._pilots.items() if d.get("pilot") in wanted]:
            del self._pilots[key]
