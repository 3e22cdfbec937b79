"""A MongoDB that stops answering makes the server slower and says so; it never freezes it, and no
pilot is declared lost because of it. Runs in both passes of the suite, each time on a wire
server of its own (the one it pauses)."""
from __future__ import annotations

import threading
import time

from conftest import FAST, WireServer


def test_a_paused_database_freezes_nothing_and_loses_no_pilot(make_server):
    wire = WireServer().start()
    stop = threading.Event()
    errors: list[str] = []
    server = None
    try:
        server = make_server(auth=False, db=f"{wire.uri}/p3s_pause")
        pilots = [server.register(host=f"wn{i}") for i in range(4)]

        def pilot_loop(uuid: str) -> None:
            # what a pilot does when there is no work: ask again and again, waiting 2 s each time
            while not stop.is_set():
                reply = server.call("POST", f"/pilots/{uuid}/request", {"wait": 2}, timeout=60)
                if reply.status != 200:
                    errors.append(f"{uuid}: {reply}")
                    return

        threads = [threading.Thread(target=pilot_loop, args=(p,)) for p in pilots]
        for thread in threads:
            thread.start()
        time.sleep(1)
        seen = []
        wire.pause()
        try:
            paused_until = time.monotonic() + FAST["pilot_lost_timeout"] + 2
            while time.monotonic() < paused_until:
                status = server.call("GET", "/status", timeout=3)       # answers while the database does not
                assert status.status == 200
                seen.append(status.body["database_state"]["state"])
                time.sleep(0.3)
        finally:
            wire.resume()
        assert "unreachable" in seen
        server.wait_for(lambda: server.ok("GET", "/status")["database_state"]["state"] == "ok")
        time.sleep(FAST["pilot_lost_timeout"] + 3 * FAST["reaper_period"])   # rounds of the reaper after the pause
        stop.set()
        for thread in threads:
            thread.join(60)
        assert errors == []
        states = {server.ok("GET", f"/pilots/{p}")["state"] for p in pilots}
        assert states == {"idle"}
        kinds = [e["kind"] for e in server.ok("GET", "/events?limit=100")["items"]]
        assert "pilot.lost" not in kinds
    finally:
        stop.set()
        if server is not None:
            server.stop()
            server.db = ""          # the database goes with its wire server
        wire.stop()
