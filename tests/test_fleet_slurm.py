"""``p3s-fleet -b slurm`` against a real single-host Slurm cluster (``slurm_cluster.py``): real
munged, slurmctld and four slurmds, real pilots in real batch jobs, a real server."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from fleet_support import Fleet, fleet, processes_with  # noqa: F401  (fixtures)
from slurm_cluster import SlurmCluster, SlurmUnavailable

FAST_PILOT = ("--", "-c", "0", "-p", "5", "-b", "1", "--grace", "1")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Four nodes wn[01-04] of two CPUs each, on this host; stopped at the end, pass or fail."""
    try:
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), nodes=4, cpus=2)
    except SlurmUnavailable as exc:
        pytest.skip(str(exc))
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        pytest.skip(str(exc))
    print(f"\nslurm test cluster: {len(cluster.names)} nodes, {cluster.proctrack}", file=sys.stderr)
    try:
        yield cluster
    finally:
        cluster.stop()


def _env(slurm: SlurmCluster) -> dict[str, str]:
    return {"SLURM_CONF": slurm.env["SLURM_CONF"]}


def _squeue(slurm: SlurmCluster, fleet: Fleet) -> list[str]:
    out = slurm.run("squeue", "-h", "-r", "-o", "%i %j").stdout
    return [line.split()[0] for line in out.splitlines() if f"p3s-{fleet.name}=" in line]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_up_report_kill_through_slurm(server, fleet: Fleet, slurm: SlurmCluster):
    env = _env(slurm)
    up = fleet.json("up", "-B", "slurm", "-w", "wn[01-02]", "-n", "2", "--partition", "p3s", *FAST_PILOT,
                    backend="slurm", env=env)
    assert up["submitted"] == 4 and up["registered"] == 4, up
    arrays = {s["node"]: s["ids"] for s in up["submissions"]}
    assert sorted(arrays) == ["wn01", "wn02"] and all(len(ids) == 2 and ids[0].endswith("_0") for ids in arrays.values())
    records = server.ok("GET", "/pilots?state=idle,running")["items"]
    by_extra = {r["extra"]: r for r in records}
    for node, ids in arrays.items():                  # each pilot: its node's Slurm name, its array task id
        assert all(by_extra[f"slurm:{i}"]["host"] == node for i in ids)
    for pid in processes_with("P3S_FLEET", fleet.name):     # the token only in the environment
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            assert server.token.encode() not in handle.read()
    script = slurm.run("scontrol", "write", "batch_script", arrays["wn01"][0].split("_")[0], "-").stdout
    assert script.startswith("#!/bin/sh") and server.token not in script and "P3S_PILOT_PYZ" in script

    jobs = server.submit({"payload": "sleep 60", "name": "a", "timelimit": 100},
                         {"payload": "sleep 60", "name": "b", "timelimit": 100})
    server.wait_for(lambda: all(server.job(j["uuid"])["state"] == "running" for j in jobs), timeout=20)
    report = fleet.json("report", backend="slurm", env=env)
    nodes = {row["node"]: row for row in report["nodes"]}
    assert nodes["total"]["running"] == 4 and nodes["total"]["registered"] == 4 and nodes["total"]["busy"] == 2
    assert nodes["wn01"]["running"] == 2 and nodes["wn02"]["running"] == 2
    assert {row["server"] for row in report["jobs"]} == {"idle", "running"}
    assert {row["job"] for row in report["jobs"] if row["job"]} == {j["uuid"] for j in jobs}
    table = fleet.run("report", "--pilots", backend="slurm", env=env)
    assert table.returncode == 0 and table.stdout.startswith("BATCH ID") and arrays["wn02"][1] in table.stdout

    killed = fleet.json("kill", "-w", "wn[01-02]", backend="slurm", env=env)
    assert killed["found"] == 4 and killed["stopped_on_request"] == 4 and killed["left"] == [], killed
    assert {server.job(j["uuid"])["state"] for j in jobs} == {"killed"}
    assert {p["state"] for p in server.ok("GET", "/pilots")["items"]} == {"stopped"}
    assert _squeue(slurm, fleet) == []
    _wait(lambda: fleet.pids() == [], 10, "the pilots' processes to end")


def test_an_array_beyond_the_free_cpus_queues_and_kill_cancels_everything(server, fleet: Fleet,
                                                                            slurm: SlurmCluster):
    env = _env(slurm)
    up = fleet.json("up", "-n", "10", "--register-timeout", "0", *FAST_PILOT, backend="slurm", env=env)
    (array,) = up["submissions"]
    assert array["node"] is None and len(array["ids"]) == 10 and up["registered"] == 0
    _wait(lambda: len(server.ok("GET", "/pilots?state=idle")["items"]) == 8, 60, "8 pilots on the 8 CPUs")
    report = fleet.json("report", backend="slurm", env=env)
    nodes = {row["node"]: row for row in report["nodes"]}
    assert nodes["(queued)"]["pending"] == 2 and nodes["total"]["running"] == 8 and nodes["total"]["registered"] == 8
    assert "Resources" in nodes["(queued)"]["reasons"] or "Priority" in nodes["(queued)"]["reasons"]
    assert sorted(n for n in nodes if n.startswith("wn")) == ["wn01", "wn02", "wn03", "wn04"]
    assert all(nodes[n]["running"] == 2 for n in ("wn01", "wn02", "wn03", "wn04"))

    killed = fleet.json("kill", "--all", backend="slurm", env=env)
    assert killed["found"] == 10 and len(killed["cancelled_queued"]) == 2 and killed["stopped_on_request"] == 8
    assert killed["left"] == [] and _squeue(slurm, fleet) == []
    assert {p["state"] for p in server.ok("GET", "/pilots")["items"]} == {"stopped"}


def test_a_pilot_that_ignores_the_server_is_cancelled_with_its_payloads(server, fleet: Fleet, slurm: SlurmCluster):
    env = _env(slurm)
    assert fleet.json("up", "-w", "wn03", *FAST_PILOT, backend="slurm", env=env)["registered"] == 1
    (job,) = server.submit({"payload": "sh -c 'sleep 300 & sleep 300'", "name": "stuck", "timelimit": 400})
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "running", timeout=20)
    (record,) = server.ok("GET", "/pilots?state=running")["items"]
    payloads = processes_with("P3S_JOB_UUID", job["uuid"])
    assert len(payloads) >= 2
    os.kill(record["pid"], signal.SIGSTOP)            # it will not hear the server's stop request
    killed = fleet.json("kill", "--all", "--wait", "1", backend="slurm", env=env)
    assert killed["stopped_on_request"] == 0 and len(killed["cancelled_running"]) == 1 and killed["left"] == []
    assert server.ok("GET", f"/pilots/{record['uuid']}")["state"] == "stopped"
    if slurm.proctrack == "proctrack/cgroup":         # linuxproc loses double-forked children
        _wait(lambda: processes_with("P3S_JOB_UUID", job["uuid"]) == [], 20, "scancel to end the payloads")


def test_top_up_through_slurm_for_two_sites_and_the_factory_records_its_rounds(server, fleet: Fleet,
                                                                              slurm: SlurmCluster):
    env = _env(slurm)
    server.ok("POST", "/sites", {"name": "lab", "pilots": 3, "cycles": 0, "period": 5, "beat": 1}, 201)
    server.ok("POST", "/sites", {"name": "dock", "pilots": 1, "cycles": 0, "period": 5, "beat": 1}, 201)
    first = fleet.run("top-up", "--site", "lab", "--site", "dock", "--json", *FAST_PILOT, backend="slurm", env=env)
    assert first.returncode == 0, first
    lab, dock = _json_objects(first.stdout)
    assert (lab["site"], lab["nominal"], lab["alive"]) == ("lab", 3, 0) and sum(len(s["ids"]) for s in lab["submitted"]) == 3
    assert dock["site"] == "dock" and sum(len(s["ids"]) for s in dock["submitted"]) == 1
    again = fleet.json("top-up", "--site", "lab", *FAST_PILOT, backend="slurm", env=env)
    assert again["submitted"] == [] and again["alive"] + again["queued"] == 3          # none twice
    _wait(lambda: len(server.ok("GET", "/pilots?site=lab&state=idle")["items"]) == 3, 60, "3 pilots of lab")
    _wait(lambda: server.ok("GET", "/pilots?site=dock&state=idle,running")["items"], 60, "the pilot of dock")
    assert {p["site"] for p in server.ok("GET", "/pilots?state=idle,running")["items"]} == {"lab", "dock"}
    events = server.ok("GET", "/events?kind=fleet.topup&site=lab")["items"]
    assert [e["data"]["submitted"] for e in events] == [0, 3] and {e["source"] for e in events} == {"p3s-fleet"}
    assert events[1]["data"]["wanted"] == 3 and events[1]["data"]["backend"] == "slurm"
    assert [e["data"]["submitted"] for e in server.ok("GET", "/events?kind=fleet.topup&site=dock")["items"]] == [1]
    killed = fleet.json("kill", "--all", backend="slurm", env=env)
    assert killed["found"] == 4 and killed["left"] == []


def _json_objects(text: str) -> list[dict]:
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.strip()):
        obj, end = decoder.raw_decode(text, at)
        found.append(obj)
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def test_slurm_refusals_come_back_with_slurms_words(server, fleet: Fleet, slurm: SlurmCluster):
    env = _env(slurm)
    done = fleet.run("up", "--partition", "nosuch", "--register-timeout", "0", backend="slurm", env=env)
    assert done.returncode == 1 and "sbatch failed (exit status 1)" in done.stderr
    assert "invalid partition" in done.stderr.lower(), done.stderr
    configured = fleet.run("up", "--register-timeout", "0", backend="slurm",
                           env={**env, "P3S_FLEET_OPTIONS": "[--partition, nosuch, --time, '5']"})
    assert configured.returncode == 1 and "invalid partition" in configured.stderr.lower(), configured.stderr
    wrong = fleet.run("up", "--queue", "all.q", backend="slurm", env=env)
    assert wrong.returncode == 2 and "--queue is not an option of the slurm backend" in wrong.stderr
    # a configuration Slurm cannot use (a missing file would do too, but Slurm's clients retry that for 60 s)
    unusable = slurm.tmp / "unusable.conf"
    unusable.write_text("")
    gone = fleet.run("report", backend="slurm", env={**env, "SLURM_CONF": str(unusable)})
    assert gone.returncode == 1 and "squeue failed" in gone.stderr
    assert _squeue(slurm, fleet) == []
