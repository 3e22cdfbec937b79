"""A real pilot keeps heartbeating while it stops a payload (SIGTERM, then SIGKILL after --grace
seconds): a stop longer than the server's pilot_lost_timeout must not get the pilot lost."""
from __future__ import annotations

import time

from pilot_support import pilot_starter

STUBBORN = {"payload": "trap '' TERM; while true; do sleep 0.2; done", "env": {"P3S_EXECMODE": "SHELL"},
            "timelimit": 600}


def test_a_pilot_stopping_a_stubborn_payload_is_not_lost(make_server, tmp_path):
    # Lost after 3 s of silence; the payload ignores SIGTERM, so the stop takes the whole grace, 8 s.
    server = make_server(pilot_lost_timeout=3, reaper_period=1)
    job = server.submit(STUBBORN)[0]["uuid"]
    with pilot_starter(tmp_path) as start:
        pilot = start(server, "-b", "1", "--grace", "8", "-c", "1")
        server.wait_for(lambda: server.job(job)["state"] == "running", timeout=30)
        asked = time.time()
        server.ok("POST", f"/jobs/{job}/kill", status=202)
        assert pilot.wait(60) == 0, pilot.log()
    done = server.job(job)
    assert done["state"] == "killed", done
    # it heartbeat while the payload resisted
    assert [s for s in done["usage_series"] if s["t"] > asked + 3], done["usage_series"]
    assert server.ok("GET", f"/pilots/{done['pilot']}")["state"] == "stopped"
    assert not server.ok("GET", "/events?kind=pilot.lost")["items"]
