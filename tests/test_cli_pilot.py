"""`p3s-pilot list / show / kill / delete` against a real server."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def run(server, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    return subprocess.run([sys.executable, "-m", "p3s.cli.pilot", *args, "-S", server.url],
                          capture_output=True, text=True, timeout=30, env=env)


def test_list_show_kill_delete(make_server):
    # pilots registered by hand never beat: a long lost timeout keeps them alive on a busy machine
    server = make_server(pilot_lost_timeout=120)
    busy = server.register(host="wn01", site="cern")
    idle = server.register(host="wn02", site="cern")
    job = server.submit({"payload": "sleep 1", "name": "one"})[0]
    server.claim(busy)
    listing = run(server, "list")
    assert listing.returncode == 0
    assert "wn01" in listing.stdout and "running" in listing.stdout and listing.stdout.startswith("UUID")
    as_json = json.loads(run(server, "list", "--json", "-A", "idle").stdout)
    assert [p["uuid"] for p in as_json["items"]] == [idle]
    shown = run(server, "show", busy)
    assert shown.returncode == 0 and job["uuid"] in shown.stdout and "dispatched" in shown.stdout
    assert "at least one" in run(server, "kill").stderr
    killed = run(server, "kill", "-H", "wn02")
    assert killed.returncode == 0 and "1 pilot" in killed.stdout
    assert server.report(idle, "heartbeat").body["kill"] is True
    server.report(idle, "stopped")
    refused = run(server, "delete", "-u", busy)
    assert refused.returncode == 1 and "kill it before deleting" in refused.stderr
    deleted = run(server, "delete", "--all")
    assert deleted.returncode == 0 and "deleted 1 pilot" in deleted.stdout
    missing = run(server, "show", idle)
    assert missing.returncode == 1 and "no pilot" in missing.stderr
