"""Who is calling: bearer tokens, the roles they carry, and a pilot's own credential.

Roles:

- ``admin``: everything;
- ``client``: read everything, submit, and change what it owns (see ``p3s.ownership``);
- ``pilot``: a *bootstrap* token: register pilots (optionally only for one site and only so many
  live at once) and read its site; nothing else;
- ``agent``: the credential registration returns, bound to that one pilot: that pilot's own
  routes (``/pilots/{its uuid}/…``) and its site, nothing else; valid only while that pilot's
  record says it is alive (see ``Authenticator.pilot_record``);
- ``metrics``: ``/metrics`` only.

The server keeps only SHA-256 digests of tokens (configured ones may be given as
``token_sha256``), and pilots' credentials hashed in the database (``p3s.credentials``).
"""
from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path
from typing import Callable

from p3s.config import Config
from p3s import states
from p3s.credentials import PILOT as PILOT_CREDENTIAL, CredentialStore, digest

# What each kind of access needs: the roles allowed.
READ = frozenset({"admin", "client"})
SUBMIT = frozenset({"admin", "client"})
PILOT = frozenset({"admin", "pilot"})                   # register a pilot
AGENT = frozenset({"admin", "agent"})                   # one pilot's own routes (uuid checked too)
PILOT_OR_READ = READ | PILOT | {"agent"}                # a site's record: pilots bootstrap from it
ADMIN = frozenset({"admin"})
METRICS = frozenset({"admin", "metrics"})
PUBLIC = frozenset()          # no token needed
ANY = READ | PILOT | AGENT | METRICS
# A pilot's credential whose pilot has stopped or been declared lost: in no role set above, so it
# is allowed nothing; the API answers it 401 with ``Identity.revoked`` as the reason.
REVOKED = "revoked"


@dataclasses.dataclass(frozen=True)
class Identity:
    """The caller: role and name; a bootstrap token's limits; an agent's pilot."""

    role: str
    name: str
    site: str | None = None          # pilot: the only site it may register; agent: its pilot's site
    max_pilots: int | None = None    # pilot: live pilots it may have at once
    pilot: str | None = None         # agent: the pilot uuid it is bound to
    session: str | None = None       # logged in through the monitor: the session's digest
    key: str | None = None           # digest of the configured token it came from (sessions check it)
    revoked: str | None = None       # role REVOKED: why the credential no longer authenticates

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS = Identity("admin", "anonymous")


def token_file(config: Config) -> Path:
    return config.data_path / "token"


def ensure_generated_token(config: Config) -> str:
    """The server's generated admin token, made on first start in a file only its user can read."""
    path = token_file(config)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_hex(32)           # hex: never starts with "-", safe as a flag value
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def client_token(config: Config) -> str | None:
    """The token a client sends: the configured one, else the server's generated file."""
    if config.token:
        return config.token
    try:
        return token_file(config).read_text().strip() or None
    except OSError:
        return None


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header."""
    if not header or not header.startswith("Bearer "):
        return None
    return header[len("Bearer "):].strip() or None


class Authenticator:
    """Maps a request's bearer token to an Identity."""

    def __init__(self, config: Config) -> None:
        self.disabled = bool(config.no_auth)
        self.static: dict[str, Identity] = {}       # token digest -> identity
        for entry in config.tokens:
            key = entry.get("token_sha256") or digest(entry["token"])
            self.static[key] = Identity(entry["role"], entry["name"], site=entry.get("site"),
                                        max_pilots=entry.get("max_pilots"), key=key)
        self.generated_file: Path | None = None
        if not self.disabled and not self.static:
            key = digest(ensure_generated_token(config))
            self.static[key] = Identity("admin", "admin", key=key)
            self.generated_file = token_file(config)
        self.credentials: CredentialStore | None = None
        # uuid -> the pilot's record ({"state", "reason"}; None: no record), set by the server.
        self.pilot_record: Callable[[str], dict | None] | None = None

    @property
    def tokens(self) -> list[Identity]:
        return list(self.static.values())

    def open(self) -> None:
        """Attach the credential store (after the database is open)."""
        self.credentials = CredentialStore()

    def identify_token(self, token: str | None) -> Identity | None:
        """The identity a token stands for: a configured token or a pilot's credential."""
        if self.disabled:
            return ANONYMOUS
        if not token:
            return None
        found = self.static.get(digest(token))
        if found is not None:
            return found
        if self.credentials is not None:
            doc = self.credentials.lookup(token, PILOT_CREDENTIAL)
            if doc is not None:
                revoked = self._revoked(doc)
                if revoked is not None:
                    return Identity(REVOKED, f"pilot {doc['pilot']}", pilot=doc["pilot"], revoked=revoked)
                return Identity("agent", f"pilot {doc['pilot']}", site=doc.get("site") or "", pilot=doc["pilot"])
        return None

    def _revoked(self, credential: dict) -> str | None:
        """Why a pilot's credential no longer authenticates, or None while its pilot is alive.

        The credential is good only while its pilot's record is alive, so the one conditional write
        that ends the pilot (its stop, or the reaper declaring it lost) revokes it too: there is no
        second write that a kill -9 could leave undone. An ended pilot never comes back to life (a
        uuid is never registered again), so the answer is kept with the cached credential.
        """
        if credential.get("revoked"):
            return credential["revoked"]
        if self.pilot_record is None:
            return None
        uuid = credential["pilot"]
        record = self.pilot_record(uuid)
        if record is None:     # deleted (its credential goes with it) or not yet written: not kept
            return f"pilot {uuid} is not registered: its credential is not valid"
        state = record.get("state")
        if state in states.PILOT_ALIVE:
            return None
        reason = record.get("reason") if record.get("reason") != state else None
        if state == states.LOST:
            why = f"pilot {uuid} was declared lost{f' ({reason})' if reason else ''}"
        else:
            why = f"pilot {uuid} {state}{f' ({reason})' if reason else ''}"
        credential["revoked"] = f"{why}: its credential is revoked; register a new pilot to work again"
        return credential["revoked"]

    def identify(self, header: str | None) -> Identity | None:
        """The identity for an ``Authorization: Bearer …`` header, or None."""
        if self.disabled:
            return ANONYMOUS
        return self.identify_token(bearer(header))
