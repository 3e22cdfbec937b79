"""The server's event log: notable happenings kept in the Event collection for alarms and debugging."""
from __future__ import annotations

import logging
from typing import Any, Callable

from p3s import models
from p3s.models import utcnow

log = logging.getLogger("p3s.events")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
subscribers: list[Callable[[dict], None]] = []


def record(kind: str, message: str, *, severity: str = "info", job: str | None = None,
           pilot: str | None = None, site: str | None = None, source: str = "server",
           data: dict[str, Any] | None = None) -> dict:
    """Store one event, log it, and pass it to the subscribers (live pages)."""
    doc = {"ts": utcnow(), "kind": kind, "severity": severity, "message": message, "job": job,
           "pilot": pilot, "site": site, "source": source, "data": data or {}}
    models.Event._get_collection().insert_one(doc)
    log.log(_LEVELS.get(severity, logging.INFO), "%s: %s", kind, message)
    for subscriber in subscribers:
        subscriber(doc)
    return doc
