"""Every input bounded: what MongoDB or the server cannot hold is refused with a 4xx naming the
field, and nothing of it is stored."""
from __future__ import annotations

import pytest

BIG = "9223372036854775808"          # 2**63


def post_raw(server, path: str, text: str):
    return server.call("POST", path, raw=text.encode())


@pytest.mark.parametrize("text, field", [
    ('{"payload": "x", "priority": ' + BIG + '}', "priority"),
    ('{"payload": "x", "priority": 1e308}', "priority"),
    ('{"payload": "x", "timelimit": 1000000000000}', "timelimit"),
    ('{"payload": "x", "name": "\\ud800"}', "name"),
    ('{"payload": "x\\u0000y"}', "payload"),
    ('{"payload": "x", "env": {"A": "\\udfff"}}', "env.A"),
    ('{"payload": "x", "max_attempts": 100000}', "max_attempts"),
])
def test_bad_job_fields_are_422_and_nothing_is_stored(server, text, field):
    reply = post_raw(server, "/jobs", text)
    assert reply.status == 422, reply
    assert reply.error["field"] == field
    assert server.ok("GET", "/jobs")["total"] == 0


@pytest.mark.parametrize("metadata, field", [
    ('{"a\\u0000b": 1}', "metadata.a\x00b"),
    ('{"$set": 1}', "metadata.$set"),
    ('{"a.b": 1}', "metadata.a.b"),
    ('{"n": ' + BIG + '}', "metadata.n"),
    ("[" * 1 + "]", "metadata"),
])
def test_metadata_keys_and_values_are_what_mongodb_takes(server, metadata, field):
    reply = post_raw(server, "/data", '{"name": "f.txt", "metadata": ' + metadata + '}')
    assert reply.status == 422, reply
    assert reply.error["field"] == field
    assert server.ok("GET", "/data")["total"] == 0


def test_deep_nesting_is_refused(server):
    deep = '{"a": ' * 491 + "1" + "}" * 491
    reply = post_raw(server, "/data", '{"name": "f", "metadata": ' + deep + '}')
    assert reply.status == 422 and "nested" in reply.error["message"]
    deeper = "[" * 100000 + "]" * 100000
    assert post_raw(server, "/data", deeper).status == 400
    assert server.ok("GET", "/data")["total"] == 0


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(server, constant):
    reply = post_raw(server, "/events", '{"kind": "note", "data": {"x": ' + constant + '}}')
    assert reply.status == 400 and constant.lstrip("-") in reply.error["message"]
    reply = post_raw(server, "/jobs", '{"payload": "x", "priority": ' + constant + '}')
    assert reply.status == 400
    assert all(e["kind"] != "note" for e in server.ok("GET", "/events?limit=1000")["items"])


def test_usage_numbers_beyond_64_bits_are_refused(server):
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstart", job=job["uuid"], pid=7)
    reply = server.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 2 ** 64})
    assert reply.status == 422 and reply.error["field"] == "usage.rss"
    reply = server.report(pilot, "heartbeat", job=job["uuid"], ts=1e300, usage={})
    assert reply.status == 422 and reply.error["field"] == "ts"
    assert server.report(pilot, "heartbeat", job=job["uuid"], usage={"rss": 2 ** 40}).status == 200
    assert server.job(job["uuid"])["usage"]["rss"] == 2 ** 40


def test_max_timelimit_is_a_setting(make_server):
    server = make_server(max_timelimit=100)
    assert server.call("POST", "/jobs", {"payload": "x", "timelimit": 101}).status == 422
    assert server.call("POST", "/jobs", {"payload": "x", "timelimit": 100}).status == 201


def test_bad_text_is_found_whatever_the_escape(server):
    """The body's strings are only looked at when its JSON text holds an escape that can make a NUL
    or a lone surrogate: every such escape is still found."""
    for escape in ("\\u0000", "\\uD800", "\\udfff", "\\uDbFf"):
        raw = ('[{"payload": "x"}, {"payload": "x", "env": {"A": "a' + escape + '"}}]').encode()
        reply = server.call("POST", "/jobs", raw=raw)
        assert reply.status == 422 and reply.body["error"]["field"] == "[1].env.A", (escape, reply)
    reply = server.call("POST", "/jobs", raw=b'[{"payload": "x \\\\u0000 \\ud83d\\ude00"}]')
    assert reply.status == 201, reply                     # an escaped backslash; a surrogate pair
