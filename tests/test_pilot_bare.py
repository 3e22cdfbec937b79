"""The pilot alone: its package imports nothing else of p3s and nothing outside the standard library,
runs as the zipapp in an interpreter without site-packages, and without psutil reads the same usage
figures from /proc (``p3s.pilot.procfs``)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from p3s.backends import pyz
from p3s.pilot import procfs

PILOT_DIR = Path(__file__).resolve().parent.parent / "p3s" / "pilot"
BARE = ["/usr/bin/python3", "-I", "-S"]          # -S: no site-packages, -I: no PYTHON* variables, no cwd


def test_the_pilot_package_imports_only_the_standard_library_and_itself():
    stdlib = set(sys.stdlib_module_names)
    for path in PILOT_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or name == "p3s" or name.startswith("p3s.pilot") or top == "psutil", \
                    f"{path.name} imports {name}"


def test_the_zipapp_holds_the_pilot_package_and_is_reproducible(tmp_path):
    import zipfile

    path = pyz.write(tmp_path / "p3s-pilot.pyz")
    assert path.read_bytes().startswith(b"#!/usr/bin/env python3\n") and os.access(path, os.X_OK)
    names = set(zipfile.ZipFile(path).namelist())
    assert {"__main__.py", "p3s/__init__.py", "p3s/pilot/cli.py", "p3s/pilot/procfs.py"} <= names
    assert not any(n.startswith(("p3s/server", "p3s/cli/")) for n in names)
    pyz.build.cache_clear()
    assert pyz.build() == path.read_bytes()


def test_a_bare_interpreter_runs_the_zipapp_pilot_with_usage_from_proc(server, tmp_path):
    if not Path(BARE[0]).exists():
        pytest.skip("no /usr/bin/python3")
    written = subprocess.run([sys.executable, "-m", "p3s.cli.fleet", "zipapp", "--output", str(tmp_path / "p3s-pilot.pyz")],
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0 and written.stdout.strip() == str(tmp_path / "p3s-pilot.pyz"), written
    path = tmp_path / "p3s-pilot.pyz"
    probe = subprocess.run([*BARE, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import p3s.pilot.payload as p; "
                            "import importlib.util as u; print(p.psutil.__name__, u.find_spec('psutil'), "
                            "u.find_spec('tornado'))", str(path)], capture_output=True, text=True, timeout=30)
    assert probe.stdout.split() == ["p3s.pilot.procfs", "None", "None"], probe
    dirs = {name: tmp_path / name for name in ("log", "jobs", "work")}
    env = {"PATH": os.environ["PATH"], "P3S_TOKEN": server.token}        # the token in the environment
    pilot = subprocess.Popen([*BARE, str(path), "-S", server.url, "-H", "bare01", "-c", "0", "-p", "5", "-b", "1",
                              "--logdir", str(dirs["log"]), "--joblogdir", str(dirs["jobs"]), "--workdir", str(dirs["work"])],
                             stderr=open(tmp_path / "pilot.stderr", "w"), env=env)
    try:
        # Spin for 1 s of CPU time (a loaded machine gives less CPU per wall second) and 2.5 s of wall
        # time (heartbeats, which carry the usage samples, come every wall second after the first).
        busy = ("import time; x = bytearray(40_000_000); t = time.time()\n"
                "while time.process_time() < 1 or time.time() - t < 2.5: pass")
        (job,) = server.submit({"payload": f"python3 -c '{busy}'", "name": "bare"})
        server.wait_for(lambda: server.job(job["uuid"])["state"] == "finished", timeout=30)
        record = server.job(job["uuid"])
        assert record["exit_code"] == 0
        samples = record["usage_series"]
        assert samples and max(s["rss"] for s in samples) >= 40_000_000
        assert max(s["cpu_time"] for s in samples) > 0.5
        assert record["usage"]["peak_rss"] >= 40_000_000
        (registered,) = server.ok("GET", "/pilots?host=bare01")["items"]
        assert registered["pid"] == pilot.pid and registered["state"] in ("idle", "running")
    finally:
        pilot.terminate()
        pilot.wait(20)
    assert pilot.returncode == 0, (tmp_path / "pilot.stderr").read_text()


def test_procfs_gives_psutils_figures(tmp_path):
    script = ("import os, time, sys\nx = bytearray(30_000_000)\nwhile time.process_time() < 0.3: pass\n"
              "open(sys.argv[1], 'wb').write(b'y' * 2_000_000)\nos.fsync(os.open(sys.argv[1], os.O_RDONLY))\n"
              "child = os.fork()\nif child == 0:\n    time.sleep(30)\n    os._exit(0)\nprint('ready', flush=True)\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        ours, theirs = procfs.Process(proc.pid), psutil.Process(proc.pid)
        deadline = time.monotonic() + 10      # 'ready' comes just before the sleep: on a busy machine the
        while theirs.status() != "sleeping" and time.monotonic() < deadline:    # script may not be there yet
            time.sleep(0.02)
        assert [c.pid for c in ours.children(recursive=True)] == [c.pid for c in theirs.children(recursive=True)]
        assert ours.is_running() and ours.status() == theirs.status() == "sleeping"
        mine, real = ours.cpu_times(), theirs.cpu_times()
        assert abs(mine.user + mine.system - real.user - real.system) < 0.05 and mine.user + mine.system >= 0.29
        assert abs(ours.memory_info().rss - theirs.memory_info().rss) < 1_000_000
        assert ours.memory_info().rss > 30_000_000
        assert ours.num_threads() == theirs.num_threads()
        assert ours.io_counters().write_bytes == theirs.io_counters().write_bytes
        child = ours.children()[0]
        child.kill()
        deadline = time.monotonic() + 10
        while child.is_running() and child.status() != procfs.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.status() == procfs.STATUS_ZOMBIE
    finally:
        proc.kill()
        proc.wait(10)
    assert not ours.is_running()
    with pytest.raises(procfs.NoSuchProcess):
        ours.cpu_times()
