"""A pilot is only itself: per-pilot credentials, bootstrap tokens and their limits.

Each test replays an attack of issue 10 with the tokens a pilot legitimately holds."""
from __future__ import annotations

import hashlib
import uuid as _uuid

import pytest

ADMIN = "admin-token-0123456789"
CLIENT = "client-token-0123456789"
BOOT = "pilot-token-01234567890"
LIMITED = "pilot-token-limited-0123"
TOKENS = [{"token": ADMIN, "role": "admin", "name": "boss"},
          {"token": CLIENT, "role": "client", "name": "shifter"},
          {"token": BOOT, "role": "pilot", "name": "pilots"},
          {"token": LIMITED, "role": "pilot", "name": "cern-pilots", "site": "cern", "max_pilots": 5}]


@pytest.fixture
def s(make_server):
    return make_server(tokens=TOKENS)


def register(server, token: str = BOOT, **fields) -> tuple[str, str]:
    reply = server.ok("POST", "/pilots", {"host": "wn01", **fields}, 201, token=token)
    return reply["pilot"]["uuid"], reply["credential"]


def test_a_second_pilot_cannot_act_for_another(s):
    job = s.ok("POST", "/jobs", {"payload": "true"}, 201, token=CLIENT)["items"][0]["uuid"]
    victim, victim_cred = register(s)
    attacker, attacker_cred = register(s, host="wn02")
    assert victim_cred != attacker_cred
    # the attacker's credential (or the shared bootstrap token) cannot take the victim's work ...
    for token in (attacker_cred, BOOT):
        reply = s.call("POST", f"/pilots/{victim}/request", {"wait": 0}, token=token)
        assert reply.status == 403, reply
    offer = s.ok("POST", f"/pilots/{victim}/request", {"wait": 0}, token=victim_cred)
    assert offer["job"]["uuid"] == job
    # ... report the victim's job finished with forged output ...
    forged = {"event": "jobstop", "job": job, "exit_code": 0, "stdout_tail": "forged"}
    assert s.call("POST", f"/pilots/{victim}/events", forged, token=attacker_cred).status == 403
    assert s.call("POST", f"/pilots/{attacker}/events", forged, token=attacker_cred).status == 409
    assert s.call("POST", f"/pilots/{attacker}/request", {"wait": 0, "report": forged},
                  token=attacker_cred).body.get("report_refused")
    assert s.job(job)["state"] == "dispatched" and s.job(job)["stdout_tail"] is None
    # ... re-register the victim's uuid ...
    for token in (BOOT, ADMIN):
        reply = s.call("POST", "/pilots", {"host": "evil", "uuid": victim}, token=token)
        assert reply.status == 409 and reply.error["field"] == "uuid", reply
    reply = s.call("POST", "/pilots", {"host": "evil", "uuid": victim, "key": "k" * 40}, token=BOOT)
    assert reply.status == 409
    # ... or stop it.
    assert s.call("POST", f"/pilots/{victim}/events", {"event": "stopped"}, token=attacker_cred).status == 403
    assert s.call("POST", f"/pilots/{victim}/kill", token=attacker_cred).status == 403
    assert s.ok("GET", f"/pilots/{victim}")["state"] == "running"
    # the victim itself goes on normally
    s.ok("POST", f"/pilots/{victim}/events", {"event": "jobstop", "job": job, "exit_code": 0}, token=victim_cred)
    assert s.job(job)["state"] == "finished"


def test_a_pilot_credential_is_not_a_client(s):
    pilot, cred = register(s)
    for method, path, body in (("GET", "/jobs", None), ("POST", "/jobs", {"payload": "true"}),
                               ("GET", f"/pilots/{pilot}", None), ("GET", "/events", None),
                               ("POST", "/pilots", {"host": "x"}), ("POST", "/pilots/kill", {"host": "wn01"})):
        reply = s.call(method, path, body, token=cred)
        assert reply.status == 403 and "role agent" in reply.error["message"], (path, reply)
    assert s.ok("GET", "/whoami", token=cred)["role"] == "agent"
    s.ok("POST", "/sites", {"name": "other", "env": {"SITE_SECRET": "x"}}, 201, token=ADMIN)
    assert s.call("GET", "/sites/other", token=cred).status == 403           # not its pilot's site
    assert s.call("GET", "/jobs", token=BOOT).status == 403          # nor is the bootstrap token


def test_one_bootstrap_token_cannot_register_fifty_pilots(s):
    s.ok("POST", "/sites", {"name": "cern"}, 201, token=ADMIN)
    s.ok("POST", "/sites", {"name": "fnal"}, 201, token=ADMIN)
    s.submit(*({"payload": "true"} for _ in range(40)))
    statuses = [s.call("POST", "/pilots", {"host": f"fake{i}"}, token=LIMITED).status for i in range(50)]
    assert statuses == [201] * 5 + [403] * 45
    pilots = s.ok("GET", "/pilots?limit=1000")["items"]
    assert len(pilots) == 5 and {p["site"] for p in pilots} == {"cern"}     # bound to the token's site
    reply = s.call("POST", "/pilots", {"host": "x", "site": "fnal"}, token=BOOT.replace("pilot", "x"))
    assert reply.status == 401
    # limited to its site: neither registering elsewhere nor reading another site's settings
    s.ok("POST", f"/pilots/{pilots[0]['uuid']}/events", {"event": "stopped"}, token=ADMIN)
    reply = s.call("POST", "/pilots", {"host": "x", "site": "fnal"}, token=LIMITED)
    assert reply.status == 403 and reply.error["field"] == "site"
    assert s.call("GET", "/sites/fnal", token=LIMITED).status == 403
    assert s.call("GET", "/sites/cern", token=LIMITED).status == 200
    # a stopped pilot frees a place
    register(s, token=LIMITED, host="again")
    assert s.call("POST", "/pilots", {"host": "x"}, token=LIMITED).status == 403


def test_a_retried_registration_with_its_key_is_the_same_pilot(s):
    uuid, key = str(_uuid.uuid4()), "a" * 64
    first = s.ok("POST", "/pilots", {"host": "wn01", "uuid": uuid, "key": key}, 201, token=BOOT)
    assert first["credential"] == key
    again = s.ok("POST", "/pilots", {"host": "wn01", "uuid": uuid, "key": key}, 201, token=BOOT)
    assert again["pilot"]["uuid"] == uuid and s.ok("GET", "/pilots")["total"] == 1
    assert s.call("POST", "/pilots", {"host": "wn01", "key": "short"}, token=BOOT).status == 422
    reply = s.call("POST", "/pilots", {"host": "wn01", "key": key}, token=BOOT)     # someone else's key
    assert reply.status == 409 and reply.error["field"] == "key"


def test_credentials_are_stored_hashed_and_revoked_with_the_pilot(s):
    pilot, cred = register(s)
    s.ok("POST", f"/pilots/{pilot}/events", {"event": "heartbeat"}, token=cred)
    s.ok("POST", f"/pilots/{pilot}/events", {"event": "stopped"}, token=cred)
    s.stop()                       # flushes the store
    if s.db:                       # MongoDB: every stored document, as BSON
        import bson
        import pymongo

        client = pymongo.MongoClient(s.db)
        database = client.get_default_database()
        stored = b"".join(bson.encode(d) for name in database.list_collection_names() for d in database[name].find())
        client.close()
    else:
        stored = b"".join(p.read_bytes() for p in (s.data_dir / "db").rglob("*") if p.is_file())
    assert cred.encode() not in stored and BOOT.encode() not in stored
    assert hashlib.sha256(cred.encode()).hexdigest().encode() in stored
    s.start()
    reply = s.call("POST", f"/pilots/{pilot}/request", {"wait": 0}, token=cred)     # stopped: revoked
    assert reply.status == 401 and "credential is revoked" in reply.error["message"], reply
    s.ok("DELETE", f"/pilots/{pilot}", token=ADMIN)
    assert s.call("POST", f"/pilots/{pilot}/request", {"wait": 0}, token=cred).status == 401


def test_configured_tokens_may_be_given_as_digests(make_server):
    digest = hashlib.sha256(b"hashed-client-token-0123").hexdigest()
    server = make_server(tokens=[{"token_sha256": digest, "role": "client", "name": "h"},
                                 {"token": ADMIN, "role": "admin", "name": "boss"}])
    assert server.ok("GET", "/whoami", token="hashed-client-token-0123")["name"] == "h"
    assert server.call("GET", "/jobs", token=digest).status == 401
