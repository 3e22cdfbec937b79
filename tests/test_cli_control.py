"""The operators' commands as a person runs them: real processes against a real server."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def command(server, module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("P3S_") and k != "NO_COLOR"}
    return subprocess.run([sys.executable, "-m", f"p3s.cli.{module}", *args, "-S", server.url, "--token", server.token],
                          capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


def finish(server, pilot: str, exit_code: int, stdout: str = "", stderr: str = "") -> str:
    job = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    server.report(pilot, "jobstop", job=job["uuid"], exit_code=exit_code, stdout_tail=stdout or None,
                  stderr_tail=stderr or None)
    return job["uuid"]


@pytest.mark.server_settings(pilot_lost_timeout=120)    # the pilot registered by hand counts as live throughout
def test_sites_add_list_show_set_delete(server):
    added = command(server, "site", "add", "np04", "-n", "8", "-c", "0", "--env", "DET=np04", "--comment", "hall")
    assert added.returncode == 0, added.stderr
    assert server.ok("GET", "/sites/np04")["pilots"] == 8 and server.ok("GET", "/sites/np04")["env"] == {"DET": "np04"}
    server.register(host="wn01", site="np04")
    listing = command(server, "site", "list")
    assert listing.returncode == 0 and listing.stdout.split("\n")[1].split()[:3] == ["np04", "8", "1"]
    assert command(server, "site", "set", "np04", "-n", "4").returncode == 0
    shown = command(server, "site", "show", "np04")
    assert "pilots:" in shown.stdout and " 4" in shown.stdout and "live:" in shown.stdout
    assert command(server, "site", "add", "np04").returncode == 1          # exists: the server refuses
    assert command(server, "site", "set", "np04").returncode == 2          # nothing to change
    assert command(server, "site", "add", "x", "-n", "-3").returncode == 2
    assert command(server, "site", "delete", "np04").returncode == 0
    assert server.call("GET", "/sites/np04").status == 404


def test_job_log_rerun_kill_and_errors(server):
    server.submit({"payload": "x", "jobtype": "reco", "name": "a"}, {"payload": "x", "jobtype": "reco", "name": "b"})
    pilot = server.register(host="wn01")
    first = finish(server, pilot, 2, "line one\nline two\n", "ERROR: no calibration\n")
    second = finish(server, pilot, 2, "", "ERROR: no calibration\n")
    out = command(server, "job", "log", first)
    assert out.returncode == 0 and out.stdout == "line one\nline two\n"
    err = command(server, "job", "log", first, "--err")
    assert err.stdout == "ERROR: no calibration\n"
    follow = command(server, "job", "log", second, "--follow")             # ended: prints and returns
    assert follow.returncode == 0
    errors = command(server, "job", "errors", "--by", "error_line")
    assert errors.returncode == 0 and "ERROR: no calibration" in errors.stdout and errors.stdout.split("\n")[1].startswith("2")
    assert command(server, "job", "errors", "--by", "colour").returncode == 2
    counted = command(server, "job", "rerun", "-A", "failed", "-T", "reco")
    assert counted.returncode == 1 and "2 job(s) match" in counted.stderr
    assert server.job(first)["state"] == "failed"
    done = command(server, "job", "rerun", "-A", "failed", "-T", "reco", "--yes")
    assert done.returncode == 0 and "rerun: 2 of 2" in done.stdout
    assert server.job(first)["state"] == "defined"
    assert command(server, "job", "rerun", "-A", "bogus", "--yes").returncode == 2
    killed = command(server, "job", "kill", "-T", "reco", "--yes")
    assert killed.returncode == 0 and "kill: 2 of 2" in killed.stdout
    assert server.job(second)["state"] == "cancelled"


def test_status_events_hosts_alarms(make_server):
    server = make_server(blackhole_jobs=2, pilot_lost_timeout=120)   # no lost-pilot alarm on a slow machine
    server.submit(*[{"payload": "x", "jobtype": "reco"} for _ in range(3)])
    status = command(server, "status")
    assert status.returncode == 3                                          # jobs wait, no pilot: an alarm fires
    assert "Jobs:   3 total: 3 defined" in status.stdout and "no live pilots" in status.stdout
    assert "\033[" not in status.stdout                                    # not a terminal: no colour
    pilot = server.register(host="wn13")
    finish(server, pilot, 1)
    finish(server, pilot, 1)
    hosts = command(server, "host", "list")
    assert hosts.returncode == 0 and "wn13" in hosts.stdout and "drained" in hosts.stdout
    alarm = command(server, "alarm", "list")
    assert "blackhole:wn13" in alarm.stdout
    ack = command(server, "alarm", "ack", "blackhole:wn13", "-r", "node under repair", "-m", "30")
    assert ack.returncode == 0 and "silenced until" in ack.stdout
    assert command(server, "status").returncode == 0                       # silenced alarms do not count
    assert "silenced" in command(server, "alarm", "list").stdout
    assert command(server, "host", "clear", "wn13").returncode == 0
    note = command(server, "event", "add", "note", "beam off until 14:00")
    assert note.returncode == 0 and note.stdout.strip().endswith("Z")
    events = command(server, "event", "list", "--limit", "200")
    assert "beam off until 14:00" in events.stdout and "host.blackhole" in events.stdout
    assert all(line[19] == "Z" for line in events.stdout.splitlines())     # every time says its zone


def test_times_carry_their_zone_and_colours_honour_no_color(server):
    server.submit({"payload": "x", "name": "zone"})
    listing = command(server, "job", "list")
    row = listing.stdout.splitlines()[1]
    assert row.rstrip().endswith("-") and "Z" in row.split("defined", 1)[1]
    # script(1) gives the command a terminal: states are coloured, unless NO_COLOR is set
    if not shutil_which("script"):
        pytest.skip("script(1) is needed to give the command a terminal")
    line = " ".join([sys.executable, "-m", "p3s.cli.job", "list", "-S", server.url, "--token", server.token])
    tty = subprocess.run(["script", "-qec", line, "/dev/null"], capture_output=True, text=True, timeout=60)
    assert "\033[34mdefined" in tty.stdout
    plain = subprocess.run(["script", "-qec", line, "/dev/null"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "NO_COLOR": "1"})
    assert "\033[" not in plain.stdout and "defined" in plain.stdout


def test_a_wrong_flag_value_is_refused_not_passed_silently(server):
    wrong = command(server, "pilot", "list", "-s", "running")
    assert wrong.returncode == 2 and "-A running" in wrong.stderr
    assert command(server, "pilot", "list", "-A", "sleeping").returncode == 2
    assert command(server, "job", "list", "-A", "runing").returncode == 2
    assert command(server, "job", "list", "-s", "running").returncode == 2          # -s is the site
    server.register(host="wn01", site="np04")
    assert command(server, "pilot", "list", "-s", "np04").returncode == 0


def shutil_which(name: str) -> str | None:
    import shutil
    return shutil.which(name)


def test_fleet_up_warns_when_pilots_will_stop_after_idling(server, tmp_path):
    from fleet_support import Fleet

    fleet = Fleet(tmp_path / "fleet", server)
    try:
        idle = fleet.run("up", "-w", "wn01", "--", "-c", "2", "-p", "1", "-b", "1")
        assert idle.returncode == 0, idle
        assert "stop by themselves after 2 request(s) in a row with no work (about 2 s idle)" in idle.stderr
        assert "-- -c 0" in idle.stderr
        stays = fleet.run("up", "-w", "wn02", "--", "-c", "0", "-p", "1", "-b", "1")
        assert stays.returncode == 0 and "stop by themselves" not in stays.stderr
        pilots = fleet.run("report", "-w", "wn02", "--pilots")
        assert pilots.returncode == 0 and re.search(r"\d\d:\d\d:\d\dZ", pilots.stdout), pilots.stdout
    finally:
        fleet.cleanup()


def test_server_on_a_taken_port_says_so_in_one_line(server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    done = subprocess.run([sys.executable, "-m", "p3s.cli.server", "--port", str(server.port), "--data-dir",
                           str(tmp_path / "other"), "--log-level", "ERROR"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{server.port}" in lines[0] and "in use" in lines[0], lines


def test_the_readme_examples_work_verbatim_on_a_fresh_server(server, tmp_path):
    """The shell lines the README gives for workflows and job files, as written there."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    wanted = [b for b in blocks if "add-type TXT" in b or "conf/jobs/example.json" in b]
    assert len(wanted) == 2
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")},
           "P3S_SERVER_URL": server.url, "P3S_TOKEN": server.token,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for block in wanted:
        done = subprocess.run(["bash", "-euc", block], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (block, done.stderr)
    assert server.ok("GET", "/workflows")["total"] == 1
    assert {j["name"] for j in server.ok("GET", "/jobs?limit=100")["items"]} >= {"hello", "count-lines"}
