"""A pilot's credential stops authenticating once its pilot has stopped or been declared lost.

The credential is good only while its pilot's record is alive, so the write that ends the pilot
revokes it; these tests replay the ends (its own stop, the reaper, a kill -9 right after the
write) and a real pilot process that comes back after it was declared lost."""
from __future__ import annotations

import signal

import psutil
import pytest

from pilot_support import pilot_starter

ADMIN = "admin-token-0123456789"
BOOT = "pilot-token-01234567890"
TOKENS = [{"token": ADMIN, "role": "admin", "name": "boss"},
          {"token": BOOT, "role": "pilot", "name": "pilots"}]


def register(server, **fields) -> tuple[str, str]:
    reply = server.ok("POST", "/pilots", {"host": "wn01", "site": "cern", **fields}, 201, token=BOOT)
    return reply["pilot"]["uuid"], reply["credential"]


def revoked(reply, pilot: str, why: str) -> bool:
    """The API's one error shape, 401, naming the pilot and why its credential no longer works."""
    message = reply.error["message"] if isinstance(reply.body, dict) else ""
    return (reply.status == 401 and reply.error["field"] == "pilot" and f"pilot {pilot} {why}" in message
            and "credential is revoked" in message)


def test_a_stopped_pilots_credential_authenticates_nothing(make_server):
    s = make_server(tokens=TOKENS)
    s.ok("POST", "/sites", {"name": "cern"}, 201, token=ADMIN)
    pilot, cred = register(s)
    assert s.call("GET", "/sites/cern", token=cred).status == 200
    s.ok("POST", f"/pilots/{pilot}/events", {"event": "stopped", "message": "cycles done"}, token=cred)
    for method, path, body in (("POST", f"/pilots/{pilot}/request", {"wait": 0}),
                               ("POST", f"/pilots/{pilot}/events", {"event": "heartbeat"}),
                               ("POST", f"/pilots/{pilot}/events", {"event": "stopped"}),
                               ("GET", "/sites/cern", None), ("GET", "/whoami", None)):
        reply = s.call(method, path, body, token=cred)
        assert revoked(reply, pilot, "stopped (cycles done)"), (path, reply)
    # an admin acting on the stopped pilot still gets the state conflict
    assert s.call("POST", f"/pilots/{pilot}/request", {"wait": 0}, token=ADMIN).status == 409


def test_a_lost_pilots_credential_is_revoked_and_its_key_cannot_bring_it_back(make_server):
    s = make_server(tokens=TOKENS)
    key = "k" * 64
    pilot, cred = register(s, key=key)
    assert cred == key
    # a retried registration with the same key, while the pilot lives, is the same pilot
    assert s.ok("POST", "/pilots", {"host": "wn01", "uuid": pilot, "key": key}, 201, token=BOOT)["credential"] == key
    s.wait_for(lambda: s.ok("GET", f"/pilots/{pilot}", token=ADMIN)["state"] == "lost", timeout=20)
    reply = s.call("POST", f"/pilots/{pilot}/events", {"event": "heartbeat"}, token=cred)
    assert revoked(reply, pilot, "was declared lost (no contact for 3 s)"), reply
    # coming back from a partition it cannot register the same uuid again, key or not
    reply = s.call("POST", "/pilots", {"host": "wn01", "uuid": pilot, "key": key}, token=BOOT)
    assert reply.status == 409 and reply.error["field"] == "uuid", reply
    # the bootstrap token still registers a new pilot, whose credential works
    fresh, fresh_cred = register(s)
    assert s.call("POST", f"/pilots/{fresh}/events", {"event": "heartbeat"}, token=fresh_cred).status == 200


def test_the_write_that_ends_the_pilot_revokes_it_even_if_the_server_dies_right_after(make_server):
    s = make_server(tokens=TOKENS)
    pilot, cred = register(s)
    s.stop()
    s.extra_env = {"P3STEST_CRASH_AT": "pilot_lost"}    # exit as kill -9 would, right after the write
    s.start(s.port)
    s.wait_for(lambda: s.proc.poll() is not None, timeout=30)
    s.proc.wait()
    s.stop()
    s.extra_env = {}
    s.start(s.port)
    assert s.ok("GET", f"/pilots/{pilot}", token=ADMIN)["state"] == "lost"
    reply = s.call("POST", f"/pilots/{pilot}/request", {"wait": 0}, token=cred)
    assert revoked(reply, pilot, "was declared lost"), reply


@pytest.mark.server_settings(tokens=TOKENS)
def test_a_real_pilot_back_from_a_partition_stops_saying_why(server, tmp_path):
    server.token = BOOT           # the pilot bootstraps with the pilot token
    job = server.ok("POST", "/jobs", {"payload": "sleep 600"}, 201, token=ADMIN)["items"][0]
    with pilot_starter(tmp_path, defaults=("-c", "0", "-p", "1", "--beat", "1")) as start:
        pilot = start(server)
        server.wait_for(lambda: server.ok("GET", f"/jobs/{job['uuid']}", token=ADMIN)["state"] == "running",
                        timeout=30)
        payload = server.ok("GET", f"/jobs/{job['uuid']}", token=ADMIN)["pid"]
        pilot.proc.send_signal(signal.SIGSTOP)        # out of reach: the server hears nothing from it
        try:
            server.wait_for(lambda: server.ok("GET", f"/jobs/{job['uuid']}", token=ADMIN)["state"] == "pilot_lost",
                            timeout=30)
        finally:
            pilot.proc.send_signal(signal.SIGCONT)    # back: its next heartbeat is refused
        assert pilot.wait(60) == 5
        log = pilot.log()
        assert "no longer accepts this pilot's credential" in log and "was declared lost" in log, log
        assert "credential is revoked" in log, log
        assert not psutil.pid_exists(payload) or psutil.Process(payload).status() == psutil.STATUS_ZOMBIE
