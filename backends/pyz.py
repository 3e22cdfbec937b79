"""The pilot as one zipapp, ``p3s-pilot.pyz``: ``p3s/__init__.py`` and the ``p3s/pilot`` package,
run by any Python 3.11+ with nothing else installed (``python3 p3s-pilot.pyz [PILOT OPTIONS]``).

Every backend ships it to the node (in the agent's request, inline in a batch job script, or in a
shared directory), so a node needs only ``python3``. Its bytes depend only on the sources, so its
name carries their hash and a node keeps one copy per version.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import os
import tempfile
import zipapp
import zipfile
from pathlib import Path

import p3s
import p3s.pilot

MAIN = "from p3s.pilot.cli import main\nmain()\n"
INTERPRETER = "/usr/bin/env python3"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _sources() -> dict[str, bytes]:
    """Archive name -> bytes of every file the zipapp holds."""
    root = Path(p3s.__file__).parent
    files = {"p3s/__init__.py": (root / "__init__.py").read_bytes(), "__main__.py": MAIN.encode()}
    for path in sorted(Path(p3s.pilot.__file__).parent.glob("*.py")):
        files[f"p3s/pilot/{path.name}"] = path.read_bytes()
    return files


@functools.lru_cache(maxsize=1)
def build() -> bytes:
    """The zipapp's bytes (a shebang line, then a zip archive with fixed timestamps: the same
    sources always give the same bytes)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in _sources().items():
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    archive.seek(0)
    out = io.BytesIO()
    zipapp.create_archive(archive, out, interpreter=INTERPRETER)
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def sha256() -> str:
    """The SHA-256 of the zipapp's bytes (hex)."""
    return hashlib.sha256(build()).hexdigest()


def digest() -> str:
    """A short hash of the zipapp's bytes, in its file name on the nodes."""
    return sha256()[:16]


@functools.lru_cache(maxsize=1)
def encoded() -> str:
    """The zipapp in base64, as JSON requests carry it."""
    return base64.b64encode(build()).decode()


def file_name() -> str:
    return f"p3s-pilot-{digest()}.pyz"


def write(path: str | os.PathLike) -> Path:
    """Write the zipapp to ``path`` (atomically, mode 0755); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".p3s-pilot-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(build())
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
