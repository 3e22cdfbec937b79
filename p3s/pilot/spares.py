"""Empty files and directories of the pilot's last job, reused for its next job.

Creating an inode is by far the most costly thing a pilot does per job on some file systems
(0.2–0.9 ms of kernel CPU each on this project's ext4 test machine, four per job: two log files,
the work directory, the output directory), where renaming one costs ~0.02 ms. A job that ended
by itself and left its process group empty hands over whichever of its four were left empty;
the next job renames them to its own names instead of creating new ones. So a job that wrote
nothing leaves no empty log files or directories behind once the next job has started.

What is reused is only ever this pilot's own: created by it in its private (0700) directories,
checked again to be still empty (and, for a file, still a plain file with one link) when taken.
A rename replaces whatever was at the new name (a stale log of an earlier attempt of the same
job, or a planted link) without following it, as creating afresh does. Any failure falls back
to creating the item afresh.

Standard library only: this runs on bare worker nodes.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from p3s.pilot.dirs import create_file, job_dir


class Spares:
    """The reusable leftovers of the last job, by kind (``out``, ``err``, ``work``, ``output``)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[Path, int]] = {}     # kind -> (path, open descriptor)
        self.dirs: dict[str, Path] = {}

    def offer_file(self, kind: str, path: Path, fd: int) -> bool:
        """Keep the open, empty log file ``path`` for the next job (the descriptor is then ours)."""
        try:
            info = os.fstat(fd)
        except OSError:
            return False
        if info.st_size or info.st_nlink != 1 or not stat.S_ISREG(info.st_mode):
            return False
        self._drop_file(kind)
        self.files[kind] = (path, fd)
        return True

    def offer_dir(self, kind: str, path: Path) -> None:
        """Keep the directory ``path`` for the next job if it is empty."""
        try:
            with os.scandir(path) as entries:
                if next(entries, None) is not None:
                    return
        except OSError:
            return
        self.dirs[kind] = path

    def file(self, kind: str, path: Path) -> int:
        """``path`` opened for reading and writing, empty: the spare renamed, else created afresh."""
        spare = self.files.pop(kind, None)
        if spare is not None:
            old, fd = spare
            try:
                info = os.fstat(fd)
                if info.st_size == 0 and info.st_nlink == 1 and stat.S_ISREG(info.st_mode):
                    os.rename(old, path)
                    if os.fstat(fd).st_nlink == 1:       # still the file now at ``path``
                        return fd
            except OSError:
                pass
            os.close(fd)
        return create_file(path)

    def dir(self, kind: str, path: Path) -> Path:
        """The job directory ``path``: the spare renamed when still empty, else made afresh."""
        spare = self.dirs.pop(kind, None)
        if spare is not None:
            try:
                with os.scandir(spare) as entries:
                    empty = next(entries, None) is None
                info = os.lstat(spare)
                if empty and stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
                    os.rename(spare, path)
                    return path
            except OSError:
                pass
        return job_dir(path)

    def _drop_file(self, kind: str) -> None:
        spare = self.files.pop(kind, None)
        if spare is not None:
            os.close(spare[1])

    def close(self) -> None:
        """Forget every spare (they stay where they are, as the last job's empty leftovers)."""
        for kind in list(self.files):
            self._drop_file(kind)
        self.dirs.clear()
