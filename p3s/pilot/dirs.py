"""The pilot's own directories and files, safe on a node shared with other users.

A directory the pilot writes to (logs, job logs, work) is created by the pilot, mode 0700; an
existing one is used only when this user owns it, and no component of its path may be a
symbolic link or a directory that another user (other than root) owns: such a user could point
the pilot's writes anywhere. Job files are created afresh (``O_CREAT | O_EXCL``) without
following a symbolic link (``O_NOFOLLOW``).

Standard library only: this runs on bare worker nodes.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE = 0o700
TRUSTED_OWNERS = frozenset({0})      # root; this process's own user is added at each check


class UnsafePath(Exception):
    """A directory or file the pilot refuses to use; the message says why."""


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) mode 0700, or check the existing one; returns it absolute.

    Raises UnsafePath when a component is a symlink or directory owned by another user, when the
    directory itself is not this user's, or when it cannot be created."""
    path = Path(os.path.abspath(path))
    me = os.geteuid()
    trusted = TRUSTED_OWNERS | {me}
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current, PRIVATE)
            except FileExistsError:          # someone made it meanwhile: check what it is
                pass
            except OSError as exc:
                raise UnsafePath(f"cannot create {current}: {exc.strerror}") from None
            info = os.lstat(current)
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in trusted:
                raise UnsafePath(f"{current} is a symbolic link owned by uid {info.st_uid}, another user; "
                                 f"refusing to follow it")
            continue                         # root's or ours (e.g. /tmp -> /private/tmp)
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePath(f"{current} is not a directory")
        if info.st_uid not in trusted:
            raise UnsafePath(f"{current} is owned by uid {info.st_uid}, another user; "
                             f"choose a directory of your own")
    final = os.stat(path)
    if final.st_uid != me:
        raise UnsafePath(f"{path} is owned by uid {final.st_uid}, not by this user (uid {me})")
    if stat.S_IMODE(final.st_mode) & 0o077:
        os.chmod(path, PRIVATE)              # ours: make it private
    return path


def create_file(path: Path, mode: int = 0o600) -> int:
    """A new file at ``path`` opened for reading and writing (a file descriptor). Never follows
    a symbolic link; whatever was at that name (a stale log of an earlier attempt of the same job,
    or a planted link) is removed first, never written through."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, mode)
    except FileExistsError:
        os.unlink(path)                      # removes a link itself, not its target
        return os.open(path, flags, mode)


def append_file(path: Path) -> int:
    """``path`` opened for appending, created if missing, never through a symbolic link."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def job_dir(path: Path) -> Path:
    """The job's work directory: made 0700, or an existing real directory of this user."""
    try:
        os.mkdir(path, PRIVATE)
        return path
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise UnsafePath(f"{path} exists and is not a directory of this user")
    return path
