"""The ssh backend: the agent runs on each node over SSH (paramiko).

Authentication by key files, the ssh agent, or what the OpenSSH client config says (HostName,
Port, User, IdentityFile, ConnectTimeout, UserKnownHostsFile, StrictHostKeyChecking,
ProxyCommand). Host keys are checked strictly by default: a host whose key is not in the
known-hosts files is refused, and a changed key always is. One connection per node serves every
operation of a command. The remote command line is built from quoted words only, and the node
name never appears in it, so neither a host name nor an option can inject shell.
"""
from __future__ import annotations

import getpass
import logging
import os
import shlex
import socket
import threading
from pathlib import Path
from typing import Any

from p3s.backends import agent
from p3s.backends.base import AgentBackend, Option, Settings, agent_input, parse_reply

GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
POLICIES = ("strict", "accept-new")

logging.getLogger("paramiko").addHandler(logging.NullHandler())


class SSHBackend(AgentBackend):
    name = "ssh"
    description = "pilots on remote nodes over SSH (paramiko); the node needs only python3"
    options = (
        Option("ssh_config", "~/.ssh/config", "OpenSSH client config to take HostName, Port, User, IdentityFile, "
                                              "ConnectTimeout, UserKnownHostsFile, ProxyCommand … from",
               metavar="FILE"),
        Option("identity", [], "private key file; repeatable [default: the ssh agent, the config's "
                               "IdentityFile and ~/.ssh/id_*]", multiple=True, metavar="KEYFILE"),
        Option("known_hosts", None, "known-hosts file [default: the config's UserKnownHostsFile, "
                                    "else ~/.ssh/known_hosts; /etc/ssh/ssh_known_hosts is read too]", metavar="FILE"),
        Option("host_key_policy", None, "strict: refuse a host whose key is not known; accept-new: add an unknown "
                                        "key to the known-hosts file (a changed key is always refused) "
                                        "[default: the config's StrictHostKeyChecking, else strict]", choices=POLICIES),
        Option("user", None, "remote user [default: the config's User, else yours]", metavar="USER"),
        Option("connect_timeout", None, "seconds to connect, read the server's banner and authenticate "
                                        "[default: the config's ConnectTimeout, else 10]", float, metavar="S"),
    )

    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        super().__init__(settings, options)
        import paramiko

        self._paramiko = paramiko
        policy = self.config["host_key_policy"]
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"host key policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        path = Path(os.path.expanduser(self.config["ssh_config"]))
        self._ssh_config = paramiko.SSHConfig.from_path(str(path)) if path.is_file() else paramiko.SSHConfig()
        self._clients: dict[str, Any] = {}
        self._failures: dict[str, str] = {}
        self._lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}
        self._known_hosts_lock = threading.Lock()

    # --- connections --------------------------------------------------------------------------
    def _node_lock(self, node: str) -> threading.Lock:
        with self._lock:
            return self._node_locks.setdefault(node, threading.Lock())

    def _client(self, node: str) -> tuple[Any, str | None]:
        """The node's open connection, made on first use; a failure is remembered for the command."""
        with self._node_lock(node):
            if node in self._failures:
                return None, self._failures[node]
            client = self._clients.get(node)
            if client is not None and client.get_transport() is not None and client.get_transport().is_active():
                return client, None
            client, error = self._connect(node)
            if error is not None:
                self._failures[node] = error
            else:
                self._clients[node] = client
            return client, error

    def _connect(self, node: str) -> tuple[Any, str | None]:
        paramiko = self._paramiko
        cfg = self._ssh_config.lookup(node)
        hostname = cfg.get("hostname", node)
        port = int(cfg.get("port", 22))
        user = self.config["user"] or cfg.get("user") or getpass.getuser()
        timeout = float(self.config["connect_timeout"] or cfg.get("connecttimeout") or 10)
        keys = [os.path.expanduser(k) for k in self.config["identity"] or cfg.get("identityfile", [])]
        missing = [k for k in self.config["identity"] or () if not os.path.exists(os.path.expanduser(k))]
        if missing:
            return None, f"identity file {missing[0]} does not exist"
        known_hosts = self._known_hosts_file(cfg)
        client = paramiko.SSHClient()
        if os.path.isfile(GLOBAL_KNOWN_HOSTS):
            client.load_system_host_keys(GLOBAL_KNOWN_HOSTS)
        if os.path.isfile(known_hosts):
            try:
                client.load_system_host_keys(known_hosts)
            except OSError as exc:
                return None, f"cannot read known-hosts file {known_hosts}: {exc.strerror}"
        client.set_missing_host_key_policy(self._policy(cfg, known_hosts))
        where = hostname if port == 22 else f"{hostname}:{port}"
        proxy = cfg.get("proxycommand")
        try:
            if proxy and proxy.lower() != "none":
                sock = paramiko.ProxyCommand(proxy)
            else:
                sock = socket.create_connection((hostname, port), timeout)
            # the negotiation gets a second more than the banner, so a silent host fails on the banner
            client.connect(hostname, port, username=user, key_filename=[k for k in keys if os.path.exists(k)] or None,
                           timeout=timeout + 1, banner_timeout=timeout, auth_timeout=timeout, allow_agent=True,
                           look_for_keys=not keys, sock=sock)
        except Exception as exc:
            client.close()
            return None, self._describe(exc, where, user, timeout)
        return client, None

    def _known_hosts_file(self, cfg: dict) -> str:
        configured = self.config["known_hosts"] or (cfg.get("userknownhostsfile") or "").split(" ")[0]
        return os.path.expanduser(configured or "~/.ssh/known_hosts")

    def _policy(self, cfg: dict, known_hosts: str) -> Any:
        paramiko = self._paramiko
        policy = self.config["host_key_policy"]
        if policy is None:
            checking = str(cfg.get("stricthostkeychecking", "yes")).lower()
            policy = "accept-new" if checking in ("accept-new", "no", "off") else "strict"
        backend = self

        class Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                if policy == "strict":
                    raise UnknownHostKey(f"unknown host key for {hostname} ({key.get_name()} "
                                         f"{key.fingerprint}): not in {known_hosts}; check it and add it "
                                         f"(e.g. ssh-keyscan), or use --host-key-policy accept-new")
                backend._remember_key(known_hosts, hostname, key)

        return Policy()

    def _remember_key(self, known_hosts: str, hostname: str, key: Any) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with self._known_hosts_lock:
            Path(known_hosts).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(known_hosts, "a") as handle:
                handle.write(line)

    def _describe(self, exc: Exception, where: str, user: str, timeout: float) -> str:
        paramiko = self._paramiko
        if isinstance(exc, UnknownHostKey):
            return str(exc)
        if isinstance(exc, paramiko.BadHostKeyException):
            return (f"host key of {where} has changed ({exc.key.get_name()} {exc.key.fingerprint}) and does not "
                    f"match the known-hosts entry: refusing (a man in the middle, or a reinstalled host)")
        if isinstance(exc, paramiko.AuthenticationException):
            return f"authentication as {user} on {where} failed: {exc}"
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"cannot connect to {where}: timed out after {timeout:g} s"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve {where.rsplit(':', 1)[0]}: {exc.strerror}"
        if isinstance(exc, paramiko.SSHException) and "banner" in str(exc).lower():
            if isinstance(exc.__context__, (socket.timeout, TimeoutError)):
                return f"no SSH answer from {where}: timed out after {timeout:g} s waiting for its banner"
            return f"{where} closed the connection before the SSH banner"
        if isinstance(exc, OSError):
            return f"cannot connect to {where}: {(exc.strerror or str(exc)).lower()}"
        return f"ssh to {where} failed: {exc}"

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # --- running the agent --------------------------------------------------------------------
    def run_agent(self, node: str, request: dict, extra_argv: list[str], env: dict[str, str],
                  timeout: float) -> dict:
        client, error = self._client(node)
        if error is not None:
            return {"error": error}
        words = ["exec", *(["env", *(f"{k}={v}" for k, v in env.items())] if env else []),
                 self.python, "-c", agent.BOOT, *extra_argv]
        command = " ".join(shlex.quote(word) if i else word for i, word in enumerate(words))
        channel = None
        try:
            channel = client.get_transport().open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
            channel.sendall(agent_input(request))
            channel.shutdown_write()
            out = channel.makefile("rb").read()
            err = channel.makefile_stderr("rb").read()
            status = channel.recv_exit_status()
            channel.close()
        except (socket.timeout, TimeoutError):
            if channel is not None:
                channel.close()
            return {"error": f"no answer from the agent within {timeout:g} s"}
        except (self._paramiko.SSHException, OSError, EOFError) as exc:
            with self._node_lock(node):
                self._clients.pop(node, None)
            return {"error": f"ssh session failed: {exc}"}
        return parse_reply(out, err, status)


class UnknownHostKey(Exception):
    """The host's key is not in the known-hosts files and the policy is strict."""
