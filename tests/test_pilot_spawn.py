"""Payloads started with posix_spawn (p3s.pilot.spawn) get what Popen gave them: their work
directory, their own session, stdin from /dev/null, SIGPIPE at its default action, the program
found in the job's PATH, and no descriptor of the pilot's, even one it inherited."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from p3s.pilot.payload import NonStarter, Payload
from p3s.pilot.spares import Spares

SIGPIPE_BIT = 1 << (13 - 1)


def run(tmp: Path, job: dict) -> tuple[str, Payload]:
    p = Payload({"uuid": "j1", **job}, "pilot-x", dict(os.environ), tmp / "jobs", tmp / "work",
                resultroot=tmp / "results", spares=Spares())
    p.start()
    assert p.wait(30) == 0
    p.tails()
    return (tmp / "jobs" / "j1.out").read_text(), p


def test_the_payload_runs_in_its_directory_and_session_with_default_sigpipe(tmp_path):
    here = os.getcwd()
    out, p = run(tmp_path, {"payload": 'pwd; ps -o sid= -p $$; grep SigIgn /proc/$$/status; '
                                       'readlink /proc/$$/fd/0', "env": {"P3S_EXECMODE": "1"}})
    assert os.getcwd() == here                         # the pilot's own directory is back
    cwd, sid, ignored, stdin = out.split("\n")[:4]
    assert cwd == str(tmp_path / "work" / "j1")
    assert int(sid) == p.pid                           # a session of its own, led by the payload
    assert not int(ignored.split()[1], 16) & SIGPIPE_BIT
    assert stdin == "/dev/null"


def test_the_program_is_found_in_the_jobs_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "hello-p3s"
    program.write_text("#!/bin/sh\necho hello from $0\n")
    program.chmod(0o755)
    out, _ = run(tmp_path, {"payload": "hello-p3s", "env": {"PATH": f"{bin_dir}:/usr/bin:/bin"}})
    assert out == f"hello from {program}\n"


def test_a_missing_program_is_a_nonstarter_naming_it(tmp_path):
    p = Payload({"uuid": "j2", "payload": "no-such-program-p3s --x"}, "pilot-x", dict(os.environ),
                tmp_path / "jobs", tmp_path / "work", resultroot=tmp_path / "results")
    try:
        p.start()
    except NonStarter as exc:
        assert "no-such-program-p3s" in str(exc) and "FileNotFoundError" in str(exc)
    else:
        raise AssertionError("started a program that does not exist")
    assert "no-such-program-p3s" in (tmp_path / "jobs" / "j2.err").read_text()


def test_no_descriptor_the_pilot_inherited_reaches_a_payload(server, tmp_path):
    job = server.submit({"payload": "ls /proc/self/fd", "jobtype": "fds"})[0]["uuid"]
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    pilot = subprocess.Popen([sys.executable, "-m", "p3s.cli.pilot", "-S", server.url, "-c", "1", "-p", "1",
                              "--logdir", str(tmp_path / "log"), "--joblogdir", str(tmp_path / "jobs"),
                              "--workdir", str(tmp_path / "work")], env=env, pass_fds=(write_end,),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.close(write_end)
        deadline = time.monotonic() + 60
        while server.job(job)["state"] not in ("finished", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
        shown = server.job(job)
        assert shown["state"] == "finished", shown
        # ls itself holds 0, 1, 2 and the directory it lists (3): nothing else.
        assert shown["stdout_tail"].split() == ["0", "1", "2", "3"]
    finally:
        pilot.kill()
        pilot.wait(30)
        os.close(read_end)


def test_usage_of_a_tree_that_is_gone_is_no_sample_and_keeps_the_last_one(tmp_path):
    # The issue: heartbeats while a payload is stopped sampled a tree already gone, and the job's
    # usage series got a sample of no process (and the end report lost the tree's I/O figures).
    p = Payload({"uuid": "j3", "payload": "sleep 0.5"}, "pilot-x", dict(os.environ), tmp_path / "jobs",
                tmp_path / "work", resultroot=tmp_path / "results", spares=Spares())
    p.start()
    live = p.usage()
    assert live["nprocs"] >= 1
    assert p.wait(30) == 0
    assert p.usage() == {}
    assert p.last_usage == live and p.final_usage()["nprocs"] == live["nprocs"]
