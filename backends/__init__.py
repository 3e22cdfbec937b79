"""Backends start, list and stop the fleet's pilots: on hosts (``p3s.backends.base.Backend``:
local, ssh) or as batch jobs (``p3s.backends.batch.BatchBackend``: slurm, sge).

They are found by name through the ``p3s.backends`` entry points, so a site adds its own (an
HTCondor backend, say) in its own package without touching p3s::

    [options.entry_points]
    p3s.backends =
        condor = p3s_condor:CondorBackend
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p3s.backends.base import BackendBase

GROUP = "p3s.backends"


class BackendNotFound(LookupError):
    """No backend of that name is installed, or it cannot be loaded."""


def available() -> list[str]:
    """Names of the installed backends."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load(name: str) -> "type[BackendBase]":
    """The backend class registered under ``name``."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise BackendNotFound(f"no backend {name!r} (installed: {', '.join(available()) or 'none'})")
    try:
        return found[0].load()
    except Exception as exc:
        raise BackendNotFound(f"backend {name!r} cannot be loaded: {exc}") from None
