"""The local backend: pilots as detached processes of this machine.

Each operation runs the agent as a child process, exactly as the ssh backend runs it on a node;
the pilots it forks leave its process group and session and outlive it and this command. Node
names are labels here (``-H NODE`` and the marker), so one machine can stand in for many nodes.
"""
from __future__ import annotations

import os
import subprocess
import sys

from p3s.backends import agent
from p3s.backends.base import AgentBackend, agent_input, parse_reply


class LocalBackend(AgentBackend):
    name = "local"
    description = "pilots as detached processes of this machine (node names are labels)"
    default_python = sys.executable

    def run_agent(self, node: str, request: dict, extra_argv: list[str], env: dict[str, str],
                  timeout: float) -> dict:
        try:
            proc = subprocess.Popen([self.python, "-c", agent.BOOT, *extra_argv], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})
        except OSError as exc:
            return {"error": f"cannot run {self.python}: {exc.strerror}"}
        try:
            out, err = proc.communicate(agent_input(request), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"no answer from the agent within {timeout:g} s"}
        return parse_reply(out, err, proc.returncode)

    def discover(self) -> list[str]:
        reply = self.run_agent("", self._request("list", None), [], {}, self.settings.command_timeout)
        return sorted({p["node"] for p in reply.get("pilots", []) if p.get("node")})
