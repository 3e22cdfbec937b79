"""No secret leaves its holder: the pilot's token never reaches a payload or a command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHELL = {"P3S_EXECMODE": "SHELL"}


def run_pilot(server, tmp: Path, *args: str, env: dict | None = None, timeout: float = 60):
    dirs = [("--logdir", tmp / "log"), ("--joblogdir", tmp / "jobs"), ("--workdir", tmp / "work")]
    command = [sys.executable, "-m", "p3s.cli.pilot", "-S", server.url, "-c", "1", "-p", "1", "--grace", "1",
               *(x for flag, path in dirs for x in (flag, str(path))), *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    return subprocess.run(command, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def test_a_payload_never_sees_the_pilots_token(server, tmp_path):
    job = server.submit({"payload": "env", "env": {"MINE": "visible"}})[0]["uuid"]
    site_job = server.submit({"payload": "echo token=$P3S_TOKEN file=$P3S_TOKEN_FILE", "env": SHELL})[0]["uuid"]
    done = run_pilot(server, tmp_path, env={"P3S_TOKEN": server.token, "P3S_PILOT_TOKEN": "fleet-secret"})
    assert done.returncode == 0, done.stderr
    shown = server.job(job)
    assert shown["state"] == "finished" and "MINE=visible" in shown["stdout_tail"]
    assert server.token not in shown["stdout_tail"] and "P3S_TOKEN" not in shown["stdout_tail"]
    assert "fleet-secret" not in shown["stdout_tail"]
    assert server.job(site_job)["stdout_tail"] == "token= file="
    # nor through a token file, nor through the full log the pilot wrote
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    token_file.chmod(0o600)
    job = server.submit({"payload": "env"})[0]["uuid"]
    done = run_pilot(server, tmp_path / "2", env={"P3S_TOKEN_FILE": str(token_file)})
    assert done.returncode == 0, done.stderr
    assert server.job(job)["state"] == "finished"
    assert "P3S_TOKEN" not in server.job(job)["stdout_tail"]
    assert server.token not in (tmp_path / "2" / "jobs" / f"{job}.out").read_text()


def test_the_token_is_refused_on_the_command_line(server, tmp_path):
    done = run_pilot(server, tmp_path, "--token", server.token)
    assert done.returncode == 2 and "--token is refused" in done.stderr and "--token-file" in done.stderr
    assert server.ok("GET", "/pilots")["total"] == 0


def test_a_client_command_warns_once_about_a_token_on_its_command_line(server, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    command = [sys.executable, "-m", "p3s.cli.job", "list", "-S", server.url, "--json"]
    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    token_file.chmod(0o600)
    for extra, env, warned in ((["--token", server.token], {}, True),
                               (["--token-file", str(token_file)], {}, False),
                               ([], {"P3S_TOKEN": server.token}, False)):
        done = subprocess.run(command + extra, env={**base, **env}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr          # --token still works
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: --token")]
        assert warnings == (["warning: --token shows the token to every user of this machine (ps); use "
                             "--token-file FILE (owner-only) or $P3S_TOKEN instead"] if warned else []), done.stderr


def test_a_token_file_others_can_read_is_refused(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    for mode in (0o644, 0o640, 0o604):
        token_file.chmod(mode)
        done = run_pilot(server, tmp_path, "--token-file", str(token_file))
        assert done.returncode == 2 and f"mode {mode:04o}" in done.stderr and "chmod 600" in done.stderr, done.stderr
    link = tmp_path / "link"
    link.symlink_to(token_file)
    token_file.chmod(0o600)
    done = run_pilot(server, tmp_path, "--token-file", str(link))
    assert done.returncode == 2 and "cannot read token file" in done.stderr
    assert server.ok("GET", "/pilots")["total"] == 0
    done = run_pilot(server, tmp_path, "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    assert server.ok("GET", "/pilots")["total"] == 1


def test_a_fleet_hands_its_pilots_a_bootstrap_token_from_a_private_file(make_server, tmp_path):
    from fleet_support import Fleet

    server = make_server(tokens=[{"token": "admin-token-0123456789", "role": "admin", "name": "boss"},
                                 {"token": "pilot-token-01234567890", "role": "pilot", "name": "lab-pilots",
                                  "site": "lab", "max_pilots": 2}])
    server.ok("POST", "/sites", {"name": "lab"}, 201)
    fleet = Fleet(tmp_path / "fleet", server)
    try:
        token_file = tmp_path / "pilot-token"
        token_file.write_text("pilot-token-01234567890\n")
        token_file.chmod(0o644)
        done = fleet.run("up", "-w", "wn01", "-n", "2", "--site", "lab", "--pilot-token-file", str(token_file),
                         "--", "-c", "0", "-p", "5")
        assert done.returncode == 2 and "chmod 600" in done.stderr and fleet.pids() == []
        done = fleet.run("up", "-w", "wn01", "-n", "1", "--pilot-token", "pilot-token-01234567890")
        assert done.returncode == 2 and "--pilot-token is refused" in done.stderr
        token_file.chmod(0o600)
        done = fleet.run("up", "-w", "wn01", "-n", "2", "--site", "lab", "--pilot-token-file", str(token_file),
                         "--", "-c", "0", "-p", "5")
        assert done.returncode == 0, done
        pilots = server.ok("GET", "/pilots?state=idle,running")["items"]
        assert len(pilots) == 2 and {p["registrar"] for p in pilots} == {"lab-pilots"}
        for pid in fleet.pilot_pids():                 # the token is in no pilot's visible environment
            with open(f"/proc/{pid}/environ", "rb") as handle:
                assert b"pilot-token-0123" not in handle.read()
    finally:
        fleet.cleanup()


def test_clients_read_their_token_from_a_private_file_too(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    command = [sys.executable, "-m", "p3s.cli.job", "list", "-S", server.url, "--token-file", str(token_file)]
    token_file.chmod(0o640)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "chmod 600" in done.stderr
    token_file.chmod(0o600)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
