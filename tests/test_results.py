"""Freshness measured and shown, and results in view: turnaround figures in /summary, /metrics and
the alarms; a job's $P3S_OUTPUT_DIR listed and served only from result_dirs; the freshness panel
and the latest-results page in a real headless Chromium."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from browser import Browser, chromium_path

REPO = Path(__file__).resolve().parent.parent
ARTEFACTS = REPO / "test-artifacts"
SVG_WITH_SCRIPT = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><script>alert(1)</script>'
                   '<rect width="40" height="20" fill="green"/></svg>')


def png(width: int = 4, height: int = 3) -> bytes:
    """A real PNG: red pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def run_pilot(server, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """A real pilot that works until it finds no work twice."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    return subprocess.run([sys.executable, "-m", "p3s.cli.pilot", "-S", server.url,
                           "--logdir", str(tmp / "log"), "--joblogdir", str(tmp / "jobs"), "--workdir", str(tmp / "work"),
                           "-R", str(tmp / "results"), "-c", "2", "-p", "1", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def fetch(server, path: str) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {server.token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def metrics(server) -> str:
    status, body, _headers = fetch(server, "/metrics")
    assert status == 200, body
    return body.decode()


def metric(text: str, name: str) -> float | None:
    """The value of one sample in the exposition text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


@pytest.fixture
def produced(make_server, tmp_path):
    """A server whose result_dirs hold the pilot's results, and a finished job that wrote outputs
    (an image, an SVG carrying a script, a summary.json, a text file, a link leading out)."""
    server = make_server(result_dirs=[str(tmp_path / "pilot")])
    source = tmp_path / "made"
    (source / "sub").mkdir(parents=True)
    (source / "hits.png").write_bytes(png())
    (source / "sub" / "trick.svg").write_text(SVG_WITH_SCRIPT)
    (source / "summary.json").write_text(json.dumps({"events": 1200, "noisy_channels": 3, "ok": True,
                                                     "<b>tag</b>": {"nested": [1, 2]}}))
    (source / "notes.html").write_text("<script>alert(1)</script>")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the monitor")
    server.ok("PATCH", "/jobtypes/evdisp", {"eta": 30})
    job = server.submit({"payload": f"cp -r {source}/. $P3S_OUTPUT_DIR/ && ln -s {secret} $P3S_OUTPUT_DIR/escape.txt",
                         "env": {"P3S_EXECMODE": "1"}, "jobtype": "evdisp", "name": "dqm run 7",
                         "arrived": time.time() - 5})[0]
    done = run_pilot(server, tmp_path / "pilot")
    assert done.returncode == 0, done.stderr
    assert server.job(job["uuid"])["state"] == "finished"
    return server, server.job(job["uuid"])


def test_a_jobs_outputs_are_listed_and_served_safely(produced):
    server, job = produced
    assert job["output_dir"].endswith(job["uuid"])
    out = server.ok("GET", f"/jobs/{job['uuid']}/outputs")
    files = {f["name"]: f for f in out["files"]}
    assert set(files) == {"hits.png", "sub/trick.svg", "summary.json", "notes.html"}    # the link is not listed
    assert files["hits.png"]["kind"] == "image" and files["sub/trick.svg"]["kind"] == "image"
    assert out["summary"]["events"] == 1200 and out["summary"]["<b>tag</b>"] == {"nested": [1, 2]}
    status, body, headers = fetch(server, files["hits.png"]["url"])
    assert status == 200 and body == png() and headers["Content-Type"] == "image/png"
    status, body, headers = fetch(server, files["sub/trick.svg"]["url"])
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    assert "sandbox" in headers["Content-Security-Policy"] and "script-src" not in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, _body, headers = fetch(server, files["notes.html"]["url"])
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"        # never as HTML
    assert headers["Content-Disposition"] == "attachment"
    base = f"/api/v1/jobs/{job['uuid']}/outputs/"
    assert fetch(server, base + "escape.txt")[0] == 403                                     # a link out
    assert fetch(server, base + "..%2F..%2Fsecret.txt")[0] == 422
    assert fetch(server, base + "nothing.png")[0] == 404
    reply = server.call("GET", f"/jobs/{job['uuid']}/outputs/..%2Fx")
    assert reply.status == 422 and reply.error["field"] == "path"


def test_outputs_outside_the_result_dirs_are_not_served(make_server, tmp_path):
    server = make_server(result_dirs=[str(tmp_path / "elsewhere")])
    job = server.submit({"payload": "sh -c 'echo hi > $P3S_OUTPUT_DIR/a.txt'"})[0]
    assert run_pilot(server, tmp_path / "pilot").returncode == 0
    out = server.ok("GET", f"/jobs/{job['uuid']}/outputs")
    assert out["readable"] is False and out["files"] == []
    reply = server.call("GET", f"/jobs/{job['uuid']}/outputs/a.txt")
    assert reply.status == 403 and "outside the result directories" in reply.error["message"]


def test_turnaround_in_summary_metrics_and_the_within_eta_alarm(make_server, tmp_path):
    server = make_server(jobtype_defaults={"evdisp": {"eta": 30, "alarm_within_eta": 0.9}})
    server.submit(*({"payload": "true", "jobtype": "evdisp", "arrived": time.time() - 2} for _ in range(2)))
    assert run_pilot(server, tmp_path / "p1").returncode == 0
    row = server.ok("GET", "/summary")["freshness"]["types"]["evdisp"]
    assert row["eta"] == 30 and row["windows"]["10m"]["done"] == 2
    assert row["windows"]["10m"]["share_within_eta"] == 1.0
    assert 2 <= row["windows"]["10m"]["turnaround_p95_s"] < 30
    text = metrics(server)
    assert metric(text, 'p3s_turnaround_seconds_bucket{jobtype="evdisp",le="+Inf"}') == 2
    assert metric(text, 'p3s_turnaround_seconds_count{jobtype="evdisp"}') == 2
    assert metric(text, 'p3s_turnaround_seconds_bucket{jobtype="evdisp",le="1"}') == 0
    alarm = {a["name"]: a for a in server.ok("GET", "/alarms")["items"]}["within ETA: evdisp"]
    assert alarm["status"] == "ok"
    # five jobs whose data arrived long ago finish late: the share falls below 0.9
    server.submit(*({"payload": "true", "jobtype": "evdisp", "arrived": time.time() - 100} for _ in range(5)))
    assert run_pilot(server, tmp_path / "p2").returncode == 0
    alarm = {a["name"]: a for a in server.ok("GET", "/alarms")["items"]}["within ETA: evdisp"]
    assert alarm["status"] == "alarm" and alarm["value"] == round(2 / 7, 4)
    stale = server.submit({"payload": "true", "jobtype": "other", "eta": 1, "arrived": time.time() - 50})[0]
    server.ok("PATCH", "/jobtypes/other", {"stale": True})
    server.wait_for(lambda: server.job(stale["uuid"])["state"] == "stale")
    text = metrics(server)
    assert metric(text, 'p3s_dropped{jobtype="other",reason="stale"}') == 1
    assert metric(text, 'p3s_jobs{jobtype="other",state="stale"}') == 1


@pytest.mark.skipif(chromium_path() is None, reason="chromium is installed by bin/install-system-packages")
def test_freshness_panel_and_latest_results_in_a_real_browser(produced, tmp_path):
    server, job = produced
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(server.url + "/login")
        browser.eval(f"document.querySelector('input[name=token]').value = {json.dumps(server.token)};"
                     "document.querySelector('form').submit()")
        browser.wait_for("document.querySelector('#freshness tr[data-jobtype=evdisp]') !== null")
        row = "document.querySelector('#freshness tr[data-jobtype=evdisp] [data-col={}]').textContent"
        assert browser.eval(row.format("eta")) == "30 s"
        assert browser.eval(row.format("share")) == "100 %"
        assert "ETA 30 s" in browser.eval(row.format("p95"))
        browser.screenshot(ARTEFACTS / "freshness-panel.png")
        # the latest results: the image shown, the summary as a table, the SVG's script never run
        browser.open(server.url + "/results")
        card = "document.querySelector('.results .card[data-jobtype=evdisp]')"
        browser.wait_for(f"{card} !== null && {card}.dataset.job === {json.dumps(job['uuid'])}")
        browser.wait_for(f"[...{card}.querySelectorAll('img')].every((i) => i.complete && i.naturalWidth > 0)")
        assert browser.eval(f"[...{card}.querySelectorAll('img')].map((i) => i.naturalWidth).sort()") == [4, 40]
        assert browser.eval(f"{card}.querySelector('table.summary').textContent").count("1200") == 1
        assert browser.eval(f"[...{card}.querySelectorAll('table.summary th')].some((t) => t.textContent === '<b>tag</b>')")
        assert browser.eval("document.querySelectorAll('main b, main script').length") == 0
        browser.wait_for(f"{card}.querySelector('[data-finished]').textContent.startsWith('finished ')")
        browser.screenshot(ARTEFACTS / "latest-results.png")
        # a newer result of the type replaces it live, without a reload
        browser.eval("window.notReloaded = true")
        newer = server.submit({"payload": "sh -c 'echo 1 > $P3S_OUTPUT_DIR/new.txt'", "jobtype": "evdisp"})[0]
        assert run_pilot(server, tmp_path / "pilot2", "-R", str(tmp_path / "pilot" / "results")).returncode == 0
        browser.wait_for(f"document.querySelector('.results .card[data-jobtype=evdisp]').dataset.job === {json.dumps(newer['uuid'])}")
        assert browser.eval("window.notReloaded") is True
        # the job's own page lists its outputs
        browser.open(server.url + f"/jobs/{job['uuid']}")
        browser.wait_for("document.querySelector('#outputs tr[data-file=\"summary.json\"]') !== null")
        assert browser.eval("document.querySelectorAll('#outputs img').length") == 2
        assert browser.dialogs == [] and browser.console == []
        # opened on its own, the SVG's script still does not run (sandboxed by its policy)
        svg = browser.eval("[...document.querySelectorAll('#outputs a')].find((a) => a.textContent === 'sub/trick.svg').href")
        browser.open(svg)
        assert browser.eval("document.documentElement.localName") == "svg"
        assert browser.dialogs == []
    finally:
        browser.close()
