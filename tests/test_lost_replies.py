"""An idempotent pilot protocol: a reply lost after the server applied the request (the proxy
drops it) is retried by the pilot, answered as success, and never stops a healthy payload."""
from __future__ import annotations

import json

import pytest

from dropproxy import DropProxy
from pilot_support import pilots  # noqa: F401  (fixture)


@pytest.fixture
def proxy(server):
    proxy = DropProxy(server.url)
    yield proxy
    proxy.close()


def event_is(name: str):
    return lambda method, path, body, reply: path.endswith("/events") and json.loads(body).get("event") == name


def offers_a_job(method, path, body, reply) -> bool:
    return path.endswith("/request") and json.loads(reply).get("job") is not None


def carries_a_report(method, path, body, reply) -> bool:
    return path.endswith("/request") and bool(json.loads(body or b"{}").get("report"))


def finished_once(server, job: dict) -> bool:
    doc = server.job(job["uuid"])
    return doc["state"] == "finished" and doc["attempts"] == 1


@pytest.mark.parametrize("rule", [event_is("jobstart"), event_is("heartbeat")], ids=["jobstart", "heartbeat"])
def test_lost_report_reply_does_not_stop_the_payload(server, proxy, pilots, rule):
    proxy.drop(rule, times=2)              # the client's immediate reconnect is dropped too
    job = server.submit({"payload": "sleep 4"})[0]
    pilot = pilots(server, "-b", "1", url=proxy.url)
    server.wait_for(lambda: finished_once(server, job), timeout=30)
    assert len(proxy.dropped) == 2
    assert pilot.proc.poll() is None, pilot.log()


def test_lost_offer_is_offered_again(server, proxy, pilots):
    proxy.drop(offers_a_job, times=2)
    job = server.submit({"payload": "true"})[0]
    pilot = pilots(server, url=proxy.url)
    server.wait_for(lambda: finished_once(server, job), timeout=30)
    assert len(proxy.dropped) == 2 and pilot.proc.poll() is None


def test_lost_reply_to_an_end_report_is_taken_as_applied(server, proxy, pilots):
    proxy.drop(carries_a_report, times=2)
    first, second = server.submit({"payload": "false", "max_attempts": 2, "priority": 1}, {"payload": "true"})
    pilot = pilots(server, url=proxy.url)
    server.wait_for(lambda: server.job(second["uuid"])["state"] == "finished", timeout=30)
    server.wait_for(lambda: server.job(first["uuid"])["state"] == "failed", timeout=30)
    assert server.job(first["uuid"])["attempts"] == 2          # each run reported exactly once
    assert "did not take the last report" not in pilot.log()
    assert len(proxy.dropped) == 2 and pilot.proc.poll() is None
