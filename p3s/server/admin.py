"""Admin-only API routes for operating a long-running server: retention, purge, archive, restore.

``p3s-admin`` (``p3s.cli.admin``) is their client. A purge or a restore runs in slices on the
server's event loop (pilots keep being served) and answers when it is done.
"""
from __future__ import annotations

from p3s import archive, auth
from p3s.errors import invalid
from p3s.retention import KINDS
from p3s.schema import Body, Field
from p3s.server.base import ApiHandler

MAX_DAYS = 366

PURGE = Body("Purge", (
    Field("kinds", "strlist", f"Kinds to purge ({', '.join(KINDS)}); default all.", default=lambda: list(KINDS),
          choices=tuple(KINDS), min_items=1),
    Field("older_than_days", "number", "Instead of the configured age: archive what ended more than this many "
                                       "days ago (0: no age limit).", minimum=0, nullable=True, default=None),
    Field("keep", "int", "Instead of the configured count: keep at most this many records of each kind "
                         "(0: no count limit).", minimum=0, nullable=True, default=None),
    Field("dry_run", "bool", "Only count what would go.", default=False),
))
RESTORE = Body("Restore", (
    Field("kind", "str", "Kind of records to restore.", required=True, choices=tuple(KINDS)),
    Field("days", "strlist", "Archive days (YYYY-MM-DD) to restore.", required=True, min_items=1,
          pattern=archive.DAY_PATTERN),
))


def _kinds(names: list[str]) -> list[str]:
    if not names:
        raise invalid("kinds", "give at least one kind")
    for i, name in enumerate(names):
        if name not in KINDS:
            raise invalid(f"kinds[{i}]", f"unknown kind {name!r} (known: {', '.join(KINDS)})")
    return list(dict.fromkeys(names))


class RetentionHandler(ApiHandler):
    roles = {"GET": auth.ADMIN}
    query_schemas = {"kind": {"type": "string", "enum": list(KINDS)}}
    doc = {"GET": {"summary": "The retention policy, what it archived so far, and the archive files",
                   "query": {"kind": "Only the files of this kind."}, "response": "OpenAPI"}}

    def get(self) -> None:
        status = self.server.retention.status()
        kind = self.arg("kind")
        if kind is not None:
            if kind not in KINDS:
                raise invalid("kind", f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
            status["files"] = [f for f in status["files"] if f["kind"] == kind]
        self.reply(status)


class PurgeHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": "Archive and remove now what the policy (or the given limits) lets go, "
                               "in slices; answers when done", "body": PURGE, "response": "OpenAPI"}}

    async def post(self) -> None:
        body = PURGE.validate(self.body(optional=True))
        kinds = _kinds(body["kinds"])
        result = await self.server.retention.purge(kinds, body["older_than_days"], body["keep"], body["dry_run"])
        self.reply({"dry_run": body["dry_run"], "kinds": result})


class RestoreHandler(ApiHandler):
    roles = {"POST": auth.ADMIN}
    doc = {"POST": {"summary": "Put archived records back from day files of the archive; records already "
                               "in the database are skipped", "body": RESTORE, "response": "OpenAPI"}}

    async def post(self) -> None:
        body = RESTORE.validate(self.body())
        days = body["days"]
        if not days:
            raise invalid("days", "give at least one day")
        if len(days) > MAX_DAYS:
            raise invalid("days", f"at most {MAX_DAYS} days per request")
        for i, day in enumerate(days):
            try:
                archive.check_day(day)
            except archive.ArchiveError as exc:
                raise invalid(f"days[{i}]", str(exc)) from None
        self.reply(await self.server.retention.restore(body["kind"], list(dict.fromkeys(days))))


ROUTES = [
    ("/admin/retention", RetentionHandler),
    ("/admin/purge", PurgeHandler),
    ("/admin/restore", RestoreHandler),
]
