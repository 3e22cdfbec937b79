"""Real p3s-pilot processes for tests, stopped afterwards: one class, ``Pilot``, for every test file.

``pilots`` (a fixture) starts pilots that never idle-stop and poll every second; other files make
their own fixture with ``pilot_starter`` and other defaults.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

FAST = ("-c", "0", "-p", "1")          # never stop idling, ask for work every second


class Pilot:
    """A real p3s-pilot process with its directories under ``tmp``.

    ``defaults`` come before the test's own ``args`` (which win); ``results`` gives it a result
    directory (``-R``, ``self.results``); ``terminate`` makes ``close`` stop it with SIGTERM first
    (the pilot reports and ends its job) before a SIGKILL."""

    def __init__(self, server, tmp: Path, *args: str, url: str | None = None, defaults: tuple[str, ...] = FAST,
                 results: bool = False, terminate: bool = False) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.dirs = {name: tmp / name for name in ("log", "jobs", "work")}
        self.results = tmp / "results" if results else None
        self.terminate = terminate
        command = [sys.executable, "-m", "p3s.cli.pilot", "-S", url or server.url, "--logdir", str(self.dirs["log"]),
                   "--joblogdir", str(self.dirs["jobs"]), "--workdir", str(self.dirs["work"]),
                   *(("-R", str(self.results)) if self.results else ()), "--grace", "1", *defaults, *args]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
        self.stderr_path = tmp / "pilot.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(command, stderr=self._stderr, stdout=subprocess.DEVNULL, env=env)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.stderr_path.read_text()

    def job_dir(self, uuid: str) -> Path:
        return self.dirs["work"] / uuid

    def close(self) -> None:
        if self.proc.poll() is None and self.terminate:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


@contextlib.contextmanager
def pilot_starter(tmp: Path, **options) -> Iterator[Callable[..., Pilot]]:
    """``start(server, *args, url=None)`` makes a ``Pilot`` with ``options``; all are closed at the end."""
    started: list[Pilot] = []

    def start(server, *args: str, url: str | None = None) -> Pilot:
        started.append(Pilot(server, tmp / f"pilot{len(started)}", *args, url=url, **options))
        return started[-1]

    try:
        yield start
    finally:
        for pilot in started:
            pilot.close()


@pytest.fixture
def pilots(tmp_path):
    with pilot_starter(tmp_path) as start:
        yield start
