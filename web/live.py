"""Live updates for the monitor: what changed, pushed to every open page as server-sent events.

Changes are gathered from the lifecycle's listeners and the event log and sent every
``PERIOD`` seconds in one message, with the counters of the summary: a page updates what it shows
from the message itself, so an open page costs no database query per change.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

from tornado.ioloop import PeriodicCallback

from p3s.lifecycle import Listener
from p3s.server.base import jsonable

log = logging.getLogger("p3s.live")
PERIOD = 0.5
MAX_ITEMS = 500          # per message and kind; beyond, pages are told to reload their lists
PING_EVERY = 5.0         # seconds: a quiet stream still says it is alive (pages show stale data otherwise)
ROW_FIELDS = ("state", "jobtype", "workflow", "pilot", "name", "host", "exit_code", "priority", "ts_def", "ts_dis",
              "ts_sta", "ts_sto", "error", "user")
PILOT_ROW_FIELDS = ("state", "job", "host", "site", "ts_lhb", "ts_stop", "reason")


class Broadcaster(Listener):
    """Collects changes and sends them to the subscribers every PERIOD seconds."""

    def __init__(self, summary: Callable[[], dict]) -> None:
        self.summary = summary
        self.subscribers: set[asyncio.Queue] = set()
        self._quiet = 0.0
        self._reset()
        self._timer = PeriodicCallback(self.flush, PERIOD * 1000)

    def _reset(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.pilots: dict[str, dict] = {}
        self.workflows: dict[str, dict] = {}
        self.events: list[dict] = []
        self.created = 0
        self.overflow = False

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        for queue in list(self.subscribers):
            queue.put_nowait(None)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=100)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.subscribers.discard(queue)

    # --- listener -----------------------------------------------------------------------------
    def _note(self, table: dict[str, dict], key: str, value: dict) -> None:
        if len(table) < MAX_ITEMS or key in table:
            table[key] = value
        else:
            self.overflow = True

    def job_moved(self, before: dict, after: dict) -> None:
        # What a list row shows, so that a page redraws the whole row from the message; a field
        # the change did not touch is left out (the page keeps its value).
        change = {k: after[k] for k in ROW_FIELDS if k in after}
        self._note(self.jobs, after["_id"], {**self.jobs.get(after["_id"], {}), **change})

    def job_created(self, doc: dict) -> None:
        self.created += 1
        self.job_moved(doc, doc)

    def job_removed(self, doc: dict) -> None:
        self._note(self.jobs, doc["_id"], {"state": "deleted"})

    def pilot_moved(self, before: dict, after: dict) -> None:
        change = {k: after[k] for k in PILOT_ROW_FIELDS if k in after}
        self._note(self.pilots, after["_id"], {**self.pilots.get(after["_id"], {}), **change})

    def workflow_moved(self, after: dict) -> None:
        self._note(self.workflows, after["_id"], {"state": after["state"], "ndone": after.get("ndone"),
                                                  "njobs": after.get("njobs")})

    def event_recorded(self, doc: dict) -> None:
        if len(self.events) < 50:
            self.events.append(doc)

    # --- sending ------------------------------------------------------------------------------
    def flush(self) -> None:
        if not self.subscribers:
            self._reset()
            return
        if not (self.jobs or self.pilots or self.workflows or self.events):
            self._quiet += PERIOD
            if self._quiet >= PING_EVERY:
                self._quiet = 0.0
                for queue in list(self.subscribers):
                    try:
                        queue.put_nowait(PING)
                    except asyncio.QueueFull:
                        pass
            return
        self._quiet = 0.0
        message = json.dumps(jsonable({"jobs": self.jobs, "pilots": self.pilots, "workflows": self.workflows,
                                       "events": self.events, "created": self.created, "overflow": self.overflow,
                                       "summary": self.summary()}), default=str)
        self._reset()
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:       # a stalled page: drop it, it reconnects and reloads
                self.subscribers.discard(queue)
                queue_close(queue)


def queue_close(queue: asyncio.Queue) -> None:
    try:
        while True:
            queue.get_nowait()
    except asyncio.QueueEmpty:
        pass
    queue.put_nowait(None)


PING = "ping"            # a queue item that is sent as a ping event


def stream_message(data: str, event: str = "change") -> bytes:
    if data is PING:
        return b"event: ping\ndata: {}\n\n"
    return f"event: {event}\ndata: {data}\n\n".encode()


def hello(summary: dict[str, Any]) -> bytes:
    return stream_message(json.dumps(jsonable({"summary": summary})), "hello")
