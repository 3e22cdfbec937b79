"""What the server knows about the fleet's pilots, and the requests the fleet makes to it.

A pilot record is matched to a process by (host, pid): the fleet starts every pilot with
``-H <node>`` and the pilot registers its pid. Safe to use from several threads (a client each).
"""
from __future__ import annotations

import threading
from typing import Any, Iterable

from p3s.pilot.client import Client

ALIVE = "idle,running"


class ServerView:
    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url, token
        self._local = threading.local()

    @property
    def client(self) -> Client:
        if getattr(self._local, "client", None) is None:
            self._local.client = Client(self.url, self.token, timeout=30, retries=2)
        return self._local.client

    def check(self, site: str | None = None) -> None:
        """Raise P3SError unless the server answers (and has ``site``)."""
        self.client.call("GET", "/status")
        if site:
            self.site(site)

    def alive(self, node: str, site: str | None = None) -> list[dict]:
        """The records of pilots the server thinks alive (idle, running) on ``node``."""
        return list(self.client.list_all("pilots", host=node, state=ALIVE, site=site or None))

    def count(self, node: str, state: str, site: str | None = None) -> int:
        return self.client.list("pilots", host=node, state=state, site=site or None, limit=1)["total"]

    def newest(self, node: str, limit: int) -> list[dict]:
        """The ``limit`` most recently registered records on ``node``, in any state."""
        return self.client.list("pilots", host=node, sort="-ts_reg", limit=max(1, min(limit, 1000)))["items"]

    def hosts(self, site: str | None = None) -> set[str]:
        """Hosts the server has pilots alive on."""
        return {p["host"] for p in self.client.list_all("pilots", state=ALIVE, site=site or None)}

    def site_pilots(self, site: str) -> list[dict]:
        return list(self.client.list_all("pilots", state=ALIVE, site=site))

    def site(self, name: str) -> dict:
        return self.client.get("sites", name)

    def kill(self, **selector: Any) -> list[str]:
        """Ask matching live pilots to stop (delivered in their next reply); their uuids."""
        return self.client.kill_pilots(**selector)

    def say_stopped(self, uuids: Iterable[str], message: str) -> None:
        """Record pilots that cannot say it themselves any more (killed with SIGKILL) as stopped."""
        for uuid in uuids:
            self.client.report(uuid, "stopped", message=message)


def by_pid(records: Iterable[dict]) -> dict[int, dict]:
    return {r["pid"]: r for r in records if r.get("pid") is not None}
