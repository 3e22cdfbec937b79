"""What every batch-system backend shares: the pilot's job script, submitting it as many pilots,
and the interface the fleet uses (``p3s.fleet.batch`` drives up, report, kill and top-up with it).

A batch backend (``SlurmBackend``, ``SGEBackend``; an HTCondor one in a package of its own) is a
subclass that says how to talk to its system through three methods, each calling the system's
command-line tools as subprocesses:

- ``submit(script, count, node, env)``: queue ``count`` pilots running ``script`` (on ``node`` if
  given), return their batch ids (one per pilot: an array's tasks);
- ``jobs()``: this fleet's pilots in the batch system (queued, running, ending), as ``BatchJob``;
- ``cancel(ids)``: remove them.

and two shell expressions, evaluated in the job on the node: ``node_expression`` (the node's name
in the batch system, which the pilot reports as its host) and ``id_expression`` (the pilot's
batch id, which it reports as ``extra = "<system>:<id>"``, how the fleet matches the server's
records to batch jobs).

The job script carries the pilot zipapp inline (or names it in a shared directory with
``--pyz-dir``), so a node needs only ``python3``. The token reaches the job in its environment
(``P3S_TOKEN``, set for the submitting command only), never in the script or on a command line.
Every fleet's jobs carry the name ``p3s-<fleet>=<site>``, so ``jobs()`` never sees other work.
"""
from __future__ import annotations

import abc
import dataclasses
import getpass
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from p3s.backends import pyz
from p3s.backends.base import BackendBase, Option

NAME_PREFIX = "p3s-"


class BatchError(RuntimeError):
    """The batch system refused or failed a command; the message quotes it."""


@dataclasses.dataclass
class BatchJob:
    """One pilot's job as the batch system sees it."""

    id: str                 # the pilot's batch id: "123" or an array task "123_4" (Slurm), "123.4" (SGE)
    state: str              # pending, running, completing, suspended, held, failed, … (lower case)
    reason: str = ""        # why it waits, as the batch system says it
    node: str = ""          # where it runs ("" while pending)
    site: str = ""          # from the job's name

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PilotJobPlan:
    """What each pilot job runs: the pilot's options, ``{node}`` standing for the node's name."""

    server: str
    token: str | None
    site: str = ""
    logdir: str = "/tmp/p3s/pilots"
    joblogdir: str = "/tmp/p3s/jobs"
    workdir: str = "/tmp/p3s/work"
    extra: list[str] = dataclasses.field(default_factory=list)


def _with_node(template: str) -> str:
    """``template`` as a shell word in which ``{node}`` becomes the node's name ("$node")."""
    return '"$node"'.join(shlex.quote(part) if part else "" for part in template.split("{node}"))


def run_tool(argv: list[str], timeout: float, stdin: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a batch tool; BatchError when it cannot be run or does not answer in time."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise BatchError(f"{argv[0]} not found: is the batch system's client installed and on PATH?") from None
    except subprocess.TimeoutExpired:
        raise BatchError(f"{argv[0]} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise BatchError(f"cannot run {argv[0]}: {exc.strerror}") from None


def failure(done: subprocess.CompletedProcess) -> BatchError:
    """The error for a batch command that failed, with what it said."""
    said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
    return BatchError(f"{done.args[0]} failed (exit status {done.returncode}): {said}")


class BatchBackend(BackendBase):
    """Pilots as batch jobs; subclasses implement ``submit``, ``jobs`` and ``cancel``."""

    kind: ClassVar[str] = "batch"
    system: ClassVar[str] = ""               # "slurm": the prefix of the pilots' batch ids
    node_expression: ClassVar[str] = "$(hostname)"
    id_expression: ClassVar[str] = "$$"
    common_options: ClassVar[tuple[Option, ...]] = (
        Option("time", None, "wall-clock limit of each pilot job, in the batch system's format", metavar="TIME"),
        Option("submit_option", [], "one more option for the submit command, e.g. --submit-option=--mem=2G; "
                                    "repeatable", multiple=True, metavar="OPTION"),
        Option("pyz_dir", None, "a directory shared with the nodes to put the pilot zipapp in, instead of inline "
                                "in every job script", metavar="DIR"),
    )

    def __init__(self, settings, options: dict[str, Any] | None = None) -> None:
        super().__init__(settings, options)
        self.user = getpass.getuser()

    # --- to implement -------------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, script: str, count: int, node: str | None, name: str, env: dict[str, str]) -> list[str]:
        """Queue ``count`` pilot jobs named ``name`` running ``script`` (on ``node`` if given) with
        ``env`` added to the submitting command's environment; their batch ids. BatchError."""

    @abc.abstractmethod
    def jobs(self) -> list[BatchJob]:
        """This user's jobs named ``self.job_prefix``…, one per pilot (array tasks apart). BatchError."""

    @abc.abstractmethod
    def cancel(self, ids: list[str]) -> None:
        """Cancel these jobs (unknown or ended ones are no error). BatchError."""

    # --- shared -------------------------------------------------------------------------------
    @property
    def job_prefix(self) -> str:
        return f"{NAME_PREFIX}{self.settings.fleet}="

    def job_name(self, site: str) -> str:
        return self.job_prefix + site

    def site_of(self, name: str) -> str | None:
        """The site in one of this fleet's job names; None for any other job."""
        return name[len(self.job_prefix):] if name.startswith(self.job_prefix) else None

    def batch_extra(self, batch_id: str) -> str:
        return f"{self.system}:{batch_id}"

    def submit_options(self) -> list[str]:
        """The words of every --submit-option (the subclass adds them to its submit command)."""
        extra: list[str] = []
        for option in self.config.get("submit_option") or ():
            extra += shlex.split(option)
        return extra

    def script(self, plan: PilotJobPlan) -> str:
        """The job script of one pilot: find the node's name and the job's id, put the zipapp in
        place, exec the pilot."""
        python = shlex.quote(self.python)
        lines = ["#!/bin/sh",
                 f"# a p3s pilot of fleet {self.settings.fleet}, submitted by p3s-fleet",
                 f"node={self.node_expression}",
                 f"batch_id={self.id_expression}",
                 f"logdir={_with_node(plan.logdir)}",
                 'mkdir -p "$logdir" || exit 1',
                 f'exec >>"$logdir/{self.system}-$batch_id.out" 2>&1']
        if self.config.get("pyz_dir"):
            lines.append(f"pyz={shlex.quote(str(Path(self.config['pyz_dir']) / pyz.file_name()))}")
        else:
            # written unless a copy of ours with the same bytes is there (saves a Python start per pilot)
            lines += [f'pyz="$logdir/{pyz.file_name()}"',
                      f'if [ -O "$pyz" ] && echo "{pyz.sha256()}  $pyz" | sha256sum -c --status 2>/dev/null; then :',
                      f"else {python} -c 'import base64, os, sys; tmp = sys.argv[1] + \".\" + str(os.getpid()); "
                      f"fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644); "
                      f"os.write(fd, base64.b64decode(sys.stdin.read())); os.close(fd); os.replace(tmp, sys.argv[1])' "
                      f'"$pyz" <<\'P3S_PILOT_PYZ\' || exit 1']
            encoded = pyz.encoded()
            lines += [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
            lines += ["P3S_PILOT_PYZ", "fi"]
        args = ["-S", shlex.quote(plan.server), "-H", '"$node"', "-e", f'"{self.system}:$batch_id"',
                "--logdir", '"$logdir"', "--joblogdir", _with_node(plan.joblogdir),
                "--workdir", _with_node(plan.workdir)]
        if plan.site:
            args += ["-s", shlex.quote(plan.site)]
        args += [shlex.quote(a) for a in plan.extra]
        lines += [f"export P3S_FLEET={shlex.quote(self.settings.fleet)} P3S_FLEET_NODE=\"$node\"",
                  f'exec {python} "$pyz" ' + " ".join(args), ""]
        return "\n".join(lines)

    def prepare(self) -> None:
        """Before submitting: the zipapp in the shared directory, if one is used."""
        if self.config.get("pyz_dir"):
            path = Path(self.config["pyz_dir"]) / pyz.file_name()
            if not path.exists() or path.read_bytes() != pyz.build():
                try:
                    pyz.write(path)
                except OSError as exc:
                    raise BatchError(f"cannot write the pilot zipapp to {path}: {exc.strerror}") from None

    def launch(self, plan: PilotJobPlan, count: int, node: str | None) -> list[str]:
        """Submit ``count`` pilots of ``plan`` (on ``node``); their batch ids. BatchError."""
        self.prepare()
        env = {"P3S_TOKEN": plan.token} if plan.token else {}
        return self.submit(self.script(plan), count, node, self.job_name(plan.site), env)
