"""`p3s-fleet` with the ssh backend against a real OpenSSH server on loopback: key authentication,
strict host keys, a host that refuses connections and one that never answers; no shell injection."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from fleet_support import Fleet, SSHServer, fleet, free_port, kill_all, silent_host, ssh_config, sshd  # noqa: F401

FAST_PILOT = ("--", "-c", "0", "-p", "5", "-b", "1", "--grace", "1")
NODES = {"wn01": "127.0.0.1", "wn02": "127.0.0.2", "wn03": "127.0.0.3"}


def ssh_args(sshd: SSHServer, tmp: Path, silent=None, known_hosts: Path | None = None,
             identity: bool = True) -> list[str]:
    hosts = {alias: (address, sshd.port) for alias, address in NODES.items()}
    hosts["wnrefused"] = ("127.0.0.1", free_port())
    if silent is not None:
        hosts["wnslow"] = (silent.address, silent.port)
    config = ssh_config(tmp / "ssh_config", hosts, sshd.user_key if identity else None)
    known_hosts = known_hosts or sshd.known_hosts(tmp / "known_hosts")
    return ["--ssh-config", str(config), "--known-hosts", str(known_hosts), "--connect-timeout", "1.5",
            "--python", sys.executable]


def test_up_report_kill_over_ssh_with_a_refusing_and_a_silent_host(server, fleet: Fleet, sshd, silent_host,
                                                                   tmp_path):
    ssh = ssh_args(sshd, tmp_path, silent_host)
    # The silent host never answers: only the 1.5 s connect timeout ends the command (fleet.run's 60 s guards it).
    up = fleet.json("up", "-w", "wn[01-03],wnrefused,wnslow", "-n", "2", *ssh, *FAST_PILOT, backend="ssh", code=1)
    hosts = {h["node"]: h for h in up["hosts"]}
    assert all(hosts[n]["ok"] and len(hosts[n]["registered"]) == 2 for n in NODES)
    assert "connection refused" in hosts["wnrefused"]["error"]
    assert "timed out after 1.5 s waiting for its banner" in hosts["wnslow"]["error"]
    assert up["started"] == 6 and up["registered"] == 6 and up["failed"] == 2
    pilots = server.ok("GET", "/pilots")["items"]
    assert sorted(p["host"] for p in pilots) == ["wn01", "wn01", "wn02", "wn02", "wn03", "wn03"]

    job = server.submit({"payload": "sleep 60", "timelimit": 100})[0]
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "running", timeout=20)
    report = fleet.run("report", "-w", "wn[01-03],wnrefused", *ssh, backend="ssh")
    assert report.returncode == 1 and "1 host failed: wnrefused" in report.stderr
    rows = {line.split()[0]: line.split() for line in report.stdout.splitlines()[1:]}
    assert [rows[n][1] for n in NODES] == ["2", "2", "2"] and rows["total"][3] == "1"   # PILOTS; RUNNING
    assert "connection refused" in rows["wnrefused"][-1] or "refused" in report.stdout

    logins = sshd.logins()
    killed = fleet.json("kill", "-w", "wn[01-03]", *ssh, backend="ssh")
    assert sum(len(h["on_request"]) for h in killed["hosts"]) == 6
    assert server.job(job["uuid"])["state"] == "killed"
    assert fleet.pids() == []
    assert sshd.logins() - logins == 3          # listing and stopping shared one connection per host


def test_agent_authentication_and_command_timeout(server, fleet: Fleet, sshd, tmp_path):
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {"SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", "-q", str(sshd.user_key)], env=env, check=True, capture_output=True)
        ssh = ssh_args(sshd, tmp_path, identity=False)
        listed = fleet.json("report", "-w", "wn[01-02]", *ssh, backend="ssh", env=env)
        assert [h["ok"] for h in listed["hosts"]] == [True, True]
        slow = tmp_path / "silent-python"
        # Silent far beyond fleet.run's 60 s guard: only the 1 s command timeout lets the report end.
        slow.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'silent.pid'}\nexec sleep 3600\n")
        slow.chmod(0o755)
        late = fleet.json("report", "-w", "wn01", *ssh, "--python", str(slow), "--command-timeout", "1",
                          backend="ssh", env=env, code=1)
        assert late["hosts"][0]["error"] == "no answer from the agent within 1 s"
    finally:
        agent.terminate()
        agent.wait(5)
        if (tmp_path / "silent.pid").exists():
            kill_all([int((tmp_path / "silent.pid").read_text())])


def test_host_keys_are_checked_strictly(server, fleet: Fleet, sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ssh = ssh_args(sshd, tmp_path, known_hosts=empty)
    refused = fleet.json("up", "-w", "wn01", *ssh, backend="ssh", code=1)
    error = refused["hosts"][0]["error"]
    assert "unknown host key for [127.0.0.1]:" in error and "ssh-ed25519" in error and str(empty) in error
    assert fleet.pids() == []

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    other_key = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    forged = sshd.known_hosts(tmp_path / "forged", ["127.0.0.2"], other_key)
    changed = fleet.json("up", "-w", "wn02", *ssh_args(sshd, tmp_path, known_hosts=forged),
                         "--host-key-policy", "accept-new", backend="ssh", code=1)
    assert "has changed" in changed["hosts"][0]["error"]

    learnt = fleet.json("up", "-w", "wn01", *ssh, "--host-key-policy", "accept-new", "--register-timeout", "0",
                        *FAST_PILOT, backend="ssh")
    assert learnt["started"] == 1 and sshd.host_public_key() in empty.read_text()
    assert fleet.json("kill", "-w", "wn01", *ssh, backend="ssh")["hosts"][0]["found"]

    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    denied = fleet.json("report", "-w", "wn01", *ssh, "--identity", str(stranger), backend="ssh", code=1)
    assert "authentication as" in denied["hosts"][0]["error"] and "failed" in denied["hosts"][0]["error"]


def test_no_option_or_host_name_reaches_a_shell(server, fleet: Fleet, sshd, tmp_path):
    canary = tmp_path / "canary"
    hostile = tmp_path / f"logs $(touch {canary}); touch {canary} '\"`touch {canary}`"
    ssh = ssh_args(sshd, tmp_path)
    up = fleet.json("up", "-w", "wn01", *ssh, "--logdir", str(hostile), "--register-timeout", "0", *FAST_PILOT,
                    backend="ssh")
    assert up["started"] == 1
    assert hostile.is_dir() and not canary.exists()
    bad = fleet.run("up", "-w", "wn01,$(reboot)", *ssh, backend="ssh")
    assert bad.returncode == 2 and "bad host name" in bad.stderr
    assert fleet.json("kill", "-w", "wn01", *ssh, backend="ssh")["hosts"][0]["found"]
