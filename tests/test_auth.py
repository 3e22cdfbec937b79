"""Bearer tokens and roles."""
from __future__ import annotations

import stat


def test_generated_token_is_private_and_required(server):
    token_file = server.data_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    reply = server.call("GET", "/jobs", token="")
    assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.error["status"] == 401
    assert server.call("GET", "/jobs", token="wrong-token-wrong-token").status == 401
    assert server.call("GET", "/status", token="").status == 200           # liveness needs no token
    assert server.call("GET", "/openapi.json", token="").status == 200


def test_token_survives_restart(server):
    before = server.token
    server.restart()
    assert server.token == before
    assert server.call("GET", "/jobs").status == 200


def test_roles(make_server):
    tokens = [{"token": "admin-token-0123456789", "role": "admin", "name": "boss"},
              {"token": "client-token-0123456789", "role": "client", "name": "shifter"},
              {"token": "pilot-token-01234567890", "role": "pilot", "name": "pilots"}]
    server = make_server(tokens=tokens)
    assert not (server.data_dir / "token").exists()                 # configured tokens: none generated
    admin, client, pilot = (t["token"] for t in tokens)
    job = server.ok("POST", "/jobs", {"payload": "x"}, 201, token=client)["items"][0]
    assert job["user"] == "shifter"                                  # submitter from the token's name
    assert server.call("GET", f"/jobs/{job['uuid']}", token=client).status == 200
    others = server.ok("POST", "/jobs", {"payload": "x"}, 201, token=admin)["items"][0]["uuid"]
    assert server.call("DELETE", f"/jobs/{others}", token=client).status == 403      # not its own
    assert server.call("PATCH", f"/jobs/{others}", {"priority": 3}, token=client).status == 403
    assert server.call("PATCH", f"/jobs/{job['uuid']}", {"priority": 3}, token=client).status == 200
    assert server.call("POST", "/pilots", {"host": "h"}, token=client).status == 403
    assert server.call("GET", "/jobs", token=pilot).status == 403
    registered = server.ok("POST", "/pilots", {"host": "h", "site": "s"}, 201, token=pilot)
    uuid, own = registered["pilot"]["uuid"], registered["credential"]
    assert server.call("POST", f"/pilots/{uuid}/request", {"wait": 0}, token=pilot).status == 403
    assert server.call("POST", f"/pilots/{uuid}/request", {"wait": 0}, token=own).body["job"]["uuid"] == job["uuid"]
    assert server.call("POST", "/pilots/kill", {"uuid": uuid}, token=pilot).status == 403
    assert server.call("POST", "/sites", {"name": "s"}, token=admin).status == 201
    assert server.call("GET", "/sites/s", token=pilot).status == 200   # pilots bootstrap from their site
    reply = server.call("DELETE", f"/pilots/{uuid}", token=client)
    assert reply.status == 403 and "role client" in reply.error["message"]


def test_no_auth_must_be_explicit(make_server):
    server = make_server(auth=False)
    assert server.call("GET", "/jobs", token="").status == 200
    assert not (server.data_dir / "token").exists()
    assert server.ok("GET", "/status", token="")["auth"] is False
