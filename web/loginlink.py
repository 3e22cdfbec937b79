"""One-time login links: a URL that logs a browser in at once (the demo prints one).

An admin asks for a link (``POST /api/v1/login-link``); the server makes a random code of 256 bits,
keeps only its SHA-256 with the admin's identity and an expiry (``LINK_SECONDS``), in memory, and
answers the path ``/login/link?code=…``. Opening it once logs the browser in as that admin (the
same cookie as the login form) and redirects to the page, so the code leaves the address bar at
once (a session of its own, ``p3s.sessions``); a second use, an expired code, or a code after a server restart is refused and sent to the
login form. At most ``MAX_LINKS`` links are outstanding.
"""
from __future__ import annotations

import datetime
import hashlib
import secrets
import time
from typing import Any

from p3s import auth
from p3s.errors import ApiError
from p3s.models import utcnow
from p3s.auth import Identity
from p3s.server.base import ApiHandler, jsonable
from p3s.web.pages import PageBase

LINK_SECONDS = 300
MAX_LINKS = 100


class LoginLinks:
    """Outstanding codes: sha256(code) -> (identity, monotonic expiry)."""

    def __init__(self) -> None:
        self._links: dict[str, tuple[Identity, float]] = {}

    @staticmethod
    def _digest(code: str) -> str:
        return hashlib.sha256(code.encode()).hexdigest()

    def create(self, who: Identity) -> str:
        now = time.monotonic()
        self._links = {k: v for k, v in self._links.items() if v[1] > now}
        if len(self._links) >= MAX_LINKS:
            raise ApiError(409, f"{MAX_LINKS} login links are outstanding; wait until some expire")
        code = secrets.token_urlsafe(32)
        self._links[self._digest(code)] = (who, now + LINK_SECONDS)
        return code

    def redeem(self, code: str) -> Identity | None:
        """The identity behind ``code`` if it is valid; the code is spent either way."""
        entry = self._links.pop(self._digest(code), None)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]


class LoginLinkHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": f"A one-time login link for a browser (single use, valid {LINK_SECONDS} s)",
                    "response": "LoginLink", "status": 201}}

    def post(self) -> None:
        code = self.server.login_links.create(self.identity)
        expires = utcnow() + datetime.timedelta(seconds=LINK_SECONDS)
        self.reply(jsonable({"path": f"/login/link?code={code}", "seconds": LINK_SECONDS, "expires": expires}), 201)


class LinkPage(PageBase):
    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        who = self.server.login_links.redeem(self.get_argument("code", ""))
        if who is None or who.role not in ("admin", "client"):
            self.redirect("/login?expired=1")
            return
        self.start_session(who)
        self.redirect("/")


SCHEMAS = {"LoginLink": {"type": "object", "properties": {
    "path": {"type": "string"}, "seconds": {"type": "integer"}, "expires": {"type": "string", "format": "date-time"}}}}
ROUTES = [("/login-link", LoginLinkHandler)]


def url_specs(server: Any) -> list:
    return [(r"/login/link", LinkPage, {"server": server})]
