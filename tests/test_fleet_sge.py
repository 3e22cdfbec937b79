"""``p3s-fleet -b sge`` against a real Grid Engine cell (``sge_cell.py``): real sge_qmaster and
sge_execd with four slots on this host, real pilots in real array jobs, a real server."""
from __future__ import annotations

import sys
import time

import pytest

from fleet_support import Fleet, fleet, processes_with  # noqa: F401  (fixtures)
from sge_cell import SGECell, SGEUnavailable

FAST_PILOT = ("--", "-c", "0", "-p", "5", "-b", "1", "--grace", "1")


@pytest.fixture(scope="module")
def sge(tmp_path_factory):
    try:
        cell = SGECell(tmp_path_factory.mktemp("sge"), slots=4)
        cell.start()
    except SGEUnavailable as exc:
        pytest.skip(str(exc))
    print(f"\nGrid Engine test cell: host {cell.host}, {cell.slots} slots", file=sys.stderr)
    try:
        yield cell
    finally:
        cell.stop()


def _env(cell: SGECell) -> dict[str, str]:
    return {k: cell.env[k] for k in ("SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT")}


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_up_report_kill_through_grid_engine(server, fleet: Fleet, sge: SGECell):
    env = _env(sge)
    up = fleet.json("up", "-w", sge.host, "-n", "3", "--queue", "all.q", *FAST_PILOT, backend="sge", env=env)
    assert up["submitted"] == 3 and up["registered"] == 3, up
    (sub,) = up["submissions"]
    job_id = sub["ids"][0].split(".")[0]
    assert sub["ids"] == [f"{job_id}.{task}" for task in (1, 2, 3)]
    records = server.ok("GET", "/pilots?state=idle,running")["items"]
    assert sorted(r["extra"] for r in records) == [f"sge:{i}" for i in sub["ids"]]
    assert {r["host"] for r in records} == {sge.host}
    for pid in processes_with("P3S_FLEET", fleet.name):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            assert server.token.encode() not in handle.read()

    (job,) = server.submit({"payload": "sleep 60", "name": "a", "timelimit": 100})
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "running", timeout=20)
    report = fleet.json("report", backend="sge", env=env)
    (row,) = report["nodes"]
    assert row["node"] == sge.host and row["running"] == 3 and row["registered"] == 3 and row["busy"] == 1
    assert sorted(j["id"] for j in report["jobs"]) == sub["ids"]

    killed = fleet.json("kill", "--all", backend="sge", env=env)
    assert killed["found"] == 3 and killed["stopped_on_request"] == 3 and killed["left"] == [], killed
    assert server.job(job["uuid"])["state"] == "killed"
    assert {p["state"] for p in server.ok("GET", "/pilots")["items"]} == {"stopped"}
    _wait(lambda: not fleet.json("report", backend="sge", env=env)["jobs"], 20, "qstat to forget the jobs")


def test_jobs_beyond_the_slots_wait_and_kill_deletes_them(server, fleet: Fleet, sge: SGECell):
    env = _env(sge)
    up = fleet.json("up", "-n", "6", "--register-timeout", "0", *FAST_PILOT, backend="sge", env=env)
    assert len(up["submissions"][0]["ids"]) == 6
    _wait(lambda: len(server.ok("GET", "/pilots?state=idle")["items"]) == 4, 60, "4 pilots in the 4 slots")
    nodes = {row["node"]: row for row in fleet.json("report", backend="sge", env=env)["nodes"]}
    assert nodes["(queued)"]["pending"] == 2 and nodes[sge.host]["running"] == 4 and nodes["total"]["registered"] == 4
    killed = fleet.json("kill", "--all", backend="sge", env=env)
    assert killed["found"] == 6 and len(killed["cancelled_queued"]) == 2 and killed["stopped_on_request"] == 4
    assert killed["left"] == []
    assert {p["state"] for p in server.ok("GET", "/pilots")["items"]} == {"stopped"}
