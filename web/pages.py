"""The monitor's pages: one HTML shell whose script renders every page from the JSON API, the
login that turns a token into a cookie, the static files, and /metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tornado.web

from p3s import __version__
from p3s.server.base import TOKEN_COOKIE
from p3s.web import metrics

HERE = Path(__file__).resolve().parent
PAGES = ("", "jobs", "pilots", "workflows", "templates", "data", "events", "sites", "hosts", "errors")


class PageBase(tornado.web.RequestHandler):
    def initialize(self, server: Any) -> None:
        self.server = server

    def identity(self) -> tuple[str, str] | None:
        token = self.get_cookie(TOKEN_COOKIE)
        return self.server.authenticator.identify(f"Bearer {token}" if token else None)

    def set_default_headers(self) -> None:
        # Everything the pages need is served by p3s itself; nothing else may run in them.
        self.set_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                                   "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")


class PageHandler(PageBase):
    """Every page: the same shell; the script reads the path and asks the API for the data."""

    def get(self, *_parts: str) -> None:
        who = self.identity()
        if who is None or who.role not in ("admin", "client"):
            self.redirect("/login?next=" + tornado.escape.url_escape(self.request.uri))
            return
        self.render("index.html", version=__version__, role=who.role, name=who.name)


class LoginHandler(PageBase):
    def get(self) -> None:
        self.render("login.html", error="", next=self._next(), version=__version__)

    def post(self) -> None:
        token = self.get_body_argument("token", "").strip()
        who = self.server.authenticator.identify(f"Bearer {token}")
        if who is None or who.role not in ("admin", "client"):
            self.set_status(401)
            self.render("login.html", error="That token is not known here (a pilot token cannot log in).",
                        next=self._next(), version=__version__)
            return
        self.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", expires_days=30)
        self.redirect(self._next())

    def _next(self) -> str:
        target = self.get_argument("next", "/")
        parts = urlsplit(target)
        return target if not parts.scheme and not parts.netloc and target.startswith("/") else "/"

    def check_xsrf_cookie(self) -> None:
        pass


class LogoutHandler(PageBase):
    def get(self) -> None:
        self.clear_cookie(TOKEN_COOKIE)
        self.redirect("/login")


class MetricsHandler(PageBase):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(metrics.render(self.server))


def url_specs(server: Any) -> list:
    args = {"server": server}
    specs: list = [(r"/", PageHandler, args)]
    for page in PAGES[1:]:
        specs += [(rf"/{page}", PageHandler, args), (rf"/{page}/([^/]+)", PageHandler, args)]
    specs += [(r"/login", LoginHandler, args), (r"/logout", LogoutHandler, args), (r"/metrics", MetricsHandler, args),
              (r"/static/(.*)", tornado.web.StaticFileHandler, {"path": str(HERE / "static")})]
    return specs


SETTINGS = {"template_path": str(HERE / "templates"), "autoescape": "xhtml_escape"}
