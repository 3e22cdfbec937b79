"""The JSON API: creation, validation, filters, paging, adjustments, deletes; the error shape."""
from __future__ import annotations

import json

from conftest import SEED_EXAMPLE


def test_seed_example_is_accepted(server):
    reply = server.call("POST", "/jobs", raw=SEED_EXAMPLE.encode())
    assert reply.status == 201, reply
    job = reply.body["items"][0]
    assert (job["timelimit"], job["priority"], job["state"], job["jobtype"]) == (100, 1, "defined", "type1")
    assert job["env"] == {"P3S": "TRUE", "MYVAR": "FALSE"} and "timeout" not in job
    assert server.job(job["uuid"])["name"] == "p3s_job"


def test_defaults_and_single_object(server):
    job = server.ok("POST", "/jobs", {"payload": "/bin/true", "env": {"P3S_INPUT_FILE": "/data/run1.root"}},
                    201)["items"][0]
    assert job["timelimit"] == 1000 and job["max_attempts"] == 1 and job["jobtype"] == "default"
    assert job["input_file"] == "/data/run1.root" and job["ts_def"].endswith("Z")


def test_list_is_all_or_nothing(server):
    reply = server.call("POST", "/jobs", [{"payload": "ok"}, {"payload": "bad", "priority": "high"}])
    assert reply.status == 422
    assert reply.error == {"status": 422, "field": "[1].priority",
                           "message": "[1].priority: must be an integer, got 'high'"}
    assert server.ok("GET", "/jobs")["total"] == 0
    assert server.ok("GET", "/summary")["jobs_total"] == 0


def test_errors_have_one_shape(server):
    cases = [
        (server.call("POST", "/jobs", raw=b'[{"payload": "x",\n  "priority": }]'), 400, None, "line 2 column"),
        (server.call("POST", "/jobs", {"payload": "x", "colour": "red"}), 422, "colour", "unknown field"),
        (server.call("POST", "/jobs", {"name": "no payload"}), 422, "payload", "is required"),
        (server.call("POST", "/jobs", {"payload": "x", "timeout": 5, "timelimit": 6}), 422, "timelimit", "twice"),
        (server.call("POST", "/jobs", {"payload": "x", "env": {"1BAD": "v"}}), 422, "env.1BAD", "environment"),
        (server.call("POST", "/jobs", {"payload": "x", "timelimit": 0}), 422, "timelimit", "at least 1"),
        (server.call("POST", "/jobs", {"payload": "x", "state": "running"}), 422, "state", "must be one of"),
        (server.call("POST", "/jobs", []), 422, "body", "empty"),
        (server.call("POST", "/jobs", "just a string"), 422, "body", "JSON object"),
        (server.call("GET", "/jobs/0000"), 404, None, "no job"),
        (server.call("GET", "/nothing/here"), 404, None, "no such API route"),
        (server.call("PUT", "/jobs"), 405, None, "not allowed"),
        (server.call("GET", "/jobs?state=sleeping"), 422, "state", "unknown state"),
        (server.call("GET", "/jobs?limit=5000"), 422, "limit", "between"),
        (server.call("GET", "/jobs?sort=payload"), 422, "sort", "cannot sort"),
    ]
    for reply, status, field, text in cases:
        assert reply.status == status, reply
        assert set(reply.body) == {"error"} and reply.error["status"] == status, reply
        assert reply.error["field"] == field, reply
        assert text in reply.error["message"], reply


def test_body_over_the_limit_is_413_and_nothing_is_written(make_server):
    server = make_server(max_body_size=2000)
    big = [{"payload": "x" * 100} for _ in range(50)]
    reply = server.call("POST", "/jobs", big)
    assert reply.status == 413 and "limit of 2000 bytes" in reply.error["message"]
    assert server.ok("GET", "/jobs")["total"] == 0


def test_filters_and_paging(server):
    server.submit(*({"payload": f"p{i}", "name": f"run{i:02d}", "jobtype": "a" if i % 2 else "b",
                     "user": "ann" if i < 5 else "bob", "site": "cern" if i == 3 else ""} for i in range(12)))
    listing = server.ok("GET", "/jobs?jobtype=a&limit=4&sort=name")
    assert listing["total"] == 6 and [j["name"] for j in listing["items"]] == ["run01", "run03", "run05", "run07"]
    second = server.ok("GET", "/jobs?jobtype=a&limit=4&offset=4&sort=name")
    assert [j["name"] for j in second["items"]] == ["run09", "run11"]
    assert server.ok("GET", "/jobs?user=ann")["total"] == 5
    assert [j["name"] for j in server.ok("GET", "/jobs?site=cern")["items"]] == ["run03"]
    assert server.ok("GET", "/jobs?q=RUN1")["total"] == 2
    assert server.ok("GET", "/jobs?state=defined,cancelled")["total"] == 12
    assert "usage_series" not in server.ok("GET", "/jobs?limit=1")["items"][0]


def test_adjust_priority_state_timelimit_env(server):
    low, high = server.submit({"payload": "low"}, {"payload": "high"})
    changed = server.ok("PATCH", f"/jobs/{low['uuid']}", {"priority": 9, "timelimit": "30", "env": {"A": 1}})
    assert (changed["priority"], changed["timelimit"], changed["env"]) == (9, 30, {"A": "1"})
    pilot = server.register()
    assert server.claim(pilot)["job"]["uuid"] == low["uuid"]           # the queue follows the new priority
    held = server.ok("PATCH", f"/jobs/{high['uuid']}", {"state": "template"})
    assert held["state"] == "template"
    server.report(pilot, "jobstop", job=low["uuid"], exit_code=0)
    assert server.claim(pilot)["job"] is None                            # held jobs are not brokered
    server.ok("PATCH", f"/jobs/{high['uuid']}", {"state": "defined"})
    assert server.claim(pilot)["job"]["uuid"] == high["uuid"]


def test_illegal_change_is_409_and_writes_nothing(server):
    job = server.submit({"payload": "x", "priority": 1})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstop", job=job["uuid"], exit_code=0)
    reply = server.call("PATCH", f"/jobs/{job['uuid']}", {"state": "defined", "priority": 7})
    assert reply.status == 409 and reply.error["field"] == "state"
    assert "finished" in reply.error["message"]
    after = server.job(job["uuid"])
    assert after["state"] == "finished" and after["priority"] == 1
    reply = server.call("PATCH", f"/jobs/{job['uuid']}", {"priority": 7})
    assert reply.status == 409 and server.job(job["uuid"])["priority"] == 1
    assert server.call("PATCH", f"/jobs/{job['uuid']}", {}).status == 422


def test_rerun_of_an_unsuccessful_job(server):
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    server.claim(pilot)
    server.report(pilot, "jobstop", job=job["uuid"], exit_code=1)
    assert server.job(job["uuid"])["state"] == "failed"
    rerun = server.ok("PATCH", f"/jobs/{job['uuid']}", {"state": "defined"})
    assert rerun["state"] == "defined" and rerun["exit_code"] is None and rerun["pilot"] is None
    assert server.claim(pilot)["job"]["uuid"] == job["uuid"]


def test_delete_by_uuid_and_filter(server):
    a, b, c = server.submit({"payload": "a", "jobtype": "x"}, {"payload": "b", "jobtype": "x"}, {"payload": "c"})
    pilot = server.register()
    server.ok("PATCH", f"/jobs/{c['uuid']}", {"priority": 5})
    server.claim(pilot)                                                   # c is dispatched now
    reply = server.call("DELETE", f"/jobs/{c['uuid']}")
    assert reply.status == 409 and "kill it" in reply.error["message"]
    assert server.ok("DELETE", f"/jobs/{a['uuid']}")["deleted"] == [a["uuid"]]
    assert server.call("DELETE", "/jobs").status == 422                  # no filter: refused
    assert server.ok("DELETE", "/jobs?jobtype=x")["deleted"] == [b["uuid"]]
    assert server.ok("DELETE", "/jobs?all=true")["deleted"] == []        # the dispatched one stays
    assert server.ok("GET", "/summary")["jobs_total"] == 1


def test_delete_every_data_record_and_pilot(server):
    """all=true deletes every data record; a pilot delete with no filter takes every ended pilot (a
    MongoDB-protocol server over SQL answered 500 to the empty filter inside the slices' $and)."""
    assert server.call("POST", "/data", [{"name": f"f{i}"} for i in range(3)]).status == 201
    assert len(server.ok("DELETE", "/data?all=true")["deleted"]) == 3
    assert server.ok("GET", "/data?limit=1")["total"] == 0
    pilot = server.register()
    assert server.report(pilot, "stopped").status == 200
    assert server.ok("DELETE", "/pilots")["deleted"] == [pilot]


def test_data_files_and_types(server):
    assert server.call("POST", "/data", {"name": "run1.txt", "datatype": "TXT"}).error["field"] == "datatype"
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    assert server.call("POST", "/datatypes", {"name": "TXT"}).status == 409
    files = server.ok("POST", "/data", [{"name": "run1.txt", "dirpath": "/in", "datatype": "TXT", "size": 10},
                                        {"name": "run2.txt", "dirpath": "/in"}], 201)["items"]
    found = server.ok("GET", "/data?name=run1.txt")
    assert found["total"] == 1 and found["items"][0]["uuid"] == files[0]["uuid"]
    assert server.ok("GET", "/data?name=run9.txt")["total"] == 0
    changed = server.ok("PATCH", f"/data/{files[1]['uuid']}", {"state": "skipped", "comment": "sampled out"})
    assert changed["state"] == "skipped" and changed["ts_upd"] >= changed["ts_reg"]
    assert server.call("DELETE", "/datatypes/TXT").status == 409          # in use
    server.ok("DELETE", f"/data/{files[0]['uuid']}")
    server.ok("DELETE", "/datatypes/TXT")
    assert server.ok("GET", "/datatypes")["items"] == []


def test_sites_and_events(server):
    site = server.ok("POST", "/sites", {"name": "lxvm", "pilots": 120, "cycles": 0, "period": 40, "beat": 100,
                                        "env": {"P3S_SITE": "lxvm"}}, 201)
    assert site["name"] == "lxvm" and site["lifetime"] == 90000
    assert server.call("POST", "/sites", {"name": "lxvm"}).status == 409
    assert server.ok("PATCH", "/sites/lxvm", {"pilots": 100})["pilots"] == 100
    assert server.call("PATCH", "/sites/nowhere", {"pilots": 1}).status == 404
    event = server.ok("POST", "/events", {"kind": "inputsize", "message": "inbox 3 TB", "data": {"bytes": 3e12}}, 201)
    assert event["source"] == "client"
    listed = server.ok("GET", "/events?kind=inputsize")
    assert listed["total"] == 1 and listed["items"][0]["message"] == "inbox 3 TB"


def test_summary_counts_follow_every_change(server):
    jobs = server.submit(*({"payload": str(i), "jobtype": "t" + str(i % 2)} for i in range(6)))
    pilot = server.register(site="s1")
    job = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    server.ok("POST", f"/jobs/{jobs[5]['uuid']}/kill", status=202)
    summary = server.ok("GET", "/summary")
    assert summary["jobs"]["running"] == 1 and summary["jobs"]["defined"] == 4 and summary["jobs"]["cancelled"] == 1
    assert summary["pilots"]["running"] == 1 and summary["pilots_by_site"] == {"s1": {"running": 1}}
    counted = {}
    for item in server.ok("GET", "/jobs?limit=100")["items"]:
        counted[item["state"]] = counted.get(item["state"], 0) + 1
    assert all(summary["jobs"][s] == n for s, n in counted.items())
    server.restart()                                                         # rebuilt from the database
    assert server.ok("GET", "/summary")["jobs"] == summary["jobs"]


def test_json_reply_content_type(server):
    reply = server.call("GET", "/summary")
    assert reply.headers["Content-Type"].startswith("application/json")
    json.dumps(reply.body)
