"""`p3s-fleet` with the local backend: real pilots, a real server, real payloads and signals."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from fleet_support import Fleet, fleet, free_port, kill_all  # noqa: F401  (fixtures)

FAST_PILOT = ("--", "-c", "0", "-p", "5", "-b", "1", "--grace", "1")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _by_node(report: dict) -> dict[str, dict]:
    return {host["node"]: host for host in report["hosts"]}


def test_up_report_kill_with_running_payloads(server, fleet: Fleet):
    done = fleet.run("up", "-w", "wn[01-03]", "-n", "2", *FAST_PILOT)
    assert done.returncode == 0, done
    assert "wn[01-03]  ok      2        2" in done.stdout
    assert "3 hosts: 3 ok, 0 failed; 6 pilots started, 6 registered within 30 s" in done.stdout
    assert len(fleet.pilot_pids()) == 6 and len(fleet.pids()) == 12      # each pilot with its orphan guard

    jobs = server.submit({"payload": "sleep 60", "name": "a", "timelimit": 100},
                         {"payload": "sleep 60", "name": "b", "timelimit": 100})
    server.wait_for(lambda: all(server.job(j["uuid"])["state"] == "running" for j in jobs), timeout=20)
    report = _by_node(fleet.json("report", "-w", "wn[01-03]"))
    assert sorted(report) == ["wn01", "wn02", "wn03"]
    assert all(len(h["pilots"]) == 2 and not h["unknown"] and not h["gone"] for h in report.values())
    assert sum(h["server"]["running"] for h in report.values()) == 2
    assert sum(h["server"]["idle"] for h in report.values()) == 4
    assert {j for h in report.values() for j in h["jobs"]} == {j["uuid"] for j in jobs}
    records = {p["uuid"]: p for p in server.ok("GET", "/pilots")["items"]}
    for host in report.values():
        for pilot in host["pilots"]:
            assert records[pilot["uuid"]]["pid"] == pilot["pid"] and records[pilot["uuid"]]["host"] == host["node"]
            assert pilot["rss"] > 0 and pilot["state"] in ("idle", "running")
    busy = [p for h in report.values() for p in h["pilots"] if p["job"]]
    assert len(busy) == 2 and all(p["nprocs"] >= 2 for p in busy)
    table = fleet.run("report")                       # no -w: the hosts the server and the backend know
    assert table.returncode == 0 and table.stdout.startswith("HOST") and "wn03" in table.stdout

    killed = fleet.json("kill", "-w", "wn[01-03]")
    assert sum(len(h["on_request"]) for h in killed["hosts"]) == 6
    assert not any(h["sigterm"] or h["sigkill"] for h in killed["hosts"])
    assert {server.job(j["uuid"])["state"] for j in jobs} == {"killed"}
    assert {p["state"] for p in server.ok("GET", "/pilots")["items"]} == {"stopped"}
    assert fleet.pids() == []


@pytest.mark.server_settings(pilot_lost_timeout=120)    # the stopped pilot must not be declared lost first
def test_mismatches_and_escalation(server, fleet: Fleet):
    assert fleet.run("up", "-w", "wn01", "-n", "2", *FAST_PILOT).returncode == 0
    nowhere = f"http://127.0.0.1:{free_port()}"
    stray = fleet.json("up", "-w", "wn02", "--pilot-server", nowhere, "--register-timeout", "0", *FAST_PILOT)
    assert stray["started"] == 1 and stray["registered"] == 0
    first, second = _by_node(fleet.json("report", "-w", "wn01"))["wn01"]["pilots"]
    os.kill(first["pid"], signal.SIGKILL)             # the server still thinks it alive
    os.kill(second["pid"], signal.SIGSTOP)            # will not answer the server's stop request
    time.sleep(0.2)
    report = _by_node(fleet.json("report", "-w", "wn[01-02]"))
    assert [g["uuid"] for g in report["wn01"]["gone"]] == [first["uuid"]]
    assert report["wn02"]["unknown"] == stray["hosts"][0]["started"]
    assert report["wn02"]["server"] == {"idle": 0, "running": 0, "lost": 0}

    killed = _by_node(fleet.json("kill", "--all", "--wait", "1", "--grace", "1"))
    assert killed["wn01"]["sigkill"] == [second["pid"]]
    assert killed["wn02"]["sigterm"] == stray["hosts"][0]["started"]      # unknown to the server: no wait
    assert fleet.pids() == []
    record = server.ok("GET", f"/pilots/{second['uuid']}")
    assert record["state"] == "stopped" and "SIGKILL" in record["reason"]


def test_unrelated_processes_are_never_touched(server, fleet: Fleet, tmp_path):
    marker = {**os.environ, "P3S_FLEET": fleet.name, "P3S_FLEET_NODE": "wn01"}
    decoys = [
        # what the original pkill.sh matched: anything called "pilot"
        subprocess.Popen(["bash", "-c", "exec -a p3s-pilot-decoy sleep 60"], start_new_session=True),
        # the fleet's environment and the pilot's module name, but not a pilot
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "p3s.cli.pilot"],
                         env=marker, start_new_session=True),
        # a real pilot, started by hand (the server never hears of it)
        subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", f"http://127.0.0.1:{free_port()}",
                          "-H", "wn01", "--logdir", str(tmp_path / "l"), "--joblogdir", str(tmp_path / "j"),
                          "--workdir", str(tmp_path / "w")],
                         start_new_session=True, stderr=subprocess.DEVNULL),
    ]
    try:
        assert fleet.run("up", "-w", "wn01", *FAST_PILOT).returncode == 0
        assert len(_by_node(fleet.json("report", "-w", "wn01"))["wn01"]["pilots"]) == 1
        killed = _by_node(fleet.json("kill", "-w", "wn01", "--wait", "5", "--grace", "1"))
        assert len(killed["wn01"]["found"]) == 1 and len(killed["wn01"]["on_request"]) == 1
        time.sleep(0.3)
        assert all(_alive(d.pid) for d in decoys)
    finally:
        kill_all([d.pid for d in decoys])
        for decoy in decoys:
            decoy.wait(5)


def test_top_up_keeps_the_nominal_count(server, fleet: Fleet):
    server.ok("POST", "/sites", {"name": "lab", "pilots": 5, "cycles": 0, "period": 5, "beat": 1}, 201)
    assert fleet.run("up", "-w", "wn01", "--site", "lab", *FAST_PILOT).returncode == 0
    done = fleet.run("top-up", "--site", "lab", "-w", "wn[01-02]", "--max-per-node", "3", *FAST_PILOT)
    assert done.returncode == 0, done
    assert "nominal 5, alive 1; started 4 (" in done.stdout and "4 registered" in done.stdout
    report = _by_node(fleet.json("report", "--site", "lab"))
    assert sorted(len(h["pilots"]) for h in report.values()) == [2, 3]
    assert all(p["site"] == "lab" for h in report.values() for p in h["pilots"])
    again = fleet.run("top-up", "--site", "lab")           # the hosts: where the site's pilots are
    assert again.returncode == 0 and "nominal 5, alive 5; nothing to start" in again.stdout
    server.ok("PATCH", "/sites/lab", {"pilots": 6})
    more = fleet.json("top-up", "--site", "lab", "--max-per-node", "3", *FAST_PILOT)
    assert more["plan"] == {min(report, key=lambda n: len(report[n]["pilots"])): 1} and more["alive"] == 5
    killed = fleet.json("kill", "--site", "lab")
    assert sum(len(h["on_request"]) for h in killed["hosts"]) == 6 and fleet.pids() == []


def test_mistakes_are_reported_before_anything_starts(server, fleet: Fleet):
    cases = [
        (("up", "-w", "wn[01-20"), "missing bracket"),
        (("up", "-w", "wn01;reboot"), "bad host name"),
        (("up", "-w", "wn01", "--", "-H", "other"), "-H/--host is set by p3s-fleet"),
        (("up", "-w", "wn01", "--", "-c", "many"), "invalid int value: 'many'"),
        (("up", "-w", "wn01", "--fleet", "a b"), "bad fleet name"),
        (("report", "-w", "wn01", "--", "-c", "1"), "pilot options (after --) are for up and top-up"),
        (("kill",), "kill needs -w/--nodes, --site or --all"),
        (("up",), "up needs the hosts"),
    ]
    for args, message in cases:
        done = fleet.run(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done)
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args, message in ((("up", "-w", "wn01", "-S", nowhere), "(server unreachable); nothing started"),
                          (("up", "-w", "wn01", "--site", "nosuch"), "no site 'nosuch' (HTTP 404); nothing started")):
        done = fleet.run(*args)
        assert done.returncode == 1 and message in done.stderr, (args, done)
    unknown = fleet.run("report", "-w", "wn01", backend="condor")
    assert unknown.returncode == 2 and "no backend 'condor' (installed: local, sge, slurm, ssh)" in unknown.stderr
    assert fleet.pids() == []


def test_pilots_run_from_the_shipped_zipapp_on_a_python_without_p3s(server, fleet: Fleet, tmp_path):
    bare = tmp_path / "bare-python"          # no site-packages at all: neither p3s nor psutil
    bare.write_text("#!/bin/sh\nexec /usr/bin/python3 -I -S \"$@\"\n")
    bare.chmod(0o755)
    done = fleet.json("up", "-w", "wn01", "--python", str(bare), "--", "-c", "0", "-p", "5", "-b", "1")
    assert done["registered"] == 1, done
    shipped = list(fleet.dirs["logs"].glob("p3s-pilot-*.pyz"))
    assert len(shipped) == 1 and oct(shipped[0].stat().st_mode & 0o777) == "0o644"
    pid = done["hosts"][0]["started"][0]
    maps = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    assert maps[0].endswith(b"python3") and b"-S" in maps
    # busy for 2.5 s with 40 MB: heartbeats every second carry usage read from /proc (no psutil)
    busy = ("import time; x = bytearray(40_000_000); t = time.time()\n"
            "while time.process_time() < 1 or time.time() - t < 2.5: pass")
    (job,) = server.submit({"payload": f"python3 -c '{busy}'", "name": "usage"})
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "finished", timeout=30)
    record = server.job(job["uuid"])
    assert record["exit_code"] == 0
    samples = record["usage_series"]
    assert samples and max(s["rss"] for s in samples) >= 40_000_000, record
    assert max(s["cpu_time"] for s in samples) > 0.5 and all(s["threads"] >= 1 and s["nprocs"] >= 1 for s in samples)
    killed = fleet.json("kill", "-w", "wn01")
    assert killed["hosts"][0]["on_request"] == [pid]


def test_a_host_whose_pilots_cannot_start_fails_with_the_reason(server, fleet: Fleet, tmp_path):
    missing = tmp_path / "no-python"
    missing.write_text("#!/bin/sh\necho 'python3: not found' >&2; exit 127\n")
    missing.chmod(0o755)
    done = fleet.run("up", "-w", "wn[01-02]", "--python", str(missing), "--register-timeout", "5")
    assert done.returncode == 1
    assert "agent failed (exit status 127): python3: not found" in done.stdout
    assert "2 hosts failed: wn[01-02]" in done.stderr
    bad_dir = fleet.json("up", "-w", "wn01", "--logdir", "/proc/no/such", code=1)
    assert "cannot create /proc/no/such" in bad_dir["hosts"][0]["error"]


def _lines(stream) -> queue.Queue:
    """The lines of ``stream`` as they come, read by a thread (None at the end)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _line_with(lines: queue.Queue, text: str, timeout: float) -> str:
    """The next line containing ``text``, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if line is None or text in line:
            return line or ""


def test_top_up_every_n_seconds_replaces_a_lost_pilot(server, fleet: Fleet):
    server.ok("POST", "/sites", {"name": "lab", "pilots": 2, "cycles": 0, "period": 5, "beat": 1}, 201)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    loop = subprocess.Popen([sys.executable, "-m", "p3s.cli.fleet",
                             *fleet.args("top-up", "--site", "lab", "-w", "wn01", "--every", "1", *FAST_PILOT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = _lines(loop.stdout)
    try:
        assert "nominal 2, alive 0; started 2 (wn01 +2), 2 registered" in _line_with(lines, "started", 20)
        first = server.ok("GET", "/pilots?state=idle,running")["items"]
        os.kill(first[0]["pid"], signal.SIGKILL)          # lost after the server's pilot_lost_timeout (3 s)
        assert "nominal 2, alive 1; started 1 (wn01 +1), 1 registered" in _line_with(lines, "started", 20)
        alive = server.ok("GET", "/pilots?state=idle,running")["items"]
        assert len(alive) == 2 and first[1]["uuid"] in {p["uuid"] for p in alive}
    finally:
        loop.send_signal(signal.SIGINT)
        try:
            loop.wait(20)
        finally:
            loop.kill()
            loop.wait()
        err = loop.stderr.read()
    assert loop.returncode == 130 and "interrupted" in err, err


def test_one_factory_round_for_two_sites_records_an_event_each(server, fleet: Fleet):
    for name in ("lab", "dock"):
        server.ok("POST", "/sites", {"name": name, "pilots": 1, "cycles": 0, "period": 5, "beat": 1}, 201)
    done = fleet.run("top-up", "--site", "lab", "--site", "dock", "-w", "wn01", *FAST_PILOT)
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert "site lab: nominal 1, alive 0; started 1 (wn01 +1), 1 registered" in lines[0]
    assert "site dock: nominal 1, alive 0; started 1 (wn01 +1), 1 registered" in lines[1]
    alive = server.ok("GET", "/pilots?state=idle,running")["items"]
    assert sorted(p["site"] for p in alive) == ["dock", "lab"]
    events = server.ok("GET", "/events?kind=fleet.topup")["items"]
    assert sorted((e["site"], e["data"]["submitted"], e["data"]["backend"]) for e in events) == \
        [("dock", 1, "local"), ("lab", 1, "local")]
    missing = fleet.run("top-up", "--site", "lab", "--site", "nosuch", "-w", "wn01")
    assert missing.returncode == 1 and "no site 'nosuch'" in missing.stderr and "nothing started" in missing.stderr
    assert fleet.json("kill", "--all")["hosts"][0]["on_request"]
