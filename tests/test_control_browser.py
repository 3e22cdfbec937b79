"""The control room in a real headless Chromium: alarms firing and clearing, the stale banner, live
rows, rerun, and the layout at 1280x800. Screenshots go to test-artifacts/ (look at them)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from browser import Browser, chromium_path

REPO = Path(__file__).resolve().parent.parent
ARTEFACTS = REPO / "test-artifacts"
pytestmark = pytest.mark.skipif(chromium_path() is None, reason="chromium is installed by bin/install-system-packages")
NO_OVERFLOW = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def log_in(browser: Browser, server, width: int = 1280, height: int = 800) -> None:
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    browser.open(server.url + "/login")
    browser.eval(f"document.querySelector('input[name=token]').value = {json.dumps(server.token)};"
                 "document.querySelector('form').submit()")
    browser.wait_for("location.pathname === '/' && document.getElementById('alarms') !== null")
    browser.wait_for("document.getElementById('live').className === 'live on'")


def finish(server, pilot: str, exit_code: int, stderr: str = "") -> str:
    job = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    server.report(pilot, "jobstop", job=job["uuid"], exit_code=exit_code, stderr_tail=stderr or None)
    return job["uuid"]


def test_alarms_fire_clear_and_the_stale_banner(make_server, tmp_path):
    server = make_server(blackhole_jobs=0)
    browser = Browser(tmp_path / "profile")
    try:
        log_in(browser, server)
        browser.wait_for("document.getElementById('all-clear') !== null")
        assert "as of" in browser.eval("document.getElementById('all-clear').textContent")
        assert browser.eval(NO_OVERFLOW)
        # the charts are uPlot's, with a time axis, and on screen at 1280x800
        browser.wait_for("document.querySelectorAll('.uplot').length === 2")
        assert browser.eval("document.querySelector('.uplot').getBoundingClientRect().top") < 800
        server.submit(*[{"payload": "x", "jobtype": "reco", "name": f"r{i}"} for i in range(6)])
        browser.wait_for("document.querySelector('[data-alarm=no_pilots].firing') !== null", timeout=20)
        assert browser.eval("document.getElementById('all-clear')") is None
        text = browser.eval("document.querySelector('[data-alarm=no_pilots]').textContent")
        assert "since" in text and "UTC" in text and "6 job(s) waiting" in text
        browser.screenshot(ARTEFACTS / "dashboard-alarm-1280x800.png")
        # acknowledged with who and why: silenced for everyone, and the green line comes back
        browser.eval("document.querySelector('[data-alarm=no_pilots] button').click()")
        browser.eval("document.querySelector('.ack-form input[name=reason]').value = 'pilots start at 10:00';"
                     "document.querySelector('.ack-form button').click()")
        browser.wait_for("document.querySelector('[data-alarm=no_pilots].silenced') !== null")
        assert "pilots start at 10:00" in browser.eval("document.querySelector('[data-alarm=no_pilots]').textContent")
        assert server.ok("GET", "/alarms")["silenced"] == 1
        browser.eval("document.querySelector('[data-alarm=no_pilots] button').click()")     # unsilence
        browser.wait_for("document.querySelector('[data-alarm=no_pilots].firing') !== null")
        # failures fire the type's alarm, live; a pilot clears the no-pilot alarm
        pilot = server.register(host="wn01")
        for _ in range(5):
            finish(server, pilot, 1, "ERROR: calibration missing")
        browser.wait_for("document.querySelector('[data-alarm=\"failure_rate:reco\"].firing') !== null", timeout=20)
        browser.wait_for("document.querySelector('[data-alarm=no_pilots]') === null", timeout=20)
        browser.screenshot(ARTEFACTS / "dashboard-failures-1280x800.png")
        # the server dies: at once a banner says the data is stale, and alarms are never "all clear"
        port = server.port
        server.stop(signal.SIGKILL)
        browser.wait_for("!document.getElementById('stale').hidden", timeout=10)
        assert "data as of" in browser.eval("document.getElementById('stale').textContent")
        browser.wait_for("document.getElementById('alarms-unknown') !== null", timeout=15)
        assert browser.eval("document.getElementById('all-clear')") is None
        browser.screenshot(ARTEFACTS / "dashboard-stale-1280x800.png")
        # back: the banner goes, the page reloads what it shows
        server.start(port)
        browser.wait_for("document.getElementById('stale').hidden", timeout=30)
        browser.wait_for("document.getElementById('alarms-unknown') === null", timeout=15)
        browser.wait_for("document.querySelector('#alarms .alarm-row, #all-clear') !== null")
        assert not browser.eval("document.body.classList.contains('stale')")
    finally:
        browser.close()


def test_live_rows_elapsed_time_rerun_and_layout(make_server, tmp_path):
    server = make_server(blackhole_jobs=0)
    server.submit(*[{"payload": "x", "name": f"filler {i}", "jobtype": "reco"} for i in range(30)])
    server.submit({"payload": "x", "name": "watched", "jobtype": "reco", "priority": 10})   # newest, taken first
    browser = Browser(tmp_path / "profile")
    try:
        log_in(browser, server)
        browser.open(server.url + "/jobs?state=defined,dispatched,running,failed")
        browser.wait_for("document.querySelectorAll('table[data-resource=jobs] tbody tr').length > 0")
        assert browser.eval("document.querySelectorAll('table[data-resource=jobs] tbody tr').length") == 25
        assert browser.eval(NO_OVERFLOW)
        browser.eval("window.notReloaded = true")
        pilot = server.register(host="wn07")
        job = server.claim(pilot)["job"]
        server.report(pilot, "jobstart", job=job["uuid"], pid=1)
        row = f"document.querySelector('tr[data-key=\"{job['uuid']}\"]')"
        browser.wait_for(f"{row} && {row}.querySelector('td[data-col=state]').textContent === 'running'")
        browser.wait_for(f"{row}.querySelector('[data-since]') !== null")          # elapsed time ticks
        first = browser.eval(f"{row}.querySelector('[data-since]').textContent")
        browser.wait_for(f"{row}.querySelector('[data-since]').textContent !== {json.dumps(first)}", timeout=5)
        browser.screenshot(ARTEFACTS / "jobs-live-1280x800.png")
        server.report(pilot, "jobstop", job=job["uuid"], exit_code=3, stderr_tail="reading\nERROR: no input file\n")
        browser.wait_for(f"{row}.querySelector('td[data-col=exit_code]').textContent === '3'")
        assert browser.eval(f"{row}.querySelector('td[data-col=ts_sto]').textContent") != "–"
        assert browser.eval(f"{row}.querySelector('[data-since]')") is None           # stopped: a fixed run time
        assert browser.eval("window.notReloaded") is True
        # a failed job's page: why at the top, stderr included; rerun with a confirmation
        browser.open(server.url + f"/jobs/{job['uuid']}")
        browser.wait_for("document.getElementById('why') !== null")
        assert "ERROR: no input file" in browser.eval("document.getElementById('why').textContent")
        assert browser.eval("document.getElementById('why').getBoundingClientRect().top") < 300
        browser.screenshot(ARTEFACTS / "job-failed-1280x800.png")
        # the confirmation is answered in the page (a DevTools dialog would race the test's own calls)
        browser.eval("window.confirm = (m) => { window.asked = m; return true; };"
                     "document.querySelector('button.rerun').click()")
        browser.wait_for("document.querySelector('h1 .state').textContent === 'defined'")
        assert server.job(job["uuid"])["state"] == "defined"
        assert "Rerun this job" in browser.eval("window.asked")
        # the errors view groups the failures, with links to examples
        server.claim(pilot)
        again = server.ok("GET", f"/pilots/{pilot}")["job"]
        server.report(pilot, "jobstart", job=again, pid=1)
        server.report(pilot, "jobstop", job=again, exit_code=3, stderr_tail="ERROR: no input file\n")
        browser.open(server.url + "/errors?hours=1&by=error_line,host")
        browser.wait_for("document.querySelector('#errors tr[data-group]') !== null")
        assert "ERROR: no input file" in browser.eval("document.querySelector('#errors tr[data-group]').textContent")
        assert browser.eval(NO_OVERFLOW)
        browser.screenshot(ARTEFACTS / "errors-1280x800.png")
        for path in ("/", "/jobs", "/pilots", "/hosts", "/errors", "/sites", "/events"):
            browser.open(server.url + path)
            browser.wait_for("document.querySelector('main h1, main .alarms') !== null")
            assert browser.eval(NO_OVERFLOW), path
        browser.call("Emulation.setDeviceMetricsOverride", width=2560, height=1440, deviceScaleFactor=1, mobile=False)
        browser.open(server.url + "/")
        browser.wait_for("document.querySelectorAll('.uplot').length === 2")
        browser.screenshot(ARTEFACTS / "dashboard-2560x1440.png")
        assert browser.console == []
    finally:
        browser.close()


def test_black_hole_host_on_the_pilots_sites_and_hosts_views(make_server, tmp_path):
    server = make_server(blackhole_jobs=2)
    server.ok("POST", "/sites", {"name": "np04", "pilots": 2}, 201)
    server.submit(*[{"payload": "x", "name": f"j{i}"} for i in range(3)])
    pilot = server.register(host="wn13", site="np04")
    for _ in range(2):
        finish(server, pilot, 1, "ERROR: disk full")
    browser = Browser(tmp_path / "profile")
    try:
        log_in(browser, server)
        browser.wait_for("document.querySelector('[data-alarm=\"blackhole:wn13\"].firing') !== null")
        browser.wait_for("document.querySelector('#hosts-panel tr[data-host=wn13]') !== null")
        browser.open(server.url + "/sites")                  # complete at first load: live pilots counted
        browser.wait_for("document.querySelector('tr[data-key=np04]') !== null")
        cells = "[...document.querySelectorAll('tr[data-key=np04] td')].map((c) => c.textContent)"
        assert browser.eval(cells)[1:3] == ["2", "1"]
        browser.open(server.url + "/pilots")
        browser.wait_for(f"document.querySelector('tr[data-key=\"{pilot}\"]') !== null")
        browser.wait_for(f"document.querySelector('tr[data-key=\"{pilot}\"] td[data-col=host]').textContent.includes('drained')")
        browser.open(server.url + "/hosts")
        browser.wait_for("document.querySelector('tr[data-host=wn13] button[data-action=clear]') !== null")
        browser.screenshot(ARTEFACTS / "hosts-blackhole-1280x800.png")
        browser.eval("window.confirm = () => true; document.querySelector('tr[data-host=wn13] button').click()")
        browser.wait_for("document.querySelector('tr[data-host=wn13] button[data-action=drain]') !== null")
        assert not server.ok("GET", "/hosts")["items"][0]["drained"]
        assert browser.console == []
    finally:
        browser.close()
