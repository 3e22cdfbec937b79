"""Real p3s-pilot processes for tests (never idle-stopping, 1 s period), stopped afterwards."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


class Pilot:
    """A real p3s-pilot process."""

    def __init__(self, server, tmp: Path, *args: str, url: str | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.stderr_path = tmp / "pilot.stderr"
        self._stderr = open(self.stderr_path, "w")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p3s.cli.pilot", "-S", url or server.url, "--logdir", str(tmp / "log"),
             "--joblogdir", str(tmp / "jobs"), "--workdir", str(tmp / "work"), "--grace", "1", "-c", "0", "-p", "1", *args],
            stderr=self._stderr, stdout=subprocess.DEVNULL, env=env)

    def log(self) -> str:
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


@pytest.fixture
def pilots(tmp_path):
    started: list[Pilot] = []

    def start(server, *args: str, url: str | None = None) -> Pilot:
        started.append(Pilot(server, tmp_path / f"pilot{len(started)}", *args, url=url))
        return started[-1]

    yield start
    for pilot in started:
        pilot.close()
