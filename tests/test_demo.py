"""The README's main command: server, local pilots and sample jobs, stopped cleanly by Ctrl-C."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from p3s.pilot.client import Client


def read_until_ready(demo: subprocess.Popen) -> list[str]:
    """The demo's output lines up to its "Press Ctrl-C" line (fails if it ends before)."""
    lines: list[str] = []
    while not any("Press Ctrl-C" in line for line in lines):
        line = demo.stdout.readline()
        assert line, f"demo ended early: {lines}"
        lines.append(line)
    return lines


def test_demo_runs_sample_jobs_and_stops_cleanly(tmp_path):
    demo = subprocess.Popen([sys.executable, "-m", "p3s.cli.demo", "--data-dir", str(tmp_path), "--port", "0",
                             "--pilots", "2"], stdout=subprocess.PIPE, text=True)
    try:
        lines = read_until_ready(demo)
        url = next(line.split()[1] for line in lines if line.strip().startswith("API"))[: -len("/api/v1")]
        assert any(line.strip().startswith("monitor") and url in line for line in lines)
        client = Client(url, (tmp_path / "token").read_text().strip())
        deadline = time.monotonic() + 30

        def states() -> dict:
            return {j["name"]: j["state"] for j in client.list("jobs", limit=1000)["items"]}
        while (states().get("hello"), states().get("fails")) != ("finished", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
        states = states()
        assert states["hello"] == "finished" and states["fails"] == "failed"
        deadline = time.monotonic() + 30
        while client.list("workflows")["items"][0]["state"] != "finished" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.list("workflows")["items"][0]["state"] == "finished"
        counts = sorted((tmp_path / "demo" / "out").glob("run0001.filter*.txt"))
        assert [c.read_text().strip() for c in counts] == ["2", "1", "1"]
    finally:
        demo.send_signal(signal.SIGINT)                # the demo stops its pilots and server itself
        code = demo.wait(30)
    assert code == 0
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


def _demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p3s.cli.demo", *args], capture_output=True, text=True, timeout=60)


def test_demo_that_cannot_start_says_why(make_server, tmp_path):
    server = make_server(db="")     # the embedded store, whose data directory the demo finds locked
    taken = _demo("--data-dir", str(tmp_path / "d"), "--port", str(server.port), "--pilots", "0")
    assert taken.returncode == 1 and f"port {server.port} is not free" in taken.stderr
    busy = _demo("--data-dir", str(server.data_dir), "--port", "0", "--pilots", "0")
    assert busy.returncode == 1 and "is in use by another p3s-server" in busy.stderr, busy.stderr
    refused = _demo("--data-dir", str(server.data_dir), "--port", "0", "--reset")
    assert refused.returncode == 2 and "cannot reset" in refused.stderr
    assert (server.data_dir / "db").exists()                           # nothing removed under a running server


def test_one_time_login_link(make_server):
    import urllib.error
    import urllib.request

    tokens = [{"token": "admin-token-0123456789", "role": "admin", "name": "boss"},
              {"token": "client-token-0123456789", "role": "client", "name": "shifter"}]
    server = make_server(tokens=tokens)
    assert server.call("POST", "/login-link", token="client-token-0123456789").status == 403
    link = server.ok("POST", "/login-link", status=201)
    assert link["seconds"] <= 600 and link["expires"].endswith("Z") and len(link["path"]) > 50

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)

    def open_link(path: str) -> tuple[str, str]:
        try:
            opener.open(server.url + path, timeout=10)
        except urllib.error.HTTPError as exc:
            return exc.headers["Location"], exc.headers.get("Set-Cookie") or ""
        raise AssertionError("no redirect")

    location, cookie = open_link(link["path"])
    assert location == "/" and "p3s_session=" in cookie and "HttpOnly" in cookie
    again, cookie = open_link(link["path"])                            # single use
    assert again.startswith("/login") and cookie == ""
    forged, cookie = open_link("/login/link?code=" + "A" * 43)
    assert forged.startswith("/login") and cookie == ""


def test_demo_reset_starts_afresh_and_keeps_a_trickle(tmp_path):
    old = tmp_path / "db"
    old.mkdir()
    (old / "leftover").write_text("x")
    demo = subprocess.Popen([sys.executable, "-m", "p3s.cli.demo", "--data-dir", str(tmp_path), "--port", "0",
                             "--pilots", "1", "--trickle", "0.5", "--reset"], stdout=subprocess.PIPE, text=True)
    try:
        lines = read_until_ready(demo)
        assert not (old / "leftover").exists()
        monitor = next(line.split()[1] for line in lines if line.strip().startswith("monitor"))
        assert "/login/link?code=" in monitor
        url = monitor.split("/login/link")[0]
        client = Client(url, (tmp_path / "token").read_text().strip())
        deadline = time.monotonic() + 30
        while client.summary()["jobs_total"] < 12 and time.monotonic() < deadline:   # 5 samples, 3 workflow, trickle
            time.sleep(0.2)
        assert client.summary()["jobs_total"] >= 12
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 0
