"""Users and ownership: a client changes only what it owns; reading stays open; secrets stay hidden."""
from __future__ import annotations

import json

import pytest

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
MALLORY = "mallory-token-01234567"
TOKENS = [{"token": ADMIN, "role": "admin", "name": "boss"},
          {"token": ALICE, "role": "client", "name": "alice"},
          {"token": MALLORY, "role": "client", "name": "mallory"}]
DAG = """
name: pair
jobs:
  a: {payload: "true"}
  b: {payload: "true"}
data:
  - {id: e, source: a, target: b, datatag: X, datatype: TXT}
"""


@pytest.fixture
def s(make_server):
    server = make_server(tokens=TOKENS)
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    return server


def test_a_client_changes_only_what_it_owns(s):
    jobs = s.ok("POST", "/jobs", [{"payload": "true", "user": "mallory"}, {"payload": "true"},
                                  {"payload": "true"}, {"payload": "true", "state": "template"}], 201,
                token=ALICE)["items"]
    assert {j["owner"] for j in jobs} == {"alice"}           # from the token, whatever "user" says
    s.ok("POST", "/templates", {"yaml": DAG}, 201, token=ALICE)
    held = s.ok("POST", "/workflows", {"template": "pair", "state": "template"}, 201, token=ALICE)
    running = s.ok("POST", "/workflows", {"template": "pair"}, 201, token=ALICE)
    data = s.ok("POST", "/data", {"name": "f.txt", "datatype": "TXT"}, 201, token=ALICE)["items"][0]
    assert held["owner"] == data["owner"] == "alice"
    attempts = [("PATCH", f"/jobs/{jobs[0]['uuid']}", {"priority": 9}),
                ("PATCH", f"/jobs/{jobs[3]['uuid']}", {"state": "defined"}),
                ("POST", f"/jobs/{jobs[1]['uuid']}/kill", None),
                ("DELETE", f"/jobs/{jobs[2]['uuid']}", None),
                ("POST", f"/workflows/{held['uuid']}/start", None),
                ("POST", f"/workflows/{running['uuid']}/cancel", None),
                ("DELETE", f"/workflows/{held['uuid']}", None),
                ("PATCH", f"/data/{data['uuid']}", {"comment": "mine now"}),
                ("DELETE", f"/data/{data['uuid']}", None)]
    for method, path, body in attempts:
        reply = s.call(method, path, body, token=MALLORY)
        assert reply.status == 403 and "belongs to alice" in reply.error["message"], (path, reply)
    # nothing changed
    assert [s.job(j["uuid"])["state"] for j in jobs] == ["defined", "defined", "defined", "template"]
    assert s.job(jobs[0]["uuid"])["priority"] == 0
    assert s.ok("GET", f"/workflows/{held['uuid']}", token=MALLORY)["state"] == "template"   # reading is open
    assert s.ok("GET", f"/data/{data['uuid']}", token=MALLORY)["comment"] == ""
    # the owner may, and so may an admin
    s.ok("PATCH", f"/jobs/{jobs[0]['uuid']}", {"priority": 9}, token=ALICE)
    s.ok("POST", f"/jobs/{jobs[1]['uuid']}/kill", status=202, token=ALICE)
    s.ok("DELETE", f"/jobs/{jobs[2]['uuid']}", token=ADMIN)
    s.ok("POST", f"/workflows/{held['uuid']}/start", token=ALICE)
    s.ok("POST", f"/workflows/{running['uuid']}/cancel", status=202, token=ADMIN)
    s.ok("PATCH", f"/data/{data['uuid']}", {"comment": "mine"}, token=ALICE)
    s.ok("DELETE", f"/data/{data['uuid']}", token=ALICE)


def test_secret_env_values_are_never_shown(s):
    job = s.ok("POST", "/jobs", {"payload": "true", "env": {"PASSWORD": "hunter2", "MODE": "fast"},
                                 "secret_env": ["PASSWORD"]}, 201, token=ALICE)["items"][0]
    assert job["env"] == {"PASSWORD": "<secret>", "MODE": "fast"}
    assert s.job(job["uuid"])["env"]["PASSWORD"] == "<secret>"
    listing = s.ok("GET", "/jobs", token=MALLORY)
    assert "hunter2" not in json.dumps(listing)
    # the pilot that runs it gets the value
    pilot = s.ok("POST", "/pilots", {"host": "wn01"}, 201, token=ADMIN)["pilot"]["uuid"]
    offer = s.ok("POST", f"/pilots/{pilot}/request", {"wait": 0}, token=ADMIN)
    assert offer["job"]["env"]["PASSWORD"] == "hunter2"
    other = s.ok("POST", "/jobs", {"payload": "true", "state": "template"}, 201, token=ALICE)["items"][0]
    patched = s.ok("PATCH", f"/jobs/{other['uuid']}", {"env": {"KEY": "s3cret"}, "secret_env": ["KEY"]}, token=ALICE)
    assert patched["env"] == {"KEY": "<secret>"} and "s3cret" not in json.dumps(s.ok("GET", "/jobs"))
    reply = s.call("POST", "/jobs", {"payload": "x", "secret_env": ["BAD NAME"]}, token=ALICE)
    assert reply.status == 422 and reply.error["field"] == "secret_env"


def test_secret_env_given_to_a_workflow_vertex_is_hidden_too(s):
    s.ok("POST", "/templates", {"yaml": DAG}, 201, token=ALICE)
    wf = s.ok("POST", "/workflows", {"template": "pair", "overrides": {
        "a": {"env": {"DB_PASSWORD": "hunter2"}, "secret_env": ["DB_PASSWORD"]}}}, 201, token=ALICE)
    job = s.ok("GET", f"/workflows/{wf['uuid']}")["jobs"]
    first = next(j for j in job if j["vertex"] == "a")
    assert s.job(first["uuid"])["env"]["DB_PASSWORD"] == "<secret>"
    assert "hunter2" not in json.dumps(s.ok("GET", "/jobs?limit=1000"))
