"""Monitor sessions: what the browser's cookie holds instead of a token.

Logging in with a token makes a session: a random id whose SHA-256 is stored with the role and
name it stands for (``p3s.credentials``) and an expiry (``session_days``). The cookie holds the
id only, so neither the cookie nor the database reveals a token. Logging out (a POST) deletes the
session at once; a session also dies when the token it came from is no longer configured.
"""
from __future__ import annotations

from p3s.auth import Authenticator, Identity
from p3s.credentials import SESSION, digest
from p3s.models import utcnow

COOKIE = "p3s_session"


class Sessions:
    """Start, look up and end monitor sessions (event-loop thread only)."""

    def __init__(self, authenticator: Authenticator, days: float) -> None:
        self.authenticator = authenticator
        self.seconds = days * 86400

    def start(self, who: Identity) -> str:
        """A new session for ``who`` (an admin or client); returns its id for the cookie. Expired
        sessions are removed here, so they never pile up."""
        self.authenticator.credentials.collection.delete_many({"kind": SESSION, "expires": {"$lt": utcnow()}})
        return self.authenticator.credentials.issue(SESSION, ttl=self.seconds, role=who.role, name=who.name,
                                                    token=who.key)

    def identify(self, session_id: str | None) -> Identity | None:
        """The identity a cookie's session id stands for, or None (unknown, expired, revoked)."""
        if self.authenticator.disabled:
            return self.authenticator.identify(None)
        if not session_id:
            return None
        doc = self.authenticator.credentials.lookup(session_id, SESSION)
        if doc is None:
            return None
        if doc.get("token") not in self.authenticator.static:       # its token was removed
            self.authenticator.credentials.revoke(session_id)
            return None
        return Identity(doc["role"], doc["name"], session=digest(session_id), key=doc.get("token"))

    def end(self, session_id: str | None) -> bool:
        """Revoke a session (logout); True when there was one."""
        return bool(session_id) and self.authenticator.credentials.revoke(session_id)
