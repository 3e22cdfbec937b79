"""Alarms a shifter can trust: each rule fires when it should, says since when, and can be acknowledged."""
from __future__ import annotations

import signal


def alarms(server) -> dict[str, dict]:
    return {a["key"]: a for a in server.ok("GET", "/alarms")["items"]}


def run_one(server, pilot: str, exit_code: int) -> str:
    job = server.claim(pilot)["job"]
    assert job is not None
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    assert server.report(pilot, "jobstop", job=job["uuid"], exit_code=exit_code).status == 200
    return job["uuid"]


def test_a_type_failing_since_it_appeared_fires(make_server):
    # The issue: 8 of 8 failed and the alarm said ok, because its 10-minute rate had to exceed its 24-hour rate.
    server = make_server(blackhole_jobs=0)
    server.submit(*[{"payload": "false", "jobtype": "reco", "name": f"r{i}"} for i in range(8)])
    pilot = server.register(host="wn01")
    for _ in range(8):
        run_one(server, pilot, 1)
    alarm = alarms(server)["failure_rate:reco"]
    assert alarm["status"] == "alarm" and alarm["value"] == 1.0, alarm
    assert alarm["since"].endswith("Z") and "10 min" in alarm["checks"]
    assert "8 of 8" in alarm["message"]
    listing = server.ok("GET", "/alarms")
    assert listing["firing"] >= 1 and listing["items"][0]["status"] == "alarm"     # firing first


def test_a_few_failures_below_the_minimum_do_not_fire(make_server):
    server = make_server(blackhole_jobs=0, alarm_failure_min=5)
    server.submit(*[{"payload": "false", "jobtype": "reco"} for _ in range(3)])
    pilot = server.register(host="wn01")
    for _ in range(3):
        run_one(server, pilot, 1)
    assert alarms(server)["failure_rate:reco"]["status"] == "ok"


def test_a_lost_pilot_counts_once_by_site_and_is_no_job_type(make_server):
    server = make_server(alarm_lost_pilots=0)
    server.submit({"payload": "sleep 100", "jobtype": "reco"})
    pilot = server.register(host="wn02", site="np04")
    job = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    server.wait_for(lambda: server.job(job["uuid"])["state"] == "pilot_lost", timeout=15)
    found = server.wait_for(lambda: alarms(server).get("lost_pilots:np04"))
    assert found["value"] == 1 and found["status"] == "alarm", found
    assert "failure_rate:np04" not in alarms(server)
    stats = server.ok("GET", "/stats")
    assert "np04" not in stats["windows"]["1h"]["by_type"]
    assert stats["windows"]["1h"]["by_type"]["reco"]["pilot_lost"] == 1
    server.restart()                                     # counted once after a restart too
    assert alarms(server)["lost_pilots:np04"]["value"] == 1


def test_no_live_pilot_while_jobs_wait_fires_with_no_site_configured(server):
    assert alarms(server)["no_pilots"]["status"] == "ok"           # nothing waits
    server.submit({"payload": "x"})
    alarm = alarms(server)["no_pilots"]
    assert alarm["status"] == "alarm" and "1 job(s) waiting" in alarm["message"]
    server.register(host="wn01")
    assert alarms(server)["no_pilots"]["status"] == "ok"
    kinds = [e["kind"] for e in server.ok("GET", "/events?limit=1000")["items"]]
    assert "alarm.firing" in kinds and "alarm.cleared" in kinds


def test_no_live_pilot_fires_with_sites_configured(server):
    server.ok("POST", "/sites", {"name": "np04", "pilots": 0}, 201)
    server.submit({"payload": "x"})
    assert alarms(server)["no_pilots"]["status"] == "alarm"


def test_black_hole_host_is_flagged_alarmed_drained_and_cleared(make_server):
    server = make_server(blackhole_jobs=3)
    server.submit(*[{"payload": "false", "name": f"j{i}"} for i in range(5)])
    bad = server.register(host="wn13")
    for _ in range(2):
        run_one(server, bad, 1)
    assert "blackhole:wn13" not in alarms(server)
    run_one(server, bad, 1)                                  # the third in a row
    alarm = alarms(server)["blackhole:wn13"]
    assert alarm["status"] == "alarm" and "drained" in alarm["message"]
    hosts = {h["host"]: h for h in server.ok("GET", "/hosts")["items"]}
    assert hosts["wn13"]["flagged"] and hosts["wn13"]["drained"] and hosts["wn13"]["streak"] == 3
    assert server.claim(bad)["job"] is None                  # drained: no new work for its pilots
    good = server.register(host="wn14")
    assert server.claim(good)["job"] is not None             # the work goes elsewhere
    server.restart()                                         # the flag and the drain survive a restart
    assert alarms(server)["blackhole:wn13"]["status"] == "alarm"
    bad = server.register(host="wn13")
    assert server.claim(bad)["job"] is None
    assert server.call("POST", "/hosts/wn13/clear", {}).status == 200
    assert "blackhole:wn13" not in alarms(server)
    assert server.claim(bad)["job"] is not None              # cleared: it gets work again
    assert server.call("POST", "/hosts/wn99/clear", {}).status == 404
    kinds = [e["kind"] for e in server.ok("GET", "/events?limit=1000")["items"]]
    assert "host.blackhole" in kinds and "host.clear" in kinds


def test_a_success_breaks_the_run_and_drain_is_configurable(make_server):
    server = make_server(blackhole_jobs=2, blackhole_drain=False)
    server.submit(*[{"payload": "x"} for _ in range(5)])
    pilot = server.register(host="wn05")
    run_one(server, pilot, 1)
    run_one(server, pilot, 0)
    run_one(server, pilot, 1)
    assert "blackhole:wn05" not in alarms(server)
    run_one(server, pilot, 1)
    hosts = {h["host"]: h for h in server.ok("GET", "/hosts")["items"]}
    assert hosts["wn05"]["flagged"] and not hosts["wn05"]["drained"]
    run_one(server, pilot, 0)                                # flagged, not drained: still gets work
    server.ok("POST", "/hosts/wn05/drain", {"reason": "disk full"})
    assert server.claim(pilot)["job"] is None
    assert {h["host"]: h for h in server.ok("GET", "/hosts")["items"]}["wn05"]["by"] == "admin"


def test_since_and_acknowledgement_survive_a_restart(make_server):
    tokens = [{"token": "admin-token-0123456789", "role": "admin", "name": "boss"},
              {"token": "client-token-0123456789", "role": "client", "name": "shifter"}]
    server = make_server(tokens=tokens)
    server.submit({"payload": "x"})
    first = alarms(server)["no_pilots"]
    assert first["status"] == "alarm" and first["since"] and first["ack"] is None
    refused = server.call("POST", "/alarms/ack", {"alarm": "no_pilots", "reason": " "}, token="client-token-0123456789")
    assert refused.status == 422 and refused.error["field"] == "reason"
    assert server.call("POST", "/alarms/ack", {"alarm": "nonsense", "reason": "x"}).status == 404
    acked = server.ok("POST", "/alarms/ack", {"alarm": "no_pilots", "reason": "pilots start at 10:00",
                                              "minutes": 30}, token="client-token-0123456789")
    assert acked["silenced"] and acked["ack"]["by"] == "shifter" and acked["ack"]["until"].endswith("Z")
    listing = server.ok("GET", "/alarms")
    assert listing["silenced"] == 1 and all(a["key"] != "no_pilots" or a["silenced"] for a in listing["items"])
    server.restart()
    again = alarms(server)["no_pilots"]
    assert again["since"] == first["since"]                          # since-when survives
    assert again["ack"]["reason"] == "pilots start at 10:00" and again["silenced"]
    server.ok("POST", "/alarms/unack", {"alarm": "no_pilots"})
    assert not alarms(server)["no_pilots"]["silenced"]


def test_failures_just_before_a_kill_survive_it(make_server):
    # The issue: kept statistics lost their last seconds (up to a save period) to a kill -9, and the
    # failure-rate alarm of those seconds with them.
    server = make_server(blackhole_jobs=0)
    server.submit(*[{"payload": "false", "jobtype": "reco"} for _ in range(6)])
    pilot = server.register(host="wn01")
    for _ in range(6):
        run_one(server, pilot, 1)
    server.restart(signal.SIGKILL)                       # well within the 10 s between saves
    assert "statistics: kept, and counted since the last save" in server.log_path.read_text()
    alarm = alarms(server)["failure_rate:reco"]
    assert alarm["status"] == "alarm" and "6 of 6" in alarm["message"], alarm
    counts = server.ok("GET", "/stats")["windows"]["10m"]["by_type"]["reco"]
    assert (counts["defined"], counts["started"], counts["failed"]) == (6, 6, 6), counts
    server.restart()                                     # what was recounted is kept, and counted once
    counts = server.ok("GET", "/stats")["windows"]["10m"]["by_type"]["reco"]
    assert (counts["defined"], counts["started"], counts["failed"]) == (6, 6, 6), counts
