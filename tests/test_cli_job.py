"""`p3s-job` as a user runs it: real processes against a real server."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SEED_EXAMPLE


@pytest.fixture
def p3s_job(server, tmp_path: Path):
    """Run ``p3s-job ARGS…`` against the test server; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "p3s.cli.job", *args, "-S", server.url, "--token", server.token]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=60)

    return run


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "seed.json"
    path.write_text(SEED_EXAMPLE)
    return path


def jobs(server, **query: str) -> list[dict]:
    path = "/jobs?limit=1000" + "".join(f"&{k}={v}" for k, v in query.items())
    return server.ok("GET", path)["items"]


def test_seed_example_verbatim_in_the_original_flag_style(server, p3s_job, seed):
    result = p3s_job("-j", str(seed))
    assert result.returncode == 0, result.stderr
    [uuid] = result.stdout.split()
    job = server.job(uuid)
    assert (job["timelimit"], job["priority"], job["state"], job["jobtype"], job["name"]) == \
        (100, 1, "defined", "type1", "p3s_job")
    assert job["env"] == {"P3S": "TRUE", "MYVAR": "FALSE"} and job["payload"] == "/home/p3s/my_executable.py"


def test_replicas_in_one_request(server, p3s_job, seed):
    result = p3s_job("submit", "-j", str(seed), "-N", "3", "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert len({j["uuid"] for j in created}) == 3
    assert sorted(j["uuid"] for j in jobs(server)) == sorted(j["uuid"] for j in created)


def test_one_job_per_input_file(server, p3s_job, seed, tmp_path):
    (tmp_path / "more.txt").write_text("# run 7\n/data/c.root\n\n/data/d.root\n")
    result = p3s_job("submit", "-j", str(seed), "-f", "/data/a.root,/data/b.root", "--files-from", "more.txt")
    assert result.returncode == 0, result.stderr
    stored = [server.job(uuid) for uuid in result.stdout.split()]
    assert [j["input_file"] for j in stored] == ["/data/a.root", "/data/b.root", "/data/c.root", "/data/d.root"]
    for job in stored:
        assert job["env"] == {"P3S": "TRUE", "MYVAR": "FALSE", "P3S_INPUT_FILE": job["input_file"]}


def test_overrides(server, p3s_job, seed):
    result = p3s_job("submit", "-j", str(seed), "-A", "template", "-P", "5", "-T", "calib", "-t", "30",
                     "--env", "RUN=7")
    assert result.returncode == 0, result.stderr
    job = server.job(result.stdout.strip())
    assert (job["state"], job["priority"], job["jobtype"], job["timelimit"]) == ("template", 5, "calib", 30)
    assert job["env"]["RUN"] == "7" and job["env"]["P3S"] == "TRUE"


def test_malformed_json_submits_nothing(server, p3s_job, tmp_path):
    (tmp_path / "bad.json").write_text('[\n  {"payload": "/bin/true",\n   "name": "x",,\n  }\n]\n')
    result = p3s_job("-j", "bad.json")
    assert result.returncode == 2
    assert re.search(r"^bad\.json:3:\d+: ", result.stderr, re.M), result.stderr
    assert result.stdout == "" and jobs(server) == []


@pytest.mark.parametrize("text, message", [
    ('{"payload": "/bin/true"}', "got an object"),
    ('[{"payload": "/bin/true"}, "x"]', "item 1 is a string"),
    ("[]", "empty"),
])
def test_json_that_is_not_a_list_of_jobs(server, p3s_job, tmp_path, text, message):
    (tmp_path / "jobs.json").write_text(text)
    result = p3s_job("submit", "-j", "jobs.json")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert jobs(server) == []


def test_a_refused_job_refuses_the_whole_file(server, p3s_job, tmp_path):
    (tmp_path / "jobs.json").write_text('[{"payload": "/bin/true"}, {"payload": "/bin/true", "priority": "high"}]')
    result = p3s_job("submit", "-j", "jobs.json")
    assert result.returncode == 1
    assert "[1].priority" in result.stderr and "HTTP 422" in result.stderr
    assert jobs(server) == []


def test_list_and_show(server, p3s_job):
    first, second = server.submit({"payload": "/bin/true", "jobtype": "type1", "name": "one"},
                                  {"payload": "/bin/false", "jobtype": "type2", "name": "two", "state": "template"})
    table = p3s_job("list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["UUID", "STATE", "JOBTYPE", "NAME", "PRIO", "PILOT/HOST", "EXIT", "DEFINED", "STOPPED"]
    assert {row.split()[0] for row in rows} == {first["uuid"], second["uuid"]}
    assert "2 of 2 job(s)" in table.stderr
    listed = json.loads(p3s_job("list", "--state", "template,finished", "--json").stdout)
    assert [j["uuid"] for j in listed["items"]] == [second["uuid"]] and listed["total"] == 1
    assert [j["uuid"] for j in json.loads(p3s_job("list", "-T", "type1", "--json").stdout)["items"]] == \
        [first["uuid"]]
    shown = p3s_job("show", first["uuid"])
    assert shown.returncode == 0 and f"uuid: {first['uuid']}" in " ".join(shown.stdout.split())
    assert "payload: /bin/true" in " ".join(shown.stdout.split())
    assert json.loads(p3s_job("show", first["uuid"], "--json").stdout)["name"] == "one"
    missing = p3s_job("show", "no-such-job")
    assert missing.returncode == 1 and "no-such-job" in missing.stderr and "404" in missing.stderr


def test_adjust(server, p3s_job):
    a, b = server.submit({"payload": "/bin/true", "env": {"KEEP": "1"}}, {"payload": "/bin/true"})
    result = p3s_job("--adjust", "-u", f"{a['uuid']},{b['uuid']}", "-P", "5", "--env", "NEW=2", "-t", "60")
    assert result.returncode == 0, result.stderr
    for uuid in (a["uuid"], b["uuid"]):
        job = server.job(uuid)
        assert (job["priority"], job["timelimit"], job["env"]["NEW"]) == (5, 60, "2")
    assert server.job(a["uuid"])["env"] == {"KEEP": "1", "NEW": "2"}
    held = p3s_job("adjust", "-u", "no-such-job", "-u", a["uuid"], "-A", "template")
    assert held.returncode == 1 and "no-such-job" in held.stderr
    assert server.job(a["uuid"])["state"] == "template"
    nothing = p3s_job("adjust", "-u", a["uuid"])
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr


def test_kill(server, p3s_job):
    [job] = server.submit({"payload": "/bin/true"})
    result = p3s_job("kill", "-u", job["uuid"])
    assert result.returncode == 0 and "cancelled" in result.stdout, result.stderr
    assert server.job(job["uuid"])["state"] == "cancelled"
    again = p3s_job("--kill", "-u", job["uuid"])
    assert again.returncode == 1 and "nothing to kill" in again.stderr


def test_delete_by_filter_needs_yes(server, p3s_job):
    doomed = server.submit(*[{"payload": "/bin/true", "jobtype": "old"}] * 2)
    [kept] = server.submit({"payload": "/bin/true", "jobtype": "new"})
    dry = p3s_job("delete", "-T", "old")
    assert dry.returncode == 1 and "2 job(s) match" in dry.stderr and "--yes" in dry.stderr
    assert len(jobs(server)) == 3
    done = p3s_job("--delete", "-T", "old", "--yes")
    assert done.returncode == 0 and "deleted 2 job(s)" in done.stdout, done.stderr
    assert [j["uuid"] for j in jobs(server)] == [kept["uuid"]]
    by_uuid = p3s_job("delete", "-u", kept["uuid"])
    assert by_uuid.returncode == 0 and jobs(server) == []
    assert all(d["uuid"] not in by_uuid.stdout for d in doomed)
    assert p3s_job("delete").returncode == 2


def test_limits(server, p3s_job):
    server.submit({"payload": "/bin/true", "jobtype": "type1"}, {"payload": "/bin/true", "jobtype": "type2"})
    result = p3s_job("--ltype", "-L", "2", "-T", "type1")
    assert result.returncode == 0, result.stderr
    assert server.ok("GET", "/jobtypes/type1")["limit"] == 2
    table = p3s_job("limits")
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "LIMIT", "ACTIVE", "DEFINED"]
    assert [row.split()[:4] for row in rows] == [["type1", "2", "0", "1"], ["type2", "none", "0", "1"]]
    assert p3s_job("limits", "-L", "3").returncode == 0
    assert [t["limit"] for t in server.ok("GET", "/jobtypes")["items"]] == [3, 3]
    assert p3s_job("limits", "-L", "none", "-T", "type1").returncode == 0
    assert server.ok("GET", "/jobtypes/type1")["limit"] is None
    assert p3s_job("limits", "-L", "-1").returncode == 2


def test_usage_errors_exit_2(p3s_job):
    assert p3s_job().returncode == 2
    both = p3s_job("--adjust", "--delete", "-u", "x")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    for letter, command in (("-a", "adjust"), ("-d", "delete"), ("-k", "kill"), ("-l", "limits")):
        old = p3s_job(letter, "-u", "x")       # the original's action letters: refused, naming the sub-command
        assert old.returncode == 2 and f"write 'p3s-job {command} …'" in old.stderr, old.stderr
    assert p3s_job("submit").returncode == 2
    assert p3s_job("submit", "-j", "missing.json").returncode == 2
    helped = p3s_job("--help")
    assert helped.returncode == 0 and "submit" in helped.stdout and "limits" in helped.stdout
