"""Who may change what: a client changes only what it owns; an admin changes anything.

Jobs, workflows and data records carry an ``owner``: the name of the token that created them
(never a field of the request). Reading stays open to every client.
"""
from __future__ import annotations

from p3s.auth import Identity
from p3s.errors import ApiError

SECRET_SHOWN_AS = "<secret>"


def check(who: Identity | None, doc: dict, kind: str, key: str) -> None:
    """Raise 403 unless ``who`` is an admin or the owner of ``doc``."""
    if who is None or who.is_admin:
        return
    owner = doc.get("owner")
    if owner is None or owner != who.name:
        raise ApiError(403, f"{kind} {key} belongs to {owner or 'nobody (made before owners were kept)'}; "
                            f"only its owner or an admin may change it (you are {who.name})")


def redact(doc: dict) -> dict:
    """``doc`` with the values of the environment variables its submitter marked secret hidden."""
    secret = doc.get("secret_env")
    env = doc.get("env")
    if not secret or not isinstance(env, dict):
        return doc
    hidden = set(secret)
    return {**doc, "env": {k: (SECRET_SHOWN_AS if k in hidden else v) for k, v in env.items()}}
