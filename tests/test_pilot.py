"""Real pilot processes against a real server: outcomes, time limits, kills, outages, signals."""
from __future__ import annotations

import signal
import time

import psutil
import pytest

from pilot_support import pilot_starter


@pytest.fixture
def start_pilot(tmp_path):
    with pilot_starter(tmp_path, defaults=()) as start:
        yield start


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


SHELL = {"P3S_EXECMODE": "SHELL"}


def test_two_pilots_run_every_kind_of_outcome(server, start_pilot):
    stubborn = ("trap '' TERM; (trap '' TERM; while true; do sleep 1; done) & echo $! > child.pid; "
                "while true; do sleep 1; done")
    jobs = server.submit(
        {"name": "ok", "payload": "echo hello $P3S_JOB_UUID $MYVAR", "env": {**SHELL, "MYVAR": "mine"}},
        {"name": "fails", "payload": "sh -c 'echo oops >&2; exit 3'"},
        {"name": "overruns", "payload": stubborn, "env": SHELL, "timelimit": 2},
        {"name": "cannot-start", "payload": "/no/such/program --flag"},
        {"name": "busy", "payload": "python3 -c 'import time\nx=bytearray(30_000_000)\ntime.sleep(30)'",
         "timelimit": 60},
    )
    by_name = {j["name"]: j["uuid"] for j in jobs}
    pilots = [start_pilot(server, "-c", "3", "-p", "1", "-b", "1"), start_pilot(server, "-c", "3", "-p", "1", "-b", "1")]
    busy = by_name["busy"]
    server.wait_for(lambda: server.job(busy)["state"] == "running" and server.job(busy)["usage_series"], timeout=20)
    server.ok("POST", f"/jobs/{busy}/kill", status=202)
    for pilot in pilots:
        assert pilot.wait(60) == 0, pilot.log()
    states = {name: server.job(uuid) for name, uuid in by_name.items()}
    assert states["ok"]["state"] == "finished" and states["ok"]["exit_code"] == 0
    assert states["ok"]["stdout_tail"] == f"hello {by_name['ok']} mine"
    assert states["fails"]["state"] == "failed" and states["fails"]["exit_code"] == 3
    assert states["fails"]["stderr_tail"] == "oops"
    assert states["overruns"]["state"] == "timelimit"
    assert states["cannot-start"]["state"] == "nonstarter" and "/no/such/program" in states["cannot-start"]["error"]
    assert states["busy"]["state"] == "killed"
    assert states["busy"]["usage"]["peak_rss"] > 30_000_000
    assert all(sample["nprocs"] >= 1 for sample in states["busy"]["usage_series"])
    # the stubborn child that ignored SIGTERM is gone too
    overrun_pilot = next(p for p in pilots if p.job_dir(by_name["overruns"]).exists())
    child = int((overrun_pilot.job_dir(by_name["overruns"]) / "child.pid").read_text())
    assert not _pid_alive(child)
    # logs kept per job, pilots stopped after their idle cycles
    jobs_dir = overrun_pilot.dirs["jobs"]
    assert (jobs_dir / f"{by_name['overruns']}.out").exists() and (jobs_dir / f"{by_name['overruns']}.err").exists()
    listed = server.ok("GET", "/pilots")["items"]
    assert {p["state"] for p in listed} == {"stopped"} and sum(p["njobs"] for p in listed) == 5


def test_pilot_killed_with_sigkill_loses_its_job_and_its_payload(server, start_pilot):
    # A child in the payload's group, one in a session of its own, and the payload itself with its
    # environment emptied: the orphan guard must find all three.
    job = server.submit({"payload": "setsid sleep 63 & sleep 61 & exec env -i sleep 62", "timelimit": 100,
                         "env": SHELL})[0]
    pilot = start_pilot(server, "-c", "1", "-p", "1", "-b", "1")
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "running", timeout=20)
    payload_pid = server.job(job["uuid"])["pid"]
    server.wait_for(lambda: {p.cmdline()[-1] for p in psutil.Process(payload_pid).children()} == {"61", "63"},
                    timeout=10)
    tree = [payload_pid, *(p.pid for p in psutil.Process(payload_pid).children())]
    guards = [p for p in psutil.Process(pilot.proc.pid).children() if p.name() == "p3s-guard"]
    assert len(guards) == 1 and all(_pid_alive(pid) for pid in tree)
    pilot.proc.kill()
    pilot.wait()
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "pilot_lost", timeout=60)   # the reaper judged it
    assert server.ok("GET", "/pilots")["items"][0]["state"] == "lost"
    server.wait_for(lambda: not any(_pid_alive(pid) for pid in tree), timeout=5)   # they died with their pilot
    server.wait_for(lambda: not _pid_alive(guards[0].pid), timeout=5)             # and the guard has gone


def test_a_killed_orphan_guard_is_replaced(server, start_pilot):
    pilot = start_pilot(server, "-c", "0", "-p", "1", "-b", "1")
    server.wait_for(lambda: len(server.ok("GET", "/pilots")["items"]) == 1, timeout=20)

    def guards() -> list[psutil.Process]:
        return [p for p in psutil.Process(pilot.proc.pid).children() if p.name() == "p3s-guard"]

    server.wait_for(lambda: len(guards()) == 1, timeout=10)
    first = guards()[0]
    first.kill()
    job = server.submit({"payload": "sleep 60", "timelimit": 100})[0]
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "running", timeout=20)
    server.wait_for(lambda: [g.pid for g in guards()] not in ([], [first.pid]), timeout=10)
    assert "orphan guard" in pilot.log() and "starting a new one" in pilot.log()
    payload_pid = server.job(job["uuid"])["pid"]
    pilot.proc.kill()
    pilot.wait()
    server.wait_for(lambda: not _pid_alive(payload_pid), timeout=5)     # the new guard did its work


def test_result_arrives_across_a_server_restart(server, start_pilot):
    job = server.submit({"payload": "sleep 4", "timelimit": 60})[0]
    pilot = start_pilot(server, "-c", "1", "-p", "1", "-b", "1", "--outage", "60")
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "running", timeout=20)
    server.stop()
    time.sleep(5)                                                     # the payload ends while the server is down
    server.start(port=server.port)
    assert pilot.wait(60) == 0, pilot.log()
    ended = server.job(job["uuid"])
    assert ended["state"] == "finished" and ended["exit_code"] == 0
    assert "reachable again" in pilot.log()


def test_sigterm_stops_the_payload_and_reports(server, start_pilot):
    job = server.submit({"payload": "sleep 60"})[0]
    pilot = start_pilot(server, "-c", "1", "-p", "1", "-b", "1")
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "running", timeout=20)
    payload_pid = server.job(job["uuid"])["pid"]
    pilot.proc.send_signal(signal.SIGTERM)
    assert pilot.wait(20) == 0
    assert not _pid_alive(payload_pid)
    assert server.job(job["uuid"])["state"] == "killed"
    assert server.ok("GET", "/pilots")["items"][0]["state"] == "stopped"


@pytest.mark.server_settings(long_poll_max=600)
def test_kill_by_host_stops_a_waiting_pilot_at_once(server, start_pilot):
    # Its poll lasts 600 s, beyond the test's timeout: the pilot can only stop because the kill ended it.
    pilot = start_pilot(server, "-c", "0", "-p", "600", "-H", "wn42")
    server.wait_for(lambda: server.ok("GET", "/summary")["queue"]["waiting_pilots"] == 1, timeout=60)
    server.ok("POST", "/pilots/kill", {"host": "wn42"}, 202)
    assert pilot.wait(240) == 0
    assert server.ok("GET", "/pilots")["items"][0]["state"] == "stopped"


def test_registration_waits_for_the_server(make_server, start_pilot, tmp_path):
    server = make_server()
    port = server.port
    server.stop()
    pilot = start_pilot(server, "-c", "1", "-p", "1")
    time.sleep(2)
    assert pilot.proc.poll() is None                                  # still trying
    server.start(port=port)
    assert pilot.wait(30) == 0, pilot.log()
    assert server.ok("GET", "/pilots")["total"] == 1


def test_site_bootstrap_and_nonstarters_do_not_spin(server, start_pilot):
    server.ok("POST", "/sites", {"name": "lab", "cycles": 1, "period": 1, "beat": 1,
                                 "env": {"SITE_VAR": "from-site"}}, 201)
    jobs = server.submit({"payload": "echo $SITE_VAR", "env": SHELL},
                         *({"payload": f"/missing/{i}"} for i in range(8)))
    pilot = start_pilot(server, "-s", "lab")
    assert pilot.wait(60) == 0, pilot.log()
    assert server.job(jobs[0]["uuid"])["stdout_tail"] == "from-site"
    nonstarters = [server.job(j["uuid"])["state"] for j in jobs[1:]]
    # it stopped after 5 consecutive payloads that could not start, leaving the rest for others
    assert nonstarters.count("nonstarter") == 5 and nonstarters.count("defined") == 3
    assert "could not start on this node" in server.ok("GET", "/pilots")["items"][0]["reason"]
