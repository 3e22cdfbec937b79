"""The Grid Engine backend (Son of Grid Engine / Debian's gridengine 8.1.9): pilots as Grid Engine
jobs, through ``qsub``, ``qstat`` and ``qdel`` run as subprocesses.

Many pilots are one array job (``-t 1-N``); ``-l hostname=NODE`` pins them to a node when the
fleet names nodes. A pilot's batch id is ``<job>.<task>`` (or the job id), from ``JOB_ID`` and
``SGE_TASK_ID``; its host is ``HOSTNAME`` as set by the execution daemon. ``qstat -xml`` gives
one element per job, arrays of pending tasks as one element with a task range (``1-8:1``),
expanded here.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from p3s.backends.base import Option
from p3s.backends.batch import BatchBackend, BatchError, BatchJob, failure, run_tool

_SUBMITTED = re.compile(r"^(\d+)(?:\.\d+-\d+:\d+)?$")
_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")
# qstat's state letters: the first that applies names the state
_STATES = (("E", "error"), ("d", "completing"), ("h", "held"), ("s", "suspended"), ("S", "suspended"),
           ("T", "suspended"), ("R", "running"), ("t", "running"), ("r", "running"), ("w", "pending"),
           ("q", "pending"))


def parse_qsub(stdout: str) -> str:
    """The job id ``qsub -terse`` printed (``123`` or, for an array, ``123.1-8:1``)."""
    match = _SUBMITTED.match(stdout.strip().splitlines()[-1] if stdout.strip() else "")
    if not match:
        raise BatchError(f"qsub printed no job id: {stdout.strip()!r}")
    return match.group(1)


def expand_tasks(tasks: str) -> list[int]:
    """Task ids of a qstat task range: ``3``, ``1-8:1``, ``2,5-6:1``."""
    found: list[int] = []
    for part in tasks.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            continue
        first = int(match.group(1))
        last = int(match.group(2) or first)
        found.extend(range(first, last + 1, int(match.group(3) or 1)))
    return found


def state_of(letters: str) -> str:
    for letter, state in _STATES:
        if letter in letters:
            return state
    return letters or "unknown"


def parse_qstat(xml: str) -> list[tuple[str, str, str, str, str]]:
    """(id, state, reason, node, name) per pilot from ``qstat -xml`` (array tasks apart)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise BatchError(f"cannot read qstat's XML: {exc}") from None
    rows = []
    for job in root.iter("job_list"):
        number = job.findtext("JB_job_number", "")
        name = job.findtext("JB_name", "")
        letters = job.findtext("state", "")
        queue = job.findtext("queue_name") or ""
        node = queue.split("@", 1)[1].split(".")[0] if "@" in queue else ""
        tasks = job.findtext("tasks")
        state = state_of(letters)
        reason = "" if state in ("running", "completing") else letters
        if tasks:
            for task in expand_tasks(tasks):
                rows.append((f"{number}.{task}", state, reason, node, name))
        else:
            rows.append((number, state, reason, node, name))
    return rows


class SGEBackend(BatchBackend):
    name = "sge"
    system = "sge"
    description = "pilots as Grid Engine jobs (qsub array jobs; qstat, qdel)"
    node_expression = '"${HOSTNAME:-$(hostname)}"; node="${node%%.*}"'
    id_expression = '"$JOB_ID${SGE_TASK_ID:+.$SGE_TASK_ID}"; [ "$SGE_TASK_ID" = undefined ] && batch_id="$JOB_ID"'
    options = BatchBackend.common_options + (
        Option("queue", None, "Grid Engine queue of the pilot jobs (qsub -q)", metavar="NAME"),
        Option("project", None, "Grid Engine project (qsub -P)", metavar="NAME"),
    )

    def qsub_argv(self, count: int, node: str | None, name: str) -> list[str]:
        """The qsub command line (the script goes on stdin)."""
        argv = ["qsub", "-terse", "-N", name, "-o", "/dev/null", "-e", "/dev/null", "-j", "y", "-S", "/bin/sh",
                "-V", "-r", "n", "-b", "n"]
        if count > 1:
            argv += ["-t", f"1-{count}"]
        if node:
            argv += ["-l", f"hostname={node}"]
        if self.config.get("queue"):
            argv += ["-q", self.config["queue"]]
        if self.config.get("project"):
            argv += ["-P", self.config["project"]]
        if self.config.get("time"):
            argv += ["-l", f"h_rt={self.config['time']}"]
        return argv + self.submit_options()

    def submit(self, script: str, count: int, node: str | None, name: str, env: dict[str, str]) -> list[str]:
        done = run_tool(self.qsub_argv(count, node, name), self.settings.command_timeout, stdin=script, env=env)
        if done.returncode != 0:
            raise failure(done)
        job_id = parse_qsub(done.stdout)
        return [f"{job_id}.{i}" for i in range(1, count + 1)] if count > 1 else [job_id]

    def jobs(self) -> list[BatchJob]:
        done = run_tool(["qstat", "-xml", "-u", self.user], self.settings.command_timeout)
        if done.returncode != 0:
            raise failure(done)
        jobs = []
        for job_id, state, reason, node, name in parse_qstat(done.stdout):
            site = self.site_of(name)
            if site is not None:
                jobs.append(BatchJob(job_id, state, reason, node, site))
        return jobs

    def cancel(self, ids: list[str]) -> None:
        if not ids:
            return
        done = run_tool(["qdel", *ids], self.settings.command_timeout)
        # qdel exits 1 when one of the jobs no longer exists: that one is not an error here
        if done.returncode != 0 and "does not exist" not in (done.stdout + done.stderr):
            raise failure(done)
