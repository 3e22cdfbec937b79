"""Running one payload for the pilot: build its command and environment, start it in its own
session with its output in log files, measure its process tree, and stop it without orphans
(should the pilot die instead, its orphan guard kills the payload: ``p3s.pilot.guard``).

Standard library only, and psutil when it is installed: without it the same figures are read from
``/proc`` (``p3s.pilot.procfs``). This runs on bare worker nodes.
"""
from __future__ import annotations

import os
import resource
import select
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

try:
    import psutil
except ImportError:                     # a bare node: the same figures from /proc
    from p3s.pilot import procfs as psutil  # type: ignore[no-redef]

from p3s.pilot.client import CREDENTIAL_VARIABLES
from p3s.pilot.dirs import UnsafePath, append_file, private_dir
from p3s.pilot import spawn
from p3s.pilot.guard import MARKER_VARIABLE
from p3s.pilot.spares import Spares

TAIL_LINES = 20
TAIL_BYTES = 4096


class NonStarter(Exception):
    """The payload could not be started; the message says why."""


def command_for(job: dict, workdir: Path, force_shell: bool = False) -> tuple[list[str] | str, bool]:
    """The command to run and whether through the shell (P3S_EXECMODE, or -x); P3S_MODE=COPY runs a
    copy of the executable placed in the job's directory (the original's sandbox mode)."""
    env = job.get("env") or {}
    payload = (job.get("payload") or "").strip()
    params = (job.get("params") or "").strip()
    if not payload:
        raise NonStarter("the job has an empty payload")
    if force_shell or "P3S_EXECMODE" in env:
        return (payload + (" " + params if params else "")), True
    try:
        argv = shlex.split(payload) + shlex.split(params)
    except ValueError as exc:
        raise NonStarter(f"cannot split the payload into arguments: {exc}") from None
    if env.get("P3S_MODE", "").upper() == "COPY":
        source = shutil.which(argv[0]) or argv[0]
        target = workdir / Path(source).name
        try:
            shutil.copy2(source, target)
        except OSError as exc:
            raise NonStarter(f"cannot copy {source} into the sandbox: {exc.strerror or exc}") from None
        argv[0] = str(target)
    return argv, False


class Payload:
    """One running payload and its process tree."""

    def __init__(self, job: dict, pilot_uuid: str, base_env: dict[str, str], joblogdir: Path, workroot: Path,
                 force_shell: bool = False, resultroot: Path | None = None, spares: Spares | None = None) -> None:
        self.job = job
        self.spares = spares or Spares()     # the pilot's: the empty leftovers of its last job
        self.uuid = job["uuid"]
        self.workdir = workroot / self.uuid
        # Results the monitor shows (the original's monitor/<job uuid>/): $P3S_OUTPUT_DIR.
        self.output_dir = (resultroot or workroot.parent / "results") / self.uuid
        self.out_path = joblogdir / f"{self.uuid}.out"
        self.err_path = joblogdir / f"{self.uuid}.err"
        inherited = {k: v for k, v in base_env.items() if k not in CREDENTIAL_VARIABLES}
        self.env = {**inherited, **(job.get("env") or {}), "P3S_JOB_UUID": self.uuid,
                    MARKER_VARIABLE: pilot_uuid, "P3S_JOB_DIR": str(self.workdir),   # P3S_PILOT_UUID
                    "P3S_OUTPUT_DIR": str(self.output_dir)}
        self.force_shell = force_shell
        self.proc: spawn.Child | subprocess.Popen | None = None
        self._logs: tuple[Any, Any] | None = None
        self._pidfd: int | None = None
        self.started_wall = 0.0
        self.started = 0.0                 # monotonic
        self.peak_rss = 0
        self._last_cpu: tuple[float, float] | None = None
        self._known: dict[int, psutil.Process] = {}
        self.last_usage: dict[str, Any] = {}
        self._rusage_before = resource.getrusage(resource.RUSAGE_CHILDREN)

    def start(self) -> None:
        """Start the payload; raises NonStarter with the reason (also written to the .err file)."""
        try:
            for parent in (self.out_path.parent, self.workdir.parent, self.output_dir.parent):
                if not parent.is_dir():          # normally made private at the pilot's start
                    private_dir(parent)
            self.spares.dir("work", self.workdir)
            self.spares.dir("output", self.output_dir)
            command, shell = command_for(self.job, self.workdir, self.force_shell)
            # Kept open (read back for the tails): two file opens fewer per job. Created afresh (or
            # the last job's empty ones renamed), never through a link planted under a name the
            # submitter chose (the job's uuid).
            self._logs = (os.fdopen(self.spares.file("out", self.out_path), "w+b"),
                          os.fdopen(self.spares.file("err", self.err_path), "w+b"))
            self.proc = spawn.start(command, shell, self.workdir, self.env, self._logs[0].fileno(),
                                    self._logs[1].fileno())
        except NonStarter as exc:
            self._note_nonstarter(str(exc))
            raise
        except UnsafePath as exc:
            self._note_nonstarter(str(exc))
            raise NonStarter(str(exc)) from None
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
            if getattr(exc, "filename", None):
                reason += f": {exc.filename}"
            self._note_nonstarter(reason)
            raise NonStarter(reason) from None
        self.started_wall = time.time()
        self.started = time.monotonic()

    def _note_nonstarter(self, reason: str) -> None:
        try:
            with os.fdopen(append_file(self.err_path), "a") as err:
                err.write(f"nonstarter: {reason}\n")
        except OSError:
            pass

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the payload still runs after ``timeout`` seconds."""
        if self._pidfd is None and self.proc.returncode is None and hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.proc.pid)
            except OSError:                 # before Linux 5.3: Popen's polling wait below
                self._pidfd = -1
        if self._pidfd is not None and self._pidfd >= 0:
            # Readable once the process has exited: one wake-up, where Popen.wait(timeout) polls.
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            if not poller.poll(max(0, int(timeout * 1000))):
                return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self, recycle: bool = False) -> None:
        """Release what the pilot holds for this payload (its log files and process handle).

        With ``recycle`` (the payload ended by itself), whichever of its log files and directories
        are empty are handed to the pilot's spares for the next job, provided nothing of the
        payload is left in its process group (which could still write to them)."""
        if recycle and self._logs is not None and self._group_gone():
            for kind, handle, path in (("out", self._logs[0], self.out_path), ("err", self._logs[1], self.err_path)):
                fd = os.dup(handle.fileno())
                if not self.spares.offer_file(kind, path, fd):
                    os.close(fd)
            self.spares.offer_dir("work", self.workdir)
            self.spares.offer_dir("output", self.output_dir)
        if self._logs is not None:
            for handle in self._logs:
                handle.close()
            self._logs = None
        if self._pidfd is not None and self._pidfd >= 0:
            os.close(self._pidfd)
        self._pidfd = None

    def _group_gone(self) -> bool:
        """Whether the payload has been reaped and no process is left in its process group."""
        if self.proc is None or self.proc.returncode is None:
            return False
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
        return False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # --- measurement --------------------------------------------------------------------------
    def _tree(self) -> list[psutil.Process]:
        """The payload and all its descendants (remembered, so that daemonised ones are not lost)."""
        if self.proc is None:
            return []
        root = self._known.get(self.proc.pid)
        if root is None and self.proc.returncode is None:
            try:
                root = self._known[self.proc.pid] = psutil.Process(self.proc.pid)
            except psutil.Error:
                root = None
        if root is not None:
            try:
                for child in root.children(recursive=True):
                    self._known.setdefault(child.pid, child)
            except psutil.Error:
                pass
        alive = []
        for pid, proc in list(self._known.items()):
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
                    continue
            except psutil.Error:
                pass
            if pid != (self.proc.pid if self.proc else None):
                self._known.pop(pid, None)
        return alive

    def usage(self) -> dict[str, Any]:
        """CPU time and %, RSS and peak RSS, threads, I/O bytes, process count of the whole tree;
        empty once no process of the tree is left."""
        cpu = rss = threads = read_bytes = write_bytes = 0
        procs = self._tree()
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu += times.user + times.system + getattr(times, "children_user", 0) + \
                        getattr(times, "children_system", 0)
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    try:
                        io = proc.io_counters()
                        read_bytes += io.read_bytes
                        write_bytes += io.write_bytes
                    except (psutil.AccessDenied, AttributeError):
                        pass
            except psutil.Error:
                continue
        if not procs:
            # gone (being stopped, or not reaped yet): no sample; the last one stays the last usage
            # of the live tree, which final_usage builds on
            return {}
        self.peak_rss = max(self.peak_rss, rss)
        now = time.monotonic()
        percent = 0.0
        if self._last_cpu is not None and now > self._last_cpu[0]:
            percent = max(0.0, (cpu - self._last_cpu[1]) / (now - self._last_cpu[0]) * 100)
        self._last_cpu = (now, cpu)
        self.last_usage = {"cpu_time": round(cpu, 3), "cpu_percent": round(percent, 1), "rss": rss,
                           "peak_rss": self.peak_rss, "threads": threads, "read_bytes": read_bytes,
                           "write_bytes": write_bytes, "nprocs": len(procs)}
        return self.last_usage

    def final_usage(self) -> dict[str, Any]:
        """Usage once the payload has ended: the last sample, with CPU time and peak RSS of the
        whole reaped tree from the kernel's accounting (the pilot runs one payload at a time)."""
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = self._rusage_before
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        peak = after.ru_maxrss * 1024 if after.ru_maxrss > before.ru_maxrss else 0
        final = {k: v for k, v in self.last_usage.items() if k in ("read_bytes", "write_bytes", "threads", "nprocs")}
        final["cpu_time"] = round(max(cpu, self.last_usage.get("cpu_time", 0.0)), 3)
        final["peak_rss"] = max(self.peak_rss, peak)
        if self.started:
            final["wall_time"] = round(time.monotonic() - self.started, 3)
        return final

    # --- stopping -----------------------------------------------------------------------------
    def stop(self, grace: float, tick: Callable[[], None] | None = None) -> int | None:
        """SIGTERM to the process group and every known descendant, SIGKILL after ``grace`` s.

        ``tick`` is called every 50 ms or so meanwhile (the pilot's heartbeats go on)."""
        if self.proc is None:
            return None
        tick = tick or (lambda: None)
        self._tree()
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not self._tree():
                break
            tick()
            time.sleep(0.05)
        self._signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        code = self.proc.poll()
        while code is None and time.monotonic() < deadline:
            tick()
            code = self.wait(0.05)
        # Killed descendants are orphans whose reaping is up to init, which may take a second or
        # more (measured 1.3 s on this machine), so one dead as a zombie counts as ended.
        deadline = time.monotonic() + 2
        while self._tree() and time.monotonic() < deadline:
            tick()
            time.sleep(0.02)
        return code

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        for proc in self._tree():
            try:
                proc.send_signal(signum)
            except psutil.Error:
                pass

    def tails(self, recycle: bool = False) -> dict[str, str]:
        """The last lines of stdout and stderr; then releases the payload (``close(recycle)``)."""
        if self._logs is None:
            return {"stdout_tail": _tail_of_path(self.out_path), "stderr_tail": _tail_of_path(self.err_path)}
        tails = {"stdout_tail": _tail(self._logs[0]), "stderr_tail": _tail(self._logs[1])}
        self.close(recycle)
        return tails


def _tail_of_path(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return _tail(handle)
    except OSError:
        return ""


def _tail(handle: Any) -> str:
    try:
        size = handle.seek(0, os.SEEK_END)
        if not size:
            return ""
        handle.seek(max(0, size - TAIL_BYTES))
        data = handle.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    return "\n".join(lines[-TAIL_LINES:])
