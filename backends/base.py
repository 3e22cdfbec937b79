"""The backend interface: start, list and stop fleet pilots on one host; errors come back as values.

In the spirit of JupyterHub's Spawner: a small base class, one implementation per module, found
by name through the ``p3s.backends`` entry points, each declaring its own options (with a default
and a help text) next to the code that uses them. ``Backend`` is the interface (a batch-system
backend implements it directly); ``AgentBackend`` implements it by running the fleet agent on the
host, and its subclasses (local, ssh) only say how to get there. Batch systems (slurm, sge) have
an interface of their own, ``p3s.backends.batch.BatchBackend``; both derive from ``BackendBase``. Nothing is kept on the fleet's
side between commands: a host's fleet pilots are found again on the host itself.
"""
from __future__ import annotations

import abc
import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from p3s.backends import agent, pyz

AGENT_SOURCE = Path(agent.__file__).read_text()


@dataclasses.dataclass(frozen=True)
class Option:
    """A backend setting: ``--<name>`` on the command line (dashes for underscores)."""

    name: str
    default: Any
    help: str
    type: type = str
    multiple: bool = False
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


@dataclasses.dataclass
class Settings:
    """What every backend is given."""

    fleet: str = "default"            # the fleet's name, carried by each of its pilots
    python: str | None = None         # python3 on the host (3.11+; nothing else needed); None: the backend's default
    command_timeout: float = 60.0     # seconds one operation on one host may take (plus any stop grace)


@dataclasses.dataclass
class Launch:
    """How to start pilots on one host."""

    pilot_args: list[str]             # p3s-pilot's arguments, host-specific ones included
    stderr_dir: str                   # where each pilot's stdout/stderr go (<pid>.stderr)
    token: str | None = None
    settle: float = 0.3               # seconds to watch new pilots for an immediate exit


@dataclasses.dataclass
class PilotProcess:
    """A fleet pilot running on a host, as the host sees it."""

    node: str
    pid: int
    start_ticks: int
    started: float                    # epoch seconds
    uuid: str | None = None
    cpu: float = 0.0                  # CPU seconds of the pilot and its payloads
    rss: int = 0                      # bytes, pilot and payloads
    job: str | None = None            # the job its payload runs
    site: str = ""
    nprocs: int = 1


@dataclasses.dataclass
class HostResult:
    """The outcome of one operation on one host. ``error`` set means the host failed."""

    node: str
    error: str | None = None
    pilots: list[PilotProcess] = dataclasses.field(default_factory=list)   # started or listed
    exited: list[dict] = dataclasses.field(default_factory=list)           # start: exited at once
    stopped: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # stop: term/kill/survived/gone
    host: dict[str, Any] = dataclasses.field(default_factory=dict)         # list: load, ncpus, mem_used

    @property
    def ok(self) -> bool:
        return self.error is None


class BackendBase(abc.ABC):
    """What every backend has: a name, its options (``--<name>`` flags), the settings. ``kind`` says
    which interface it implements: "host" (``Backend``: pilots as processes on named hosts) or
    "batch" (``p3s.backends.batch.BatchBackend``: pilots as batch jobs)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "host"
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    default_python: ClassVar[str] = "python3"

    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        given = options or {}
        self.config = {o.name: o.default if given.get(o.name) is None else given[o.name] for o in self.options}
        self.python = settings.python or self.default_python

    def discover(self) -> list[str]:
        """Nodes with fleet pilots that can be found without being named (none by default)."""
        return []

    def close(self) -> None:
        """Release connections; the backend may not be used afterwards."""


class Backend(BackendBase):
    """Starts, lists and stops the fleet's pilots on hosts. Every method returns a HostResult and
    never raises for a host's trouble; methods may be called from several threads at once."""

    @abc.abstractmethod
    def start(self, node: str, count: int, launch: Launch) -> HostResult:
        """Start ``count`` detached pilots on ``node``; ``pilots`` are the started ones, ``exited``
        those that ended at once (pid, exit code, last lines of their stderr)."""

    @abc.abstractmethod
    def list_pilots(self, node: str) -> HostResult:
        """The fleet's pilots running on ``node`` (``pilots``), and the host's load and memory (``host``)."""

    @abc.abstractmethod
    def stop(self, node: str, pilots: list[PilotProcess] | None, grace: float, exiting: frozenset[int] = frozenset(),
             linger: float = 3.0) -> HostResult:
        """SIGTERM ``pilots`` (all the fleet's on the node when None), SIGKILL after ``grace`` s.
        Pilots whose pid is in ``exiting`` are first given ``linger`` s to exit by themselves.
        ``stopped``: pids by how they ended: gone (by themselves), term, kill; and survived."""


class AgentBackend(Backend):
    """A backend that runs the fleet agent (``p3s.backends.agent``) on the host: subclasses only
    say how to run it there."""

    @abc.abstractmethod
    def run_agent(self, node: str, request: dict, extra_argv: list[str], env: dict[str, str],
                  timeout: float) -> dict:
        """Run ``python -c BOOT *extra_argv`` for ``node`` with ``env`` added to its environment,
        ``agent_input(request)`` on its stdin; its reply (``parse_reply``) or ``{"error": …}``."""

    def start(self, node: str, count: int, launch: Launch) -> HostResult:
        env = {"P3S_FLEET": self.settings.fleet, "P3S_FLEET_NODE": node}
        request = {"op": "start", "count": count, "token": launch.token, "stderr_dir": launch.stderr_dir,
                   "settle": launch.settle, "pyz_name": pyz.file_name(), "pyz": pyz.encoded()}
        reply = self.run_agent(node, request, ["-m", agent.PILOT_MODULE, *launch.pilot_args], env,
                               self.settings.command_timeout)
        result = HostResult(node, reply.get("error"), exited=reply.get("exited", []))
        result.pilots = [PilotProcess(node, p["pid"], p["start_ticks"], p["started"]) for p in reply.get("pids", [])]
        return result

    def list_pilots(self, node: str) -> HostResult:
        reply = self.run_agent(node, self._request("list", node), [], {}, self.settings.command_timeout)
        return HostResult(node, reply.get("error"), pilots=[_pilot(p) for p in reply.get("pilots", [])],
                          host=reply.get("host", {}))

    def stop(self, node: str, pilots: list[PilotProcess] | None, grace: float, exiting: frozenset[int] = frozenset(),
             linger: float = 3.0) -> HostResult:
        request = self._request("stop", node, grace=grace, linger=linger)
        if pilots is not None:
            request["pilots"] = [{"pid": p.pid, "start_ticks": p.start_ticks, "exiting": p.pid in exiting}
                                 for p in pilots]
        reply = self.run_agent(node, request, [], {}, self.settings.command_timeout + linger + grace + 5)
        stopped = {key: reply.get(key, []) for key in ("term", "kill", "survived", "gone")}
        return HostResult(node, reply.get("error"), stopped=stopped)

    def _request(self, op: str, node: str | None, **fields: Any) -> dict:
        return {"op": op, "fleet": self.settings.fleet, "node": node, **fields}


def _pilot(data: dict) -> PilotProcess:
    names = {f.name for f in dataclasses.fields(PilotProcess)}
    return PilotProcess(**{k: v for k, v in data.items() if k in names})


def agent_input(request: dict) -> bytes:
    """What the agent reads on stdin: its own source, then the request (one JSON line each)."""
    return (json.dumps(AGENT_SOURCE) + "\n" + json.dumps(request) + "\n").encode()


def parse_reply(out: bytes, err: bytes, status: int | None) -> dict:
    """The agent's JSON reply, or an error naming what went wrong on the host."""
    lines = out.decode(errors="replace").strip().splitlines()
    if lines:
        try:
            reply = json.loads(lines[-1])
            if isinstance(reply, dict):
                return reply
        except ValueError:
            pass
    detail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
    return {"error": f"agent failed (exit status {status}): {detail}"}
