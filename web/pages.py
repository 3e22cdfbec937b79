"""The monitor's pages: one HTML shell whose script renders every page from the JSON API, the
login that turns a token into a session cookie (``p3s.sessions``), the logout that ends it, the
static files, and /metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tornado.web

from p3s import __version__, auth
from p3s.auth import Identity
from p3s.server.base import database_calls_off_the_loop
from p3s.sessions import COOKIE
from p3s.web import metrics

HERE = Path(__file__).resolve().parent
PAGES = ("", "jobs", "pilots", "workflows", "templates", "data", "events", "sites", "hosts", "errors", "results")


class PageBase(tornado.web.RequestHandler):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        database_calls_off_the_loop(cls)     # the token check may read the database

    def initialize(self, server: Any) -> None:
        self.server = server

    def prepare(self) -> None:
        self.request.remote_ip = self.server.client_address(self.request)

    def identity(self) -> Identity | None:
        return self.server.sessions.identify(self.get_cookie(COOKIE))

    def start_session(self, who: Identity) -> None:
        """Log the browser in as ``who``: a new server-side session, its id in the cookie."""
        session = self.server.sessions.start(who)
        self.set_cookie(COOKIE, session, httponly=True, samesite="Strict", secure=self.request.protocol == "https",
                        expires_days=self.server.config.session_days)

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
        self.render("index.html", version=__version__, role=who.role, name=who.name,
                    open_warning=self.server.open_warning)


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
        self.start_session(who)
        self.redirect(self._next())

    def _next(self) -> str:
        return same_origin_path(self.get_argument("next", "/"))

    def check_xsrf_cookie(self) -> None:
        pass


def same_origin_path(target: str) -> str:
    """``target`` when it is a path on this server, else ``/``: no scheme, no host, and nothing a
    browser reads as one (``//evil``, ``/\\evil``, control characters)."""
    parts = urlsplit(target)
    if (not target.startswith("/") or target.startswith("//") or "\\" in target or parts.scheme or parts.netloc
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)):
        return "/"
    return target


class LogoutHandler(PageBase):
    """``POST /logout`` ends the session on the server; ``GET`` only shows the button (a link or an
    image elsewhere must not log anyone out, and logging out must be more than forgetting a cookie)."""

    def get(self) -> None:
        self.render("logout.html", version=__version__)

    def post(self) -> None:
        self.server.sessions.end(self.get_cookie(COOKIE))
        self.clear_cookie(COOKIE)
        self.redirect("/login")

    def check_xsrf_cookie(self) -> None:
        pass


class MetricsHandler(PageBase):
    """``/metrics`` for Prometheus: a metrics or admin token (or an admin's session), unless the
    configuration makes it public."""

    def get(self) -> None:
        if not self.server.config.metrics_public:
            header = self.request.headers.get("Authorization")
            who = self.server.authenticator.identify(header) if header else self.identity()
            if who is None or who.role not in auth.METRICS:
                self.set_status(401 if who is None else 403)
                self.set_header("WWW-Authenticate", 'Bearer realm="p3s"')
                self.set_header("Content-Type", "text/plain; charset=utf-8")
                self.finish("/metrics needs a metrics or admin token (Authorization: Bearer …)\n")
                return
        content, content_type = metrics.render(self.server)
        self.set_header("Content-Type", content_type)
        self.finish(content)


def url_specs(server: Any) -> list:
    args = {"server": server}
    specs: list = [(r"/", PageHandler, args)]
    for page in PAGES[1:]:
        specs += [(rf"/{page}", PageHandler, args), (rf"/{page}/([^/]+)", PageHandler, args)]
    specs += [(r"/login", LoginHandler, args), (r"/logout", LogoutHandler, args), (r"/metrics", MetricsHandler, args),
              (r"/static/(.*)", tornado.web.StaticFileHandler, {"path": str(HERE / "static")})]
    return specs


SETTINGS = {"template_path": str(HERE / "templates"), "autoescape": "xhtml_escape"}
