"""The README's main command: server, local pilots and sample jobs, stopped cleanly by Ctrl-C."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from p3s.pilot.client import Client


def test_demo_runs_sample_jobs_and_stops_cleanly(tmp_path):
    demo = subprocess.Popen([sys.executable, "-m", "p3s.cli.demo", "--data-dir", str(tmp_path), "--port", "0",
                             "--pilots", "2"], stdout=subprocess.PIPE, text=True)
    lines = []
    while not any("Press Ctrl-C" in line for line in lines):
        line = demo.stdout.readline()
        assert line, f"demo ended early: {lines}"
        lines.append(line)
    url = next(line.split()[1] for line in lines if line.strip().startswith("API"))[: -len("/api/v1")]
    assert any(line.strip().startswith("monitor") and url in line for line in lines)
    client = Client(url, (tmp_path / "token").read_text().strip())
    deadline = time.monotonic() + 30
    while client.summary()["jobs"]["finished"] < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    states = {j["name"]: j["state"] for j in client.list("jobs")["items"]}
    assert states["hello"] == "finished" and states["fails"] == "failed"
    deadline = time.monotonic() + 30
    while client.list("workflows")["items"][0]["state"] != "finished" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.list("workflows")["items"][0]["state"] == "finished"
    counts = sorted((tmp_path / "demo" / "out").glob("run0001.filter*.txt"))
    assert [c.read_text().strip() for c in counts] == ["2", "1", "1"]
    demo.send_signal(signal.SIGINT)
    assert demo.wait(30) == 0
    assert "stopping" in demo.stdout.read()
    # everything was reported before the server stopped: every pilot says it stopped
    server = subprocess.Popen([sys.executable, "-m", "p3s.cli.server", "--data-dir", str(tmp_path), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
        pilots = Client(url, client.token).list("pilots")["items"]
        assert len(pilots) == 2 and {p["state"] for p in pilots} == {"stopped"}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
