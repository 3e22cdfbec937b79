"""The server process: persistence across stops and crashes, the data-dir lock, OpenAPI."""
from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from conftest import TEST_DB


def test_clean_stop_and_restart_loses_nothing(server):
    jobs = server.submit(*({"payload": str(i), "priority": i % 3} for i in range(20)))
    pilot = server.register(site="s")
    first = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=first["uuid"], pid=99)
    server.ok("PUT", "/jobtypes/default", {"limit": 5})
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    assert server.ok("GET", "/jobs?limit=100")["total"] == 20
    assert server.job(first["uuid"])["state"] == "running"
    assert server.ok("GET", "/jobtypes/default")["limit"] == 5
    # the queue was rebuilt: the same pilot (still alive after a grace period) goes on
    server.report(pilot, "jobstop", job=first["uuid"], exit_code=0)
    second = server.claim(pilot)["job"]
    assert second["uuid"] != first["uuid"] and second["priority"] == 2
    assert len({j["uuid"] for j in jobs}) == 20


@pytest.mark.skipif(bool(TEST_DB), reason="the embedded store's crash behaviour")
def test_kill_9_keeps_what_was_acknowledged(server):
    jobs = server.submit(*({"payload": str(i)} for i in range(50)))
    pilot = server.register()
    claimed = server.claim(pilot)["job"]
    server.stop(signal.SIGKILL)
    server.start()
    assert server.ok("GET", "/jobs?limit=100")["total"] == 50
    assert server.job(claimed["uuid"])["state"] == "dispatched"
    assert server.ok("GET", "/summary")["jobs"]["defined"] == 49
    assert {j["uuid"] for j in jobs} == {j["uuid"] for j in server.ok("GET", "/jobs?limit=100")["items"]}


@pytest.mark.skipif(bool(TEST_DB), reason="the lock guards the embedded store")
def test_second_server_on_the_same_data_dir_is_refused(server):
    result = subprocess.run([sys.executable, "-m", "p3s.cli.server", "--config", str(server.config_path),
                             "--port", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "in use by another p3s-server" in result.stderr and str(server.proc.pid) in result.stderr
    assert server.call("GET", "/status").status == 200


def test_server_restart_gives_live_pilots_a_grace_period(server):
    pilot = server.register()
    server.stop()
    import time
    time.sleep(4)                    # longer than pilot_lost_timeout (3 s in tests) while down
    server.start()
    time.sleep(1.5)                  # a reaper round or more
    assert server.ok("GET", f"/pilots/{pilot}")["state"] == "idle"
    assert server.report(pilot, "heartbeat").status == 200


def test_openapi_document_is_valid_and_matches_the_routes(server):
    from openapi_spec_validator import validate

    spec = server.ok("GET", "/openapi.json", token="")
    validate(spec)
    from p3s.server.handlers import ROUTES
    from p3s.server.admin import ROUTES as ADMIN_ROUTES
    from p3s.web.api import ROUTES as WEB_ROUTES
    from p3s.web.control import ROUTES as CONTROL_ROUTES
    from p3s.web.loginlink import ROUTES as LINK_ROUTES
    from p3s.web.results import ROUTES as RESULT_ROUTES
    routes = ROUTES + WEB_ROUTES + ADMIN_ROUTES + CONTROL_ROUTES + LINK_ROUTES + RESULT_ROUTES
    assert set(spec["paths"]) == {"/api/v1" + path for path, _ in routes}
    for path, item in spec["paths"].items():
        for method in item:
            if method == "parameters" or path.endswith("/stream"):     # the live stream never ends
                continue
            concrete = re.sub(r"\{\w+\}", "00000000-0000-0000-0000-000000000000", path)
            body = b"{}" if method in ("post", "put", "patch") else None
            reply = server.call(method.upper(), concrete[len("/api/v1"):], raw=body)
            # every documented operation is routed and answers with a documented status
            assert str(reply.status) in item[method]["responses"], (method, path, reply)
            assert reply.status != 405
            if reply.status == 404:
                assert "no such API route" not in reply.error["message"], (method, path)
    methods = {m for item in spec["paths"].values() for m in item}
    assert {"get", "post", "patch", "put", "delete"} <= methods


def test_unknown_database_uri_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "p3s.cli.server", "--data-dir", str(tmp_path),
                             "--db", "postgres://x", "--port", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unsupported database URI" in result.stderr


@pytest.mark.skipif(not TEST_DB, reason="two server processes share only a MongoDB (set P3S_TEST_DB)")
def test_two_servers_on_one_mongodb_never_hand_out_a_job_twice(make_server):
    import concurrent.futures

    # Registering 200 pilots one after another takes seconds: a lost timeout of minutes keeps the
    # first ones alive until they claim (this test is about claims, not about reaping).
    first = make_server(auth=False, pilot_lost_timeout=120, sync_period=0.5)
    second = make_server(auth=False, db=first.db, pilot_lost_timeout=120, sync_period=0.5)
    first.submit(*({"payload": str(i)} for i in range(100)))
    second.wait_for(lambda: second.ok("GET", "/summary")["queue"]["ready"] == 100)   # its re-sync saw them
    servers = [first, second]
    pilots = [(servers[i % 2], servers[i % 2].register(host=f"h{i}")) for i in range(200)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(lambda sp: sp[0].claim(sp[1])["job"], pilots))
    handed = [r["uuid"] for r in results if r]
    assert len(handed) == len(set(handed)) == 100
    assert any(r for r, (s, _) in zip(results, pilots) if s is second)   # both servers handed jobs out
