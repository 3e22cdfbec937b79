"""Batch backends' command lines, parsers and job script; the factory's back-off (no daemons)."""
from __future__ import annotations

import argparse
import subprocess

import pytest

from p3s.backends.base import Settings
from p3s.backends.batch import BatchError, PilotJobPlan
from p3s.backends.sge import SGEBackend, expand_tasks, parse_qstat, parse_qsub
from p3s.backends.slurm import SlurmBackend, parse_sbatch, parse_squeue
from p3s.fleet import service

QSTAT_XML = """<?xml version='1.0'?>
<job_info xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>12</JB_job_number><JAT_prio>0.55500</JAT_prio><JB_name>p3s-f1=lab</JB_name>
      <JB_owner>root</JB_owner><state>r</state><JAT_start_time>2026-12-01T12:00:00</JAT_start_time>
      <queue_name>all.q@vm.example.org</queue_name><slots>1</slots><tasks>2</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>13</JB_job_number><JB_name>p3s-f1=</JB_name><state>dr</state>
      <queue_name>all.q@wn2</queue_name><slots>1</slots>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>12</JB_job_number><JB_name>p3s-f1=lab</JB_name><state>qw</state>
      <queue_name></queue_name><slots>1</slots><tasks>3-5:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>14</JB_job_number><JB_name>other</JB_name><state>hqw</state><slots>1</slots>
    </job_list>
  </job_info>
</job_info>
"""


def _slurm(**options) -> SlurmBackend:
    return SlurmBackend(Settings("f1"), options)


def test_sbatch_command_line_from_flags():
    backend = _slurm(partition="short", account="phys", qos="high", time="1:00:00",
                     submit_option=["--mem=2G", "--constraint 'a b'"])
    argv = backend.sbatch_argv(8, "wn03", backend.job_name("lab"))
    assert argv[:3] == ["sbatch", "--parsable", "--job-name"] and argv[3] == "p3s-f1=lab"
    assert "--array=0-7" in argv and argv[argv.index("--nodelist") + 1] == "wn03"
    for flag, value in (("--partition", "short"), ("--account", "phys"), ("--qos", "high"), ("--time", "1:00:00")):
        assert argv[argv.index(flag) + 1] == value
    assert argv[-3:] == ["--mem=2G", "--constraint", "a b"]
    single = _slurm().sbatch_argv(1, None, "n")
    assert not any(a.startswith("--array") for a in single) and "--nodelist" not in single


def test_slurm_outputs_are_parsed_and_nonsense_refused():
    assert parse_sbatch("4242\n") == "4242" and parse_sbatch("4242;cluster\n") == "4242"
    with pytest.raises(BatchError, match="sbatch printed no job id"):
        parse_sbatch("Submitted batch job 12\n")
    rows = parse_squeue("12_0|RUNNING|None|wn01|p3s-f1=lab\n12_1|PENDING|Resources||p3s-f1=lab\n"
                        "13|COMPLETING|None|wn02|x|y\n")
    assert rows == [("12_0", "running", "", "wn01", "p3s-f1=lab"), ("12_1", "pending", "Resources", "", "p3s-f1=lab"),
                    ("13", "completing", "", "wn02", "x|y")]
    with pytest.raises(BatchError, match="unexpected squeue line"):
        parse_squeue("garbage\n")


def test_job_names_carry_fleet_and_site_and_nothing_else_matches():
    backend = _slurm()
    assert backend.site_of("p3s-f1=lab") == "lab" and backend.site_of("p3s-f1=") == ""
    assert backend.site_of("p3s-f10=lab") is None and backend.site_of("p3s-f1") is None


def test_the_job_script_quotes_everything_and_holds_no_token(tmp_path):
    backend = _slurm()
    plan = PilotJobPlan("http://h:1/$(reboot)", "s3cret", "lab", "/tmp/p3s/{node}/logs", "/tmp/j {node}",
                        "/tmp/w", ["-c", "0", "--jobtypes", "a;b"])
    script = backend.script(plan)
    assert "s3cret" not in script and "'http://h:1/$(reboot)'" in script and "'a;b'" in script
    assert 'logdir=/tmp/p3s/"$node"/logs' in script and """--joblogdir '/tmp/j '"$node" --workdir""" in script
    # the script really runs: sh evaluates the node and id, writes the zipapp, execs python on it
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = -c ]; then exec python3 \"$@\"; fi\n"
                    "echo \"$@\" > \"$(dirname \"$0\")/argv\"; echo \"$P3S_FLEET $P3S_FLEET_NODE\" >> "
                    "\"$(dirname \"$0\")/argv\"\n")
    fake.chmod(0o755)
    local = SlurmBackend(Settings("f1", str(fake)), {})
    plan = PilotJobPlan("http://h:1", None, "", str(tmp_path / "logs-{node}"), "/j", "/w", [])
    env = {"PATH": "/usr/bin:/bin", "SLURMD_NODENAME": "wn07", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "3",
           "SLURM_JOB_ID": "15"}
    subprocess.run(["sh", "-s"], input=local.script(plan), text=True, env=env, check=True, timeout=30)
    argv, marks = (tmp_path / "argv").read_text().splitlines()
    assert marks == "f1 wn07"
    pyz = (tmp_path / "logs-wn07").glob("p3s-pilot-*.pyz")
    assert argv.startswith(str(next(pyz))) and "-H wn07 -e slurm:12_3" in argv
    shipped = next((tmp_path / "logs-wn07").glob("p3s-pilot-*.pyz"))
    written = shipped.stat().st_ino
    subprocess.run(["sh", "-s"], input=local.script(plan), text=True, check=True, timeout=30,
                   env={**env, "SLURM_ARRAY_JOB_ID": "", "SLURM_ARRAY_TASK_ID": ""})
    assert "-e slurm:15 " in (tmp_path / "argv").read_text()
    assert shipped.stat().st_ino == written                # the same bytes: kept, not written again
    shipped.write_bytes(b"tampered")
    subprocess.run(["sh", "-s"], input=local.script(plan), text=True, check=True, timeout=30, env=env)
    from p3s.backends import pyz as pyz_module
    assert shipped.read_bytes() == pyz_module.build()     # other bytes: replaced


def test_qsub_command_line_and_qstat_xml():
    backend = SGEBackend(Settings("f1"), {"queue": "all.q", "project": "p", "time": "2:00:00"})
    argv = backend.qsub_argv(4, "wn2", "p3s-f1=lab")
    assert argv[:4] == ["qsub", "-terse", "-N", "p3s-f1=lab"] and argv[argv.index("-t") + 1] == "1-4"
    assert "hostname=wn2" in argv and "h_rt=2:00:00" in argv and argv[argv.index("-q") + 1] == "all.q"
    assert parse_qsub("17\n") == "17" and parse_qsub("18.1-4:1\n") == "18"
    with pytest.raises(BatchError):
        parse_qsub("Your job 17 has been submitted\n")
    assert expand_tasks("3-5:1") == [3, 4, 5] and expand_tasks("1,4-8:2") == [1, 4, 6, 8]
    rows = parse_qstat(QSTAT_XML)
    assert rows == [("12.2", "running", "", "vm", "p3s-f1=lab"), ("13", "completing", "", "wn2", "p3s-f1="),
                    ("12.3", "pending", "qw", "", "p3s-f1=lab"), ("12.4", "pending", "qw", "", "p3s-f1=lab"),
                    ("12.5", "pending", "qw", "", "p3s-f1=lab"), ("14", "held", "hqw", "", "other")]
    with pytest.raises(BatchError, match="qstat's XML"):
        parse_qstat("<job_info>")


def test_a_missing_batch_tool_is_named():
    backend = _slurm()
    backend.settings.command_timeout = 5
    import os
    saved = os.environ["PATH"]
    os.environ["PATH"] = "/nonexistent"
    try:
        with pytest.raises(BatchError, match="squeue not found"):
            backend.jobs()
    finally:
        os.environ["PATH"] = saved


def test_the_factory_backs_off_a_failing_backend_and_records_every_round():
    assert service.next_delay(10, 10, failed=False) == 10
    assert [service.next_delay(10, d, True) for d in (10, 20, 80, 160)] == [20, 40, 160, 160]

    class View:
        def __init__(self) -> None:
            self.events: list[dict] = []
            self.client = self

        def call(self, method: str, path: str, body: dict) -> dict:
            self.events.append(body)
            return body

    outcomes = iter([BatchError("sbatch failed: down"), BatchError("sbatch failed: down"),
                     service.Round("ok", {}, [], wanted=3, submitted=3, queued=0, registered=0)])
    sleeps: list[float] = []

    def one_round() -> service.Round:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    view = View()
    args = argparse.Namespace(every=5.0, json=False)
    with pytest.raises(KeyboardInterrupt):
        service.run(args, view, "slurm", {"lab": one_round}, sleep=sleep)
    assert sleeps == [10.0, 20.0, 5.0]
    assert [e["severity"] for e in view.events] == ["error", "error", "info"]
    assert view.events[0]["data"] == {"backend": "slurm", "error": "sbatch failed: down"}
    assert view.events[2]["data"]["submitted"] == 3 and view.events[2]["kind"] == "fleet.topup"


def test_ended_jobs_come_from_sacct_only_when_accounting_works(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "squeue").write_text("#!/bin/sh\necho squeue >> %s\necho '12_1|RUNNING|None|wn01|p3s-f1=lab'\n" % calls)
    (tools / "sacct").write_text(
        "#!/bin/sh\necho sacct >> %s\n[ -e %s/no-accounting ] && { echo 'Slurm accounting storage is disabled' >&2; "
        "exit 1; }\nprintf '12_0|FAILED|wn02|p3s-f1=lab\\n12_1|RUNNING|wn01|p3s-f1=lab\\n9|COMPLETED|wn03|other\\n'\n"
        % (calls, tmp_path))
    for tool in ("squeue", "sacct"):
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    jobs = {j.id: j for j in _slurm().jobs()}
    assert sorted(jobs) == ["12_0", "12_1"] and jobs["12_0"].state == "failed" and jobs["12_1"].state == "running"
    (tmp_path / "no-accounting").touch()
    backend = _slurm()
    assert [j.id for j in backend.jobs()] == ["12_1"] and [j.id for j in backend.jobs()] == ["12_1"]
    assert calls.read_text().split().count("sacct") == 2          # tried once per backend, then not again
