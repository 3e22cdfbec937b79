"""Bearer tokens and the roles they carry: admin (everything), client (submit and read), pilot."""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from p3s.config import Config

# What each kind of access needs: the roles allowed.
READ = frozenset({"admin", "client"})
SUBMIT = frozenset({"admin", "client"})
PILOT = frozenset({"admin", "pilot"})
PILOT_OR_READ = READ | PILOT
ADMIN = frozenset({"admin"})
PUBLIC = frozenset()          # no token needed


def token_file(config: Config) -> Path:
    return config.data_path / "token"


def ensure_generated_token(config: Config) -> str:
    """The server's generated admin token, made on first start in a file only its user can read."""
    path = token_file(config)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)           # hex: never starts with "-", safe as a flag value
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def client_token(config: Config) -> str | None:
    """The token a client or pilot sends: the configured one, else the server's generated file."""
    if config.token:
        return config.token
    try:
        return token_file(config).read_text().strip() or None
    except OSError:
        return None


class Authenticator:
    """Maps a request's bearer token to (role, name)."""

    def __init__(self, config: Config) -> None:
        self.disabled = bool(config.no_auth)
        self.tokens: list[tuple[str, str, str]] = [(t["token"], t["role"], t["name"]) for t in config.tokens]
        self.generated_file: Path | None = None
        if not self.disabled and not self.tokens:
            self.tokens.append((ensure_generated_token(config), "admin", "admin"))
            self.generated_file = token_file(config)

    def identify(self, header: str | None) -> tuple[str, str] | None:
        """(role, name) for an ``Authorization: Bearer …`` header, or None."""
        if self.disabled:
            return ("admin", "anonymous")
        if not header or not header.startswith("Bearer "):
            return None
        offered = header[len("Bearer "):].strip().encode()
        found = None
        for token, role, name in self.tokens:
            if hmac.compare_digest(token.encode(), offered):
                found = (role, name)
        return found
