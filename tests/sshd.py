"""A real OpenSSH server for the fleet's tests and benchmark, listening only on loopback addresses
(127.0.0.0/8): its own host key, one user key allowed in (root, key only), a client config and a
known-hosts file; and a host that accepts connections but never says a word."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from p3s.cli.common import stop_processes

SSHD = "/usr/sbin/sshd"


class SSHDUnavailable(RuntimeError):
    """sshd or ssh-keygen is not installed."""


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class SilentHost:
    """A TCP listener that accepts connections and never says a word (no SSH banner)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.address, self.port = self.sock.getsockname()
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class SSHServer:
    """``/usr/sbin/sshd`` on loopback addresses with its own host key, a user key allowed in
    (root, key only), and a config and known-hosts file for the client side."""

    def __init__(self, tmp: Path, addresses: list[str]) -> None:
        if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
            raise SSHDUnavailable("openssh-server is not installed (`make test` installs it: "
                                  "bin/install-system-packages)")
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.addresses = addresses
        self.port = free_port(addresses[0])
        self.host_key = tmp / "host_ed25519"
        self.user_key = tmp / "user_ed25519"
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
        (tmp / "authorized_keys").write_text((tmp / "user_ed25519.pub").read_text())
        self.config = tmp / "sshd_config"
        self.config.write_text("\n".join([
            *(f"ListenAddress {a}" for a in addresses), f"Port {self.port}", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "StrictModes no", "UsePAM no",
            f"PidFile {tmp / 'sshd.pid'}", "MaxStartups 200", "MaxSessions 200", "LogLevel VERBOSE", ""]))
        try:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)      # sshd's privilege separation dir (as root)
        except OSError:
            pass
        self.log = open(tmp / "sshd.log", "w")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stderr=self.log)
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.tmp / 'sshd.log').read_text()}")
            try:
                with socket.create_connection((self.addresses[-1], self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def logins(self) -> int:
        """Connections authenticated so far (sshd logs each one)."""
        self.log.flush()
        return (self.tmp / "sshd.log").read_text().count("Accepted publickey")

    def host_public_key(self) -> str:
        return " ".join((self.tmp / "host_ed25519.pub").read_text().split()[:2])

    def known_hosts(self, path: Path, addresses: list[str] | None = None, key: str | None = None) -> Path:
        key = key or self.host_public_key()
        path.write_text("".join(f"[{a}]:{self.port} {key}\n" for a in addresses or self.addresses))
        return path

    def stop(self) -> None:
        stop_processes([self.proc], 10)
        self.log.close()


def ssh_config(path: Path, hosts: dict[str, tuple[str, int]], identity: Path | None, user: str | None = None) -> Path:
    """An OpenSSH client config naming ``hosts`` (alias -> (address, port)), as ``user`` (you)."""
    user = user or getpass.getuser()
    key = f"    IdentityFile {identity}\n" if identity else ""
    path.write_text("".join(f"Host {alias}\n    HostName {address}\n    Port {port}\n    User {user}\n{key}"
                            for alias, (address, port) in hosts.items()))
    return path
