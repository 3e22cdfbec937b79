"""The Slurm backend: pilots as Slurm batch jobs, through ``sbatch``, ``squeue``, ``sacct`` and
``scancel`` run as subprocesses (as Parsl's SlurmProvider and batchspawner do; pyslurm does not
build against Debian's Slurm 22.05).

Many pilots are one job array (``--array=0-N``); ``-w NODE`` pins them to a node when the fleet
names nodes. A pilot's batch id is ``<array job>_<task>`` (or the job id), from
``SLURM_ARRAY_JOB_ID``/``SLURM_ARRAY_TASK_ID``; its host is ``SLURMD_NODENAME``, the node's name in
Slurm (several node names may share one machine). Slurm 22.05 quirks handled here: ``squeue -j``
of an unknown id exits 1 (the fleet never asks by id: it lists the user's jobs by name);
``scancel`` of an unknown or ended job exits 0 silently; ``squeue --json`` ignores ``-j`` and
``-t`` (the text format is used); ``sacct`` works only with a slurmdbd (used when ``sacct -X``
works, to see jobs that already ended, else squeue alone).
"""
from __future__ import annotations

import re
from typing import Any

from p3s.backends.base import Option, Settings
from p3s.backends.batch import BatchBackend, BatchError, BatchJob, failure, run_tool

SQUEUE_FORMAT = "%i|%T|%r|%N|%j"
SACCT_FIELDS = "JobID,State,NodeList,JobName"
_JOB_ID = re.compile(r"^\d+$")
_STATES = {"CG": "completing", "CF": "configuring", "PD": "pending", "R": "running", "S": "suspended",
           "ST": "stopped"}
SQUEUE_ALIVE = ("pending", "configuring", "running", "completing", "suspended", "stopped", "requeued",
                "resizing", "signaling", "stage_out", "requeue_hold", "requeue_fed", "resv_del_hold")


def parse_sbatch(stdout: str) -> str:
    """The job id ``sbatch --parsable`` printed (``<id>`` or ``<id>;<cluster>``)."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";")[0]
    if not _JOB_ID.match(job_id):
        raise BatchError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def parse_squeue(stdout: str) -> list[tuple[str, str, str, str, str]]:
    """(id, state, reason, node, name) per line of ``squeue -h -r -o SQUEUE_FORMAT``."""
    rows = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 4)
        if len(parts) != 5:
            raise BatchError(f"unexpected squeue line {line!r}")
        job_id, state, reason, node, name = parts
        state = _STATES.get(state, state.lower())
        rows.append((job_id, state, "" if reason in ("None", "(null)") else reason, node, name))
    return rows


class SlurmBackend(BatchBackend):
    name = "slurm"
    system = "slurm"
    description = "pilots as Slurm batch jobs (sbatch job arrays; squeue, scancel)"
    node_expression = '"${SLURMD_NODENAME:-$(hostname)}"'
    id_expression = '"${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"; ' \
                    'batch_id="${batch_id:-$SLURM_JOB_ID}"'
    options = BatchBackend.common_options + (
        Option("partition", None, "Slurm partition of the pilot jobs (sbatch -p)", metavar="NAME"),
        Option("account", None, "Slurm account to charge (sbatch -A)", metavar="NAME"),
        Option("qos", None, "Slurm quality of service (sbatch -q)", metavar="NAME"),
    )

    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        super().__init__(settings, options)
        self._sacct: bool | None = None

    def sbatch_argv(self, count: int, node: str | None, name: str) -> list[str]:
        """The sbatch command line (the script goes on stdin)."""
        argv = ["sbatch", "--parsable", "--job-name", name, "--output", "/dev/null", "--error", "/dev/null",
                "--ntasks", "1", "--no-requeue", "--export", "ALL"]
        if count > 1:
            argv.append(f"--array=0-{count - 1}")
        if node:
            argv += ["--nodelist", node]
        for flag, key in (("--partition", "partition"), ("--account", "account"), ("--qos", "qos"),
                          ("--time", "time")):
            if self.config.get(key):
                argv += [flag, str(self.config[key])]
        return argv + self.submit_options()

    def submit(self, script: str, count: int, node: str | None, name: str, env: dict[str, str]) -> list[str]:
        done = run_tool(self.sbatch_argv(count, node, name), self.settings.command_timeout, stdin=script, env=env)
        if done.returncode != 0:
            raise failure(done)
        job_id = parse_sbatch(done.stdout)
        return [f"{job_id}_{i}" for i in range(count)] if count > 1 else [job_id]

    def jobs(self) -> list[BatchJob]:
        done = run_tool(["squeue", "-h", "-r", "-u", self.user, "-o", SQUEUE_FORMAT], self.settings.command_timeout)
        if done.returncode != 0:
            raise failure(done)
        found = {}
        for job_id, state, reason, node, name in parse_squeue(done.stdout):
            site = self.site_of(name)
            if site is not None:
                found[job_id] = BatchJob(job_id, state, reason, node, site)
        for job in self.ended():
            found.setdefault(job.id, job)
        return list(found.values())

    def ended(self) -> list[BatchJob]:
        """Jobs of the fleet that ended in the last hour, from sacct, when accounting works."""
        if self._sacct is False:
            return []
        done = run_tool(["sacct", "-X", "-n", "-P", "-u", self.user, "-S", "now-1hour", "-o", SACCT_FIELDS],
                        self.settings.command_timeout)
        self._sacct = done.returncode == 0
        jobs = []
        for line in done.stdout.splitlines() if self._sacct else ():
            parts = line.split("|")
            if len(parts) != 4:
                continue
            job_id, state, node, name = parts
            state = state.split()[0].lower() if state.strip() else "unknown"
            site = self.site_of(name)
            if site is not None and state not in SQUEUE_ALIVE:
                jobs.append(BatchJob(job_id, state, "", "" if node == "None assigned" else node, site))
        return jobs

    def cancel(self, ids: list[str]) -> None:
        if not ids:
            return
        done = run_tool(["scancel", *ids], self.settings.command_timeout)
        if done.returncode != 0:
            raise failure(done)
