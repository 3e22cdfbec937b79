"""A bootstrap token's ``max_pilots`` holds however registrations interleave: on one server, across
servers sharing a MongoDB, and after a server is killed with a place taken."""
from __future__ import annotations

import concurrent.futures
import http.client
import signal

import pytest

from conftest import TEST_DB

ADMIN = "admin-token-0123456789"
LIMITED = "pilot-token-limited-0123"
TOKENS = [{"token": ADMIN, "role": "admin", "name": "boss"},
          {"token": LIMITED, "role": "pilot", "name": "cern-pilots", "site": "cern", "max_pilots": 3}]


def race(servers: list, n: int) -> list[int]:
    """``n`` registrations with the limited token at once, spread over ``servers``."""
    def one(i: int) -> int:
        return servers[i % len(servers)].call("POST", "/pilots", {"host": f"wn{i}"}, token=LIMITED).status

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(one, range(n)))


def alive(server) -> list[dict]:
    return server.ok("GET", "/pilots?state=idle,running&limit=1000", token=ADMIN)["items"]


def test_racing_registrations_on_one_server_admit_max_pilots(make_server):
    s = make_server(tokens=TOKENS, pilot_lost_timeout=600)
    assert race([s], 24) == [201] * 3 + [403] * 21
    live = alive(s)
    assert len(live) == 3
    # a stopped pilot gives its place back, once
    s.ok("POST", f"/pilots/{live[0]['uuid']}/events", {"event": "stopped"}, token=ADMIN)
    assert race([s], 6) == [201] + [403] * 5
    s.ok("DELETE", f"/pilots/{live[0]['uuid']}", token=ADMIN)
    assert race([s], 2) == [403] * 2


def test_lost_pilots_give_their_places_back(make_server):
    s = make_server(tokens=TOKENS)                         # silent pilots are lost after 3 s
    assert race([s], 4) == [201] * 3 + [403]
    s.wait_for(lambda: not alive(s), timeout=30)
    assert race([s], 8) == [201] * 3 + [403] * 5


def register_on_a_dying_server(s) -> None:
    try:
        s.call("POST", "/pilots", {"host": "doomed"}, token=LIMITED)
    except (OSError, http.client.HTTPException):
        pass                                                # the server died in the middle
    assert s.proc.wait(30) == 70


def test_a_server_killed_with_a_place_taken_gives_it_back(make_server):
    s = make_server(tokens=TOKENS)
    s.stop()
    s.extra_env = {"P3STEST_CRASH_AT": "pilot_admitted"}    # dies between taking a place and the pilot
    s.start(s.port)
    register_on_a_dying_server(s)
    s.stop()
    s.extra_env = {}
    s.start(s.port)

    def three_alive() -> bool:
        # One server (embedded store): nothing is in flight at its start, so the place is free at
        # once. A shared database: another server may be mid-registration, so after a grace.
        for p in alive(s):                                  # keep those registered alive meanwhile
            s.call("POST", f"/pilots/{p['uuid']}/events", {"event": "heartbeat"}, token=ADMIN)
        s.call("POST", "/pilots", {"host": "again"}, token=LIMITED)
        return len(alive(s)) == 3

    s.wait_for(three_alive, timeout=30, interval=0.5)
    assert s.call("POST", "/pilots", {"host": "fourth"}, token=LIMITED).status == 403


@pytest.mark.skipif(not TEST_DB, reason="several servers share only a MongoDB (P3S_TEST_DB)")
def test_racing_registrations_across_two_servers_admit_max_pilots(make_server):
    first = make_server(tokens=TOKENS, sync_period=0.5)
    second = make_server(tokens=TOKENS, sync_period=0.5, db=first.db)
    for _ in range(3):
        assert race([first, second], 24) == [201] * 3 + [403] * 21
        assert len(alive(first)) == 3
        for i, p in enumerate(alive(first)):              # each stopped through either server
            (first, second)[i % 2].ok("POST", f"/pilots/{p['uuid']}/events", {"event": "stopped"}, token=ADMIN)
        assert not alive(second)


@pytest.mark.skipif(not TEST_DB, reason="several servers share only a MongoDB (P3S_TEST_DB)")
def test_the_pilots_of_a_killed_server_give_their_places_back_when_lost(make_server):
    first = make_server(tokens=TOKENS, sync_period=0.5)
    second = make_server(tokens=TOKENS, sync_period=0.5, db=first.db)
    assert race([first], 3) == [201] * 3
    first.stop(signal.SIGKILL)
    assert second.call("POST", "/pilots", {"host": "x"}, token=LIMITED).status == 403
    second.wait_for(lambda: not alive(second), timeout=30)   # the survivor declares them lost
    assert race([second], 5) == [201] * 3 + [403] * 2


def test_live_pilots_registered_before_a_limit_count_against_it(make_server):
    import yaml

    unlimited = [dict(t, max_pilots=None) if t["role"] == "pilot" else t for t in TOKENS]
    s = make_server(tokens=unlimited, pilot_lost_timeout=600)
    assert race([s], 4) == [201] * 4
    s.stop()
    config = yaml.safe_load(s.config_path.read_text())
    config["tokens"] = TOKENS                              # now at most 3: the 4 live ones count
    s.config_path.write_text(yaml.safe_dump(config))
    s.start(s.port)
    assert race([s], 2) == [403] * 2
    for p in alive(s)[:2]:
        s.ok("POST", f"/pilots/{p['uuid']}/events", {"event": "stopped"}, token=ADMIN)
    assert race([s], 2) == [201] + [403]


@pytest.fixture
def db(tmp_path):
    from conftest import memory_database
    yield from memory_database(tmp_path)


def test_a_failed_registration_keeps_the_place_of_its_pilot_registered_elsewhere(db):
    # A registration's reply is lost and the pilot retries through another server: that one finds
    # the place held and registers the pilot; the first one's own insert then fails on the
    # duplicate. Giving the place back then would let one pilot too many in.
    from p3s import models
    from p3s.admission import PilotGate

    gate = PilotGate(models.Job._get_db(), ["cern-pilots"], grace=60)
    assert gate.take("cern-pilots", 3, "p1") is True          # the first server
    assert gate.take("cern-pilots", 3, "p1") is False         # the retry, on the second
    models.Pilot._get_collection().insert_one({"_id": "p1", "state": "idle", "registrar": "cern-pilots"})
    gate.give_back("p1")                                      # the first server's insert failed
    assert gate.held("cern-pilots") == 1
    models.Pilot._get_collection().update_one({"_id": "p1"}, {"$set": {"state": "stopped"}})
    assert gate.repair(grace=0) == ["p1"] and gate.held("cern-pilots") == 0
