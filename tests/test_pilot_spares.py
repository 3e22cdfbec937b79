"""The pilot reuses the empty log files and directories of its last job (p3s.pilot.spares): real
payload processes and files; what a job wrote is never reused, nor what a leftover process of
the job could still write to."""
from __future__ import annotations

import os
import time
from pathlib import Path

from p3s.pilot.payload import Payload
from p3s.pilot.spares import Spares


def run(tmp: Path, spares: Spares, uuid: str, payload: str, recycle: bool = True) -> Payload:
    job = {"uuid": uuid, "payload": payload, "env": {"P3S_EXECMODE": "1"}}
    p = Payload(job, "pilot-x", dict(os.environ), tmp / "jobs", tmp / "work", resultroot=tmp / "results",
                spares=spares)
    p.start()
    assert p.wait(30) is not None
    p.tails(recycle=recycle)
    return p


def inodes(tmp: Path, uuid: str) -> list[int]:
    return [os.lstat(path).st_ino for path in (tmp / "jobs" / f"{uuid}.out", tmp / "jobs" / f"{uuid}.err",
                                               tmp / "work" / uuid, tmp / "results" / uuid)]


def test_a_silent_jobs_files_become_the_next_jobs(tmp_path):
    spares = Spares()
    run(tmp_path, spares, "a", "true")
    first = inodes(tmp_path, "a")
    run(tmp_path, spares, "b", "true")
    assert inodes(tmp_path, "b") == first            # renamed, not created afresh
    assert not any((tmp_path / d / n).exists() for d, n in (("jobs", "a.out"), ("jobs", "a.err"),
                                                           ("work", "a"), ("results", "a")))
    spares.close()


def test_what_a_job_wrote_stays_its_own(tmp_path):
    spares = Spares()
    run(tmp_path, spares, "a", 'echo out; echo err >&2; touch "$P3S_JOB_DIR/w" "$P3S_OUTPUT_DIR/r"')
    b = run(tmp_path, spares, "b", "true")
    assert (tmp_path / "jobs" / "a.out").read_text() == "out\n"
    assert (tmp_path / "jobs" / "a.err").read_text() == "err\n"
    assert (tmp_path / "work" / "a" / "w").exists() and (tmp_path / "results" / "a" / "r").exists()
    assert b.workdir.is_dir() and b.output_dir.is_dir() and (tmp_path / "jobs" / "b.out").read_text() == ""
    spares.close()


def test_nothing_is_reused_while_a_process_of_the_job_may_write_to_it(tmp_path):
    spares = Spares()
    # The payload ends at once, leaving a process in its group that writes to its stdout later.
    run(tmp_path, spares, "a", "(sleep 1; echo late) &")
    run(tmp_path, spares, "b", "true")
    assert (tmp_path / "jobs" / "a.out").exists() and (tmp_path / "work" / "a").is_dir()
    deadline = time.monotonic() + 20
    while (tmp_path / "jobs" / "a.out").read_text() != "late\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "jobs" / "a.out").read_text() == "late\n"
    assert (tmp_path / "jobs" / "b.out").read_text() == ""
    spares.close()


def test_a_job_stopped_by_the_pilot_keeps_its_files(tmp_path):
    spares = Spares()
    run(tmp_path, spares, "a", "true", recycle=False)
    run(tmp_path, spares, "b", "true")
    assert (tmp_path / "jobs" / "a.out").exists() and (tmp_path / "work" / "a").is_dir()
    spares.close()


def test_a_planted_link_at_the_new_name_is_replaced_not_followed(tmp_path):
    spares = Spares()
    run(tmp_path, spares, "a", "true")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "jobs" / "b.out").symlink_to(victim)
    run(tmp_path, spares, "b", "echo written")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "jobs" / "b.out").is_symlink()
    assert (tmp_path / "jobs" / "b.out").read_text() == "written\n"
    spares.close()
