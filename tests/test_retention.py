"""Retention: archive files by day, purges (operator and continuous), restores, kept statistics.

Every test runs a real server; the archive is read the way an operator would, with gzip.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import conftest

from p3s import archive

TODAY = lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")  # noqa: E731
OFF = {"retention_period": 0}


def run_jobs(server, n_ok: int, n_fail: int, n_cancel: int, n_waiting: int) -> dict[str, list[str]]:
    """Jobs ended in each way through a pilot of the API (and some left defined)."""
    jobs = server.submit(*({"payload": f"job {i}", "jobtype": "retain", "name": f"r{i}"}
                           for i in range(n_ok + n_fail + n_cancel + n_waiting)))
    ids = [j["uuid"] for j in jobs]
    pilot = server.register()
    out = {"finished": [], "failed": [], "cancelled": [], "defined": []}
    for i in range(n_ok + n_fail):
        job = server.claim(pilot)["job"]
        server.report(pilot, "jobstart", job=job["uuid"], pid=100 + i)
        code = 0 if i < n_ok else 3
        assert server.report(pilot, "jobstop", job=job["uuid"], exit_code=code).status == 200
        out["finished" if code == 0 else "failed"].append(job["uuid"])
    rest = [u for u in ids if u not in out["finished"] + out["failed"]]
    for uuid in rest[:n_cancel]:
        server.ok("POST", f"/jobs/{uuid}/kill", status=202)
        out["cancelled"].append(uuid)
    out["defined"] = rest[n_cancel:]
    assert server.report(pilot, "stopped").status == 200
    return out


def read_archive(server, kind: str, day: str | None = None) -> list[dict]:
    path = server.data_dir / "archive" / kind / f"{day or TODAY()}.jsonl.gz"
    with gzip.open(path, "rt") as handle:          # what `zcat` reads
        return [json.loads(line) for line in handle]


def windows(server) -> dict:
    return server.ok("GET", "/stats")["windows"]["24h"]


def test_purge_archives_removes_and_restore_puts_back_once(make_server):
    s = make_server(**OFF)
    ended = run_jobs(s, n_ok=3, n_fail=2, n_cancel=1, n_waiting=2)
    gone = ended["finished"] + ended["failed"] + ended["cancelled"]
    originals = {u: s.job(u) for u in gone}
    stats_before, summary_before = windows(s), s.ok("GET", "/summary")
    assert stats_before["total"]["finished"] == 3 and summary_before["jobs"]["finished"] == 3

    dry = s.ok("POST", "/admin/purge", {"kinds": ["jobs"], "keep": 2, "dry_run": True})
    assert dry["kinds"]["jobs"]["removed"] == 6
    assert s.ok("GET", "/summary")["jobs"]["finished"] == 3          # a dry run writes nothing

    # Keep at most 2 jobs: the 6 ended ones go, the 2 defined ones cannot.
    reply = s.ok("POST", "/admin/purge", {"kinds": ["jobs"], "keep": 2})
    assert reply["kinds"]["jobs"]["removed"] == 6 and reply["kinds"]["jobs"]["archived_bytes"] > 0
    listed = s.ok("GET", "/jobs")
    assert sorted(j["uuid"] for j in listed["items"]) == sorted(ended["defined"]) and listed["total"] == 2
    assert s.call("GET", f"/jobs/{gone[0]}").status == 404

    lines = read_archive(s, "jobs")
    assert sorted(d["_id"] for d in lines) == sorted(gone)
    assert all(isinstance(d["ts_def"], dict) and "$date" in d["ts_def"] for d in lines)

    # Counters are exact, what went is kept as archived totals, statistics are untouched.
    summary = s.ok("GET", "/summary")
    assert summary["jobs"]["finished"] == 0 and summary["jobs"]["defined"] == 2
    assert summary["archived"]["jobs"] == 6
    assert summary["archived"]["jobs_by_state"] == {"finished": 3, "failed": 2, "cancelled": 1}
    assert windows(s) == stats_before
    # ... and so they stay after a restart: kept, not recounted from the jobs that are gone.
    s.restart()
    assert windows(s) == stats_before
    after_restart = s.ok("GET", "/summary")
    assert after_restart["jobs"] == summary["jobs"] and after_restart["archived"] == summary["archived"]

    # A kill between the archive's sync and the delete leaves a record archived twice: restore once.
    path = s.data_dir / "archive" / "jobs" / f"{TODAY()}.jsonl.gz"
    path.write_bytes(path.read_bytes() * 2)
    assert s.ok("POST", "/admin/restore", {"kind": "jobs", "days": [TODAY()]}) == {"restored": 6, "skipped": 6}
    for uuid, before in originals.items():
        after = s.job(uuid)
        assert after.pop("ts_restored")
        assert after == before
    summary = s.ok("GET", "/summary")
    assert summary["jobs"]["finished"] == 3 and summary["archived"]["jobs"] == 0
    assert s.ok("POST", "/admin/restore", {"kind": "jobs", "days": [TODAY()]}) == {"restored": 0, "skipped": 12}
    # Restored records are young again for the age rule: a purge by age leaves them.
    again = s.ok("POST", "/admin/purge", {"kinds": ["jobs"], "older_than_days": 1})
    assert again["kinds"]["jobs"]["removed"] == 0


def test_retention_runs_by_itself_for_every_kind(make_server):
    s = make_server(retention_period=0.2, retain_jobs_max=3, retain_pilots_max=1, retain_events_max=2,
                    retain_data_max=1)
    ended = run_jobs(s, n_ok=2, n_fail=0, n_cancel=3, n_waiting=1)
    for name in ("a.txt", "b.txt", "c.txt"):
        s.ok("POST", "/data", {"name": name, "dirpath": "/d"}, 201)
    for _ in range(2):
        s.report(s.register(), "stopped")
    s.wait_for(lambda: s.ok("GET", "/jobs")["total"] == 3)
    remaining = {j["uuid"] for j in s.ok("GET", "/jobs")["items"]}
    # The oldest ended jobs went first; the defined one stays whatever its age.
    assert ended["defined"][0] in remaining
    assert ended["finished"][0] not in remaining and ended["finished"][1] not in remaining
    s.wait_for(lambda: s.ok("GET", "/pilots")["total"] == 1)
    s.wait_for(lambda: s.ok("GET", "/data")["total"] == 1)
    s.wait_for(lambda: s.ok("GET", "/events")["total"] <= 2)
    assert s.ok("GET", "/data")["items"][0]["name"] == "c.txt"
    assert len(read_archive(s, "jobs")) == 3 and len(read_archive(s, "pilots")) == 2
    status = s.ok("GET", "/admin/retention")
    assert status["policy"]["jobs"] == {"days": 30.0, "keep": 3}
    assert {f["kind"] for f in status["files"]} >= {"jobs", "pilots", "data", "events"}
    assert status["archived"]["pilots"] == 2 and status["archived"]["data"] == 2


DAG = textwrap.dedent("""
    name: pair
    jobs:
      a: {jobtype: a, payload: "make-a"}
      b: {jobtype: b, payload: "use-a"}
    data:
      - {id: ab, source: a, target: b, datatag: AB, datatype: TXT}
""").strip() + "\n"


def test_ended_workflow_goes_with_its_jobs_and_data_and_comes_back(make_server):
    s = make_server(**OFF)
    s.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    s.ok("POST", "/templates", {"yaml": DAG}, 201)
    wf = s.ok("POST", "/workflows", {"template": "pair"}, 201)
    live = s.ok("POST", "/workflows", {"template": "pair"}, 201)
    s.ok("POST", f"/workflows/{wf['uuid']}/cancel", status=202)
    before = s.ok("GET", f"/workflows/{wf['uuid']}")
    # A workflow's jobs are not purged one by one, and a workflow that has not ended stays.
    assert s.ok("POST", "/admin/purge", {"kinds": ["jobs"], "keep": 1})["kinds"]["jobs"]["removed"] == 0
    time.sleep(0.2)
    reply = s.ok("POST", "/admin/purge", {"kinds": ["workflows"], "older_than_days": 0.000001})   # 86 ms
    assert reply["kinds"]["workflows"]["removed"] == 1
    assert s.call("GET", f"/workflows/{wf['uuid']}").status == 404
    assert s.ok("GET", "/jobs", )["total"] == 2 and s.ok("GET", "/data")["total"] == 1
    assert s.ok("GET", f"/workflows/{live['uuid']}")["state"] == "defined"
    [line] = read_archive(s, "workflows")
    assert line["_id"] == wf["uuid"] and len(line["jobs"]) == 2 and len(line["data"]) == 1
    assert s.ok("GET", "/summary")["archived"]["jobs"] == 2
    # The template is no longer in use by it; restoring the workflow makes it used again.
    s.ok("POST", "/admin/restore", {"kind": "workflows", "days": [TODAY()]})
    after = s.ok("GET", f"/workflows/{wf['uuid']}")
    assert after.pop("ts_restored")
    assert after == before
    assert s.call("DELETE", "/templates/pair").status == 409


def test_admin_routes_refuse_bad_input_and_other_roles(make_server):
    client_token = "client-token-0123456789abcdef"
    s = make_server(**OFF, tokens=[{"token": "admin-token-0123456789abcdef", "role": "admin"},
                                   {"token": client_token, "role": "client"}])
    assert s.call("POST", "/admin/purge", {}, token=client_token).status == 403
    assert s.call("GET", "/admin/retention", token=client_token).status == 403
    bad = s.call("POST", "/admin/purge", {"kinds": ["jobs", "nope"]})
    assert bad.status == 422 and bad.error["field"] == "kinds[1]"
    assert s.call("POST", "/admin/purge", {"keep": -1}).error["field"] == "keep"
    assert s.call("POST", "/admin/restore", {"kind": "jobs", "days": ["../../etc"]}).error["field"] == "days[0]"
    assert s.call("POST", "/admin/restore", {"kind": "users", "days": [TODAY()]}).error["field"] == "kind"
    missing = s.call("POST", "/admin/restore", {"kind": "jobs", "days": ["2001-01-01"]})
    assert missing.status == 404 and "2001-01-01" in missing.error["message"]
    assert s.call("GET", "/admin/retention?kind=nope").status == 422


def admin(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    done = subprocess.run([sys.executable, "-m", "p3s.cli.admin", *args, "-S", server.url], env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_p3s_admin_purge_archive_restore_and_offline_restore(make_server):
    s = make_server(**OFF)
    ended = run_jobs(s, n_ok=2, n_fail=0, n_cancel=0, n_waiting=0)
    time.sleep(0.2)
    out = admin(s, "purge", "-k", "jobs", "--keep", "0", "--older-than", "0.000001").stdout
    assert "jobs" in out and " 2 " in out
    listing = admin(s, "archive", "--kind", "jobs").stdout
    assert f"{TODAY()}.jsonl.gz" in listing
    status = json.loads(admin(s, "archive", "--json").stdout)
    assert status["archived"]["jobs"] == 2
    bad = admin(s, "restore", "jobs", "2026-13-01", check=False)
    assert bad.returncode == 2 and "not a valid date" in bad.stderr
    nothing = admin(s, "restore", "jobs", "2001-01-01..2001-01-02", check=False)
    assert nothing.returncode == 1 and "no archive of jobs for 2001-01-01" in nothing.stderr

    # Offline: refused while the server holds the data directory, works once it is stopped.
    cmd = [sys.executable, "-m", "p3s.cli.admin", "restore", "jobs", TODAY(), "--offline",
           "--config", str(s.config_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    if not conftest.TEST_DB:          # the data directory's lock guards the embedded store only
        busy = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and "in use by another p3s-server" in busy.stderr and "stop it" in busy.stderr
    port = s.port
    s.stop()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "restored 2 jobs" in done.stdout, done.stderr
    s.start(port)
    assert sorted(j["uuid"] for j in s.ok("GET", "/jobs")["items"]) == sorted(ended["finished"])
    assert s.ok("GET", "/summary")["jobs"]["finished"] == 2


def test_an_interrupted_archive_write_is_cut_off_and_never_read(tmp_path):
    store = archive.Archive(tmp_path / "archive")
    store.append("events", {"2026-12-01": [{"_id": 1, "ts": dt.datetime(2026, 12, 1, 10)}]})
    path = store.path("events", "2026-12-01")
    whole = gzip.compress(b'{"_id": 2}\n')
    with open(path, "ab") as handle:                  # a writer killed half-way through a member
        handle.write(whole[: len(whole) // 2])
    assert [d["_id"] for d in archive.read_file(path)] == [1]
    fresh = archive.Archive(tmp_path / "archive")     # a new process appends to the same day
    fresh.append("events", {"2026-12-01": [{"_id": 3}]})
    assert [d["_id"] for d in archive.read_file(path)] == [1, 3]
    assert subprocess.run(["gzip", "-t", str(path)]).returncode == 0      # zcat reads it whole
    assert list(archive.read_file(path))[0]["ts"] == dt.datetime(2026, 12, 1, 10)
    with pytest.raises(archive.ArchiveError):
        store.path("events", "../x")


@pytest.mark.skipif(bool(conftest.TEST_DB), reason="the embedded store keeps counters over a stop; MongoDB counts them")
def test_counters_are_kept_over_a_clean_stop_and_counted_after_a_kill(make_server):
    s = make_server(**OFF)
    run_jobs(s, n_ok=2, n_fail=1, n_cancel=1, n_waiting=2)
    summary = s.ok("GET", "/summary")
    s.restart()                                    # clean stop: the counters are kept
    assert s.ok("GET", "/summary")["jobs"] == summary["jobs"]
    assert "counters: kept" in s.log_path.read_text()
    s.submit({"payload": "one more"})
    s.restart(signal.SIGKILL)                      # no clean stop: the snapshot must not be used
    after = s.ok("GET", "/summary")
    assert after["jobs"]["defined"] == summary["jobs"]["defined"] + 1
    assert after["jobs"]["finished"] == 2 and after["pilots"]["stopped"] == 1


def test_pilots_data_and_events_come_back_with_their_counters(make_server):
    s = make_server(**OFF)
    pilots = [s.register(site="np04") for _ in range(2)]
    for pilot in pilots:
        assert s.report(pilot, "stopped").status == 200
    s.ok("POST", "/data", [{"name": "a.txt", "dirpath": "/d"}, {"name": "b.txt", "dirpath": "/d"}], 201)
    events = s.ok("GET", "/events")["total"]
    assert events > 0
    time.sleep(0.2)
    reply = s.ok("POST", "/admin/purge", {"kinds": ["pilots", "data", "events"], "older_than_days": 0.000001})
    assert {k: v["removed"] for k, v in reply["kinds"].items()} == {"pilots": 2, "data": 2, "events": events}
    assert s.ok("GET", "/summary")["pilots_by_site"] == {}
    for kind, expected in (("pilots", 2), ("data", 2), ("events", events)):
        assert s.ok("POST", "/admin/restore", {"kind": kind, "days": [TODAY()]})["restored"] == expected
    assert s.ok("GET", "/summary")["pilots_by_site"] == {"np04": {"stopped": 2}}
    assert sorted(d["name"] for d in s.ok("GET", "/data")["items"]) == ["a.txt", "b.txt"]
    assert s.ok("GET", "/pilots/" + pilots[0])["state"] == "stopped"
    assert s.ok("GET", "/summary")["archived"] | {"jobs_by_state": {}} == {
        "jobs": 0, "pilots": 0, "workflows": 0, "data": 0, "events": 0, "jobs_by_state": {}}


@pytest.mark.skipif(bool(conftest.TEST_DB), reason="compact is the embedded store's (SQLite files)")
def test_compact_gives_the_space_back_with_the_server_stopped(make_server):
    s = make_server(**OFF)
    for batch in range(3):
        s.submit(*({"payload": "x" * 4000, "name": f"big{batch}.{i}"} for i in range(100)))
    s.ok("DELETE", "/jobs?all=true")
    kept = s.submit({"payload": "still here"})[0]["uuid"]
    cmd = [sys.executable, "-m", "p3s.cli.admin", "compact", "--config", str(s.config_path), "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    busy = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and "stop it first" in busy.stderr
    port = s.port
    s.stop()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    jobs = next(r for r in json.loads(done.stdout) if r["file"].endswith("/jobs"))
    assert jobs["bytes_after"] < jobs["bytes_before"] - 500_000
    s.start(port)
    assert [j["uuid"] for j in s.ok("GET", "/jobs")["items"]] == [kept]
