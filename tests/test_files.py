"""Files are private: the data directory and database, the pilot's directories and job files,
and the job logs the server serves."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.request
import uuid as _uuid
from pathlib import Path

import pytest

from p3s.pilot.dirs import UnsafePath, create_file, private_dir

OTHER_UID = 54321            # a user that is not us and not root


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_data_directory_and_database_are_private(make_server, tmp_path):
    data = tmp_path / "s0" / "data"
    data.mkdir(parents=True, mode=0o755)           # made open by an earlier version
    data.chmod(0o755)
    server = make_server(db="")      # the embedded store: its database files live in the data directory
    server.submit({"payload": "true", "env": {"KEY": "value"}})
    server.register()
    server.stop()                                   # every file written and flushed
    assert data == server.data_dir and mode(data) == 0o700
    files = [p for p in data.rglob("*")]
    assert any(p.suffix == ".sqlite" or "jobs" in p.name for p in files), files
    for path in files:
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, (path, oct(mode(path)))


def run_pilot(server, tmp: Path, *dirs: Path) -> subprocess.CompletedProcess:
    log, jobs, work = dirs
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    return subprocess.run([sys.executable, "-m", "p3s.cli.pilot", "-S", server.url, "-c", "1", "-p", "1",
                           "--logdir", str(log), "--joblogdir", str(jobs), "--workdir", str(work)],
                          env=env, capture_output=True, text=True, timeout=60)


def test_pilot_directories_are_made_private(server, tmp_path):
    dirs = [tmp_path / "p3s" / name for name in ("log", "jobs", "work")]
    done = run_pilot(server, tmp_path, *dirs)
    assert done.returncode == 0, done.stderr
    for path in dirs + [tmp_path / "p3s"]:
        assert mode(path) == 0o700


def test_pilot_refuses_directories_of_another_user(server, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chown(shared, OTHER_UID, OTHER_UID)         # another user made the shared parent
    done = run_pilot(server, tmp_path, shared / "log", tmp_path / "jobs", tmp_path / "work")
    assert done.returncode == 2 and f"owned by uid {OTHER_UID}" in done.stderr, done.stderr
    victim = tmp_path / "victim"
    victim.mkdir()
    trap = tmp_path / "trap"
    trap.symlink_to(victim)
    os.lchown(trap, OTHER_UID, OTHER_UID)          # a link another user planted
    done = run_pilot(server, tmp_path, tmp_path / "log", trap / "jobs", tmp_path / "work")
    assert done.returncode == 2 and "symbolic link owned by uid" in done.stderr, done.stderr
    assert list(victim.iterdir()) == [] and server.ok("GET", "/pilots")["total"] == 0


def test_job_files_never_follow_a_planted_link(server, tmp_path):
    """A client chooses the job's uuid, so a link named after it could be waiting in the log directory."""
    jobs = tmp_path / "jobs"
    private_dir(jobs)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    uuid = str(_uuid.uuid4())
    (jobs / f"{uuid}.out").symlink_to(victim)
    (jobs / f"{uuid}.err").symlink_to(victim)
    server.submit({"uuid": uuid, "payload": "echo overwritten"})
    done = run_pilot(server, tmp_path, tmp_path / "log", jobs, tmp_path / "work")
    assert done.returncode == 0, done.stderr
    assert server.job(uuid)["state"] == "finished"
    assert victim.read_text() == "precious\n"
    out = jobs / f"{uuid}.out"
    assert not out.is_symlink() and out.read_text() == "overwritten\n" and mode(out) == 0o600


def test_create_file_is_exclusive_and_does_not_follow_links(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    os.close(create_file(link))
    assert not link.is_symlink() and target.read_text() == "keep"
    with pytest.raises(UnsafePath):
        private_dir(target)


def test_server_serves_logs_only_under_the_directories_resolved_at_start(make_server, tmp_path):
    allowed = tmp_path / "joblogs"                  # does not exist when the server starts
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = make_server(job_log_dirs=[str(allowed)])
    job = server.submit({"payload": "true"})[0]["uuid"]
    (elsewhere / f"{job}.out").write_text("secret of another user\n")
    allowed.symlink_to(elsewhere)                   # a local user points the allowed path elsewhere
    pilot = server.register()
    server.claim(pilot)
    server.ok("POST", f"/pilots/{pilot}/events", {"event": "jobstop", "job": job, "exit_code": 0,
                                                   "log_dir": str(allowed)})
    reply = server.call("GET", f"/jobs/{job}/log/out")
    assert reply.status == 403, reply
    # a real directory there is served
    allowed.unlink()
    allowed.mkdir()
    (allowed / f"{job}.out").write_text("the log\n")
    request = urllib.request.Request(f"{server.url}/api/v1/jobs/{job}/log/out",
                                     headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read() == b"the log\n"


def test_result_files_never_include_the_servers_own_data_directory(make_server, tmp_path):
    """A client registers a data record pointing at the server's token file: never served."""
    client = "client-token-0123456789"
    server = make_server(tokens=[{"token": "admin-token-0123456789", "role": "admin", "name": "boss"},
                                 {"token": client, "role": "client", "name": "mallory"}],
                         result_dirs=[str(tmp_path)])
    server.data_dir.mkdir(parents=True, exist_ok=True)                      # on MongoDB nothing made it yet
    (server.data_dir / "token").write_text("admin-token-0123456789\n")      # as a generated one would be
    record = server.ok("POST", "/data", {"name": "token", "dirpath": str(server.data_dir)}, 201,
                       token=client)["items"][0]
    reply = server.call("GET", f"/data/{record['uuid']}/content", token=client)
    assert reply.status == 403, reply
    # a link placed after the start does not widen the result directories either
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours\n")
    (tmp_path / "innocent").symlink_to(outside)
    record = server.ok("POST", "/data", {"name": "secret.txt", "dirpath": str(tmp_path / "innocent")}, 201,
                       token=client)["items"][0]
    assert server.call("GET", f"/data/{record['uuid']}/content", token=client).status == 403
