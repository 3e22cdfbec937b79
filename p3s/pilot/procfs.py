"""The part of psutil the pilot uses, read from Linux's ``/proc``: the stand-in when psutil is not
installed on the node (``p3s.pilot.payload`` imports psutil, else this module under its name).

Same names and figures as psutil's: ``Process(pid)`` with ``children(recursive=True)``,
``is_running()`` (the pid still names the process it named when created: same start time),
``status()``, ``cpu_times()`` (user, system and those of reaped children, in seconds),
``memory_info().rss`` (bytes), ``num_threads()``, ``io_counters()`` (read_bytes, write_bytes),
``send_signal()`` and ``oneshot()``; the exceptions ``Error``, ``NoSuchProcess``, ``AccessDenied``.

Standard library only: this runs on bare worker nodes.
"""
from __future__ import annotations

import contextlib
import os
import signal as _signal
from typing import Iterator, NamedTuple

STATUS_ZOMBIE = "zombie"
STATUS_DEAD = "dead"
_STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped", "t": "tracing-stop",
           "Z": STATUS_ZOMBIE, "X": STATUS_DEAD, "x": STATUS_DEAD, "I": "idle", "P": "parked", "W": "waking"}
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Error(Exception):
    """Base of this module's errors (psutil.Error)."""


class NoSuchProcess(Error):
    """The process is gone, or its pid now names another process."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} is gone")
        self.pid = pid


class AccessDenied(Error):
    """/proc refuses to tell (another user's process)."""


class CpuTimes(NamedTuple):
    user: float
    system: float
    children_user: float
    children_system: float


class MemoryInfo(NamedTuple):
    rss: int
    vms: int


class IOCounters(NamedTuple):
    read_count: int
    write_count: int
    read_bytes: int
    write_bytes: int


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].split()


def _parents() -> dict[int, list[int]]:
    """ppid -> pids, of every process."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(name))
    return children


class Process:
    """One process, identified by its pid and start time (a reused pid is another process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        fields = _stat_fields(pid)
        if fields is None:
            raise NoSuchProcess(pid)
        self._start = int(fields[19])

    def __repr__(self) -> str:
        return f"procfs.Process(pid={self.pid})"

    def _fields(self) -> list[bytes]:
        fields = _stat_fields(self.pid)
        if fields is None or int(fields[19]) != self._start:
            raise NoSuchProcess(self.pid)
        return fields

    def is_running(self) -> bool:
        fields = _stat_fields(self.pid)
        return fields is not None and int(fields[19]) == self._start

    def status(self) -> str:
        return _STATES.get(self._fields()[0].decode(), "unknown")

    def ppid(self) -> int:
        return int(self._fields()[1])

    def children(self, recursive: bool = False) -> list["Process"]:
        self._fields()
        tree = _parents()
        found, todo = [], list(tree.get(self.pid, ()))
        while todo:
            pid = todo.pop(0)
            try:
                found.append(Process(pid))
            except NoSuchProcess:
                continue
            if recursive:
                todo.extend(tree.get(pid, ()))
        return found

    def cpu_times(self) -> CpuTimes:
        fields = self._fields()
        utime, stime, cutime, cstime = (int(f) / _CLK_TCK for f in fields[11:15])
        return CpuTimes(utime, stime, cutime, cstime)

    def memory_info(self) -> MemoryInfo:
        self._fields()
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as handle:
                size, resident = handle.read().split()[:2]
        except OSError:
            raise NoSuchProcess(self.pid) from None
        return MemoryInfo(int(resident) * _PAGE, int(size) * _PAGE)

    def num_threads(self) -> int:
        return int(self._fields()[17])

    def io_counters(self) -> IOCounters:
        self._fields()
        try:
            with open(f"/proc/{self.pid}/io", "rb") as handle:
                pairs = dict(line.split(b":", 1) for line in handle.read().splitlines() if b":" in line)
        except PermissionError:
            raise AccessDenied(f"/proc/{self.pid}/io") from None
        except OSError:
            raise NoSuchProcess(self.pid) from None
        return IOCounters(int(pairs.get(b"syscr", 0)), int(pairs.get(b"syscw", 0)), int(pairs.get(b"read_bytes", 0)),
                          int(pairs.get(b"write_bytes", 0)))

    def send_signal(self, signum: int) -> None:
        if not self.is_running():
            raise NoSuchProcess(self.pid)
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            raise NoSuchProcess(self.pid) from None
        except PermissionError:
            raise AccessDenied(f"signal to {self.pid}") from None

    def kill(self) -> None:
        self.send_signal(_signal.SIGKILL)

    @contextlib.contextmanager
    def oneshot(self) -> Iterator[None]:
        """psutil caches reads inside this block; /proc is read afresh each time here."""
        yield
