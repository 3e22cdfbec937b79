"""Fixtures of the fleet tests: a fleet name of the test's own (every process carrying it is killed
at the end, pass or fail), the ``p3s-fleet`` command, a real OpenSSH server on loopback (see
``sshd.py``) and a host that never answers. Only 127.0.0.0/8 is ever used."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sshd import SSHDUnavailable, SSHServer, SilentHost, free_port, ssh_config  # noqa: F401  (re-exported)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def processes_with(key: str, value: str) -> list[int]:
    """Pids of the live processes whose environment has ``key=value``."""
    wanted = f"{key}={value}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if wanted in env and state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Fleet:
    """Runs ``p3s-fleet`` for one test with its own fleet name and directories."""

    def __init__(self, tmp: Path, server: Any) -> None:
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.tmp = tmp
        self.server = server
        self.dirs = {d: tmp / d for d in ("logs", "jobs", "work")}

    def args(self, command: str, *extra: str, backend: str = "local") -> list[str]:
        common = [command, "-B", backend, "--fleet", self.name, "-S", self.server.url]
        if command in ("up", "top-up"):
            common += ["--logdir", str(self.dirs["logs"]), "--joblogdir", str(self.dirs["jobs"]),
                       "--workdir", str(self.dirs["work"])]
        return common + list(extra)

    def run(self, command: str, *extra: str, backend: str = "local", timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("P3S_", "SSH_AUTH"))},
               "P3S_TOKEN": self.server.token, **(env or {})}
        argv = self.args(command, *extra, backend=backend)
        return subprocess.run([sys.executable, "-m", "p3s.cli.fleet", *argv], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def json(self, command: str, *extra: str, backend: str = "local", code: int | None = 0,
             env: dict[str, str] | None = None) -> dict:
        done = self.run(command, *_json_first(extra), backend=backend, env=env)
        if code is not None:
            assert done.returncode == code, done
        return json.loads(done.stdout)

    def pids(self) -> list[int]:
        """Every process of this fleet: pilots, their orphan guards, payloads."""
        return processes_with("P3S_FLEET", self.name)

    def pilot_pids(self) -> list[int]:
        return [pid for pid in self.pids() if _comm(pid) == "p3s-pilot"]

    def cleanup(self) -> None:
        kill_all(self.pids())


def _json_first(extra: tuple[str, ...]) -> list[str]:
    """``--json`` before any ``--`` (after it, it would be a pilot option)."""
    extra = list(extra)
    at = extra.index("--") if "--" in extra else len(extra)
    return extra[:at] + ["--json"] + extra[at:]


@pytest.fixture
def fleet(server, tmp_path):
    """A fleet of the test's own against the test's server; its processes die with the test."""
    fleet = Fleet(tmp_path / "fleet", server)
    yield fleet
    fleet.cleanup()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd listening on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (one port)."""
    try:
        server = SSHServer(tmp_path_factory.mktemp("sshd"), ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    except SSHDUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def silent_host():
    """A host on 127.0.0.4 that accepts TCP connections and never answers."""
    host = SilentHost("127.0.0.4")
    yield host
    host.close()
