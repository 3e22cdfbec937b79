"""The web monitor: every page and filter over HTTP, /metrics, and a real headless Chromium."""
from __future__ import annotations

import json
import re
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from browser import Browser, chromium_path

REPO = Path(__file__).resolve().parent.parent
ARTEFACTS = REPO / "test-artifacts"
HOSTILE = "<script>alert(1)</script>"
PAGES = ["/", "/jobs", "/pilots", "/workflows", "/templates", "/data", "/events", "/sites"]


def login(server, token: str) -> str:
    """Log in with ``token`` through the form; the session id the cookie holds."""
    request = urllib.request.Request(server.url + "/login", data=f"token={token}".encode())
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.build_opener(NoRedirect).open(request, timeout=10)
    assert info.value.code == 302
    return re.search(r"p3s_session=([^;]+)", info.value.headers["Set-Cookie"]).group(1)


def get(server, path: str, cookie: str | None = None, token: str | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(server.url + path)
    if cookie:
        request.add_header("Cookie", f"p3s_session={cookie}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_pages_need_a_login_and_serve_the_shell(server):
    session = login(server, server.token)
    for page in PAGES + ["/jobs/123", "/workflows/abc", "/templates/x", "/sites/y", "/pilots/z", "/data/q"]:
        status, _body, headers = get(server, page)
        assert status == 302 and headers["Location"].startswith("/login?next="), page
        status, body, headers = get(server, page, cookie=session)
        assert status == 200 and '<script src="/static/app.js">' in body, page
        assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, body, _ = get(server, "/login")
    assert status == 200 and 'name="token"' in body and "<title>p3s monitor · log in</title>" in body
    status, body, _ = get(server, "/logout", cookie=session)     # both pages extend templates/base.html
    assert status == 200 and 'action="/logout"' in body and "<title>p3s monitor · log out</title>" in body
    assert '<a class="brand" href="/">p3s</a>' in body and "<footer>p3s " in body
    for asset in ("/static/app.js", "/static/style.css"):
        assert get(server, asset)[0] == 200                 # everything served locally
    status, _, _ = get(server, "/", cookie="wrong-token-0123456789")
    assert status == 302
    assert get(server, "/", cookie=server.token)[0] == 302        # a token is not a session


def test_login_sets_a_cookie_that_the_api_accepts_with_a_csrf_header(server):
    data = f"token={server.token}".encode()
    request = urllib.request.Request(server.url + "/login?next=/jobs", data=data)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(request, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 302 and exc.headers["Location"] == "/jobs"
        cookie = exc.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie   # plain http
    session = re.search(r"p3s_session=([^;]+)", cookie).group(1)
    assert server.token not in cookie
    bad = urllib.request.Request(server.url + "/login?next=https://evil.example/", data=b"token=nope")
    try:
        opener.open(bad, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    job = server.submit({"payload": "x"})[0]
    post = urllib.request.Request(server.url + f"/api/v1/jobs/{job['uuid']}/kill", data=b"", method="POST")
    post.add_header("Cookie", f"p3s_session={session}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(post, timeout=10)
    assert info.value.code == 403                            # no CSRF header: refused
    post.add_header("X-P3S-Request", "1")
    assert urllib.request.urlopen(post, timeout=10).status == 202


def test_data_behind_every_page_and_filter(server):
    """The pages draw only what the API returns; each page's requests and filters, answered."""
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    server.ok("POST", "/sites", {"name": "cern", "pilots": 4}, 201)
    server.ok("POST", "/templates", {"yaml": (REPO / "conf" / "dags" / "1filter.yaml").read_text()}, 201)
    wf = server.ok("POST", "/workflows", {"template": "1filter", "inputs": {"INPTXT": "/d/in.txt"}}, 201)
    jobs = server.submit({"name": "reco run7", "payload": "x", "jobtype": "reco", "user": "ann"},
                         {"name": "evd", "payload": "y", "jobtype": "evdisp", "user": "bob"})
    pilot = server.register(host="wn07", site="cern")
    server.claim(pilot)
    server.ok("POST", "/data", {"name": "raw1.root", "dirpath": "/in", "datatype": "TXT"}, 201)
    queries = {
        "/jobs?state=defined,dispatched&jobtype=reco&user=ann&q=run&sort=-ts_def&limit=25&offset=0": 1,
        "/jobs?state=defined&jobtype=reco&user=bob": 0,
        "/jobs?host=wn07": 1, f"/jobs?pilot={pilot}": 1, f"/jobs?workflow={wf['uuid']}": 3, "/jobs?site=cern": 1,
        "/pilots?state=running&site=cern&host=wn07&sort=-ts_lhb": 1, "/pilots?state=lost": 0,
        "/workflows?state=defined&template=1filter&q=1fil": 1, "/workflows?user=nobody": 0,
        "/data?name=raw1.root&datatype=TXT": 1, "/data?q=RAW1": 1, f"/data?workflow={wf['uuid']}": 2,
        "/events?kind=pilot.registered&site=cern": 1, "/events?severity=error": 0,
    }
    for query, expected in queries.items():
        assert server.ok("GET", query)["total"] == expected, query
    assert len(server.ok("GET", "/templates")["items"]) == 1 and len(server.ok("GET", "/sites")["items"]) == 1
    stats = server.ok("GET", "/stats")
    assert set(stats["windows"]) == {"1m", "10m", "1h", "24h"}
    assert stats["windows"]["1m"]["total"]["defined"] >= 2 and len(stats["series"]) == 60
    alarms = server.ok("GET", "/alarms")
    names = {a["name"]: a for a in alarms["items"]}
    assert names["pilots at cern"]["status"] == "alarm"       # 1 live pilot, nominal 4
    assert server.ok("GET", "/whoami") == {"role": "admin", "name": "admin", "auth": True, "address": "127.0.0.1"}
    for uuid in (jobs[0]["uuid"],):
        assert server.ok("GET", f"/jobs/{uuid}")["name"] == "reco run7"


def test_job_log_is_served_only_from_the_configured_directories(make_server, tmp_path):
    logs = tmp_path / "joblogs"
    logs.mkdir()
    server = make_server(job_log_dirs=[str(logs)])
    job = server.submit({"payload": "x"})[0]
    pilot = server.register()
    server.claim(pilot)
    (logs / f"{job['uuid']}.out").write_text("line 1\nline 2\n")
    server.report(pilot, "jobstop", job=job["uuid"], exit_code=0, log_dir=str(logs))
    request = urllib.request.Request(server.url + f"/api/v1/jobs/{job['uuid']}/log/out")
    request.add_header("Authorization", f"Bearer {server.token}")
    assert urllib.request.urlopen(request, timeout=10).read() == b"line 1\nline 2\n"
    other = server.submit({"payload": "y"})[0]
    server.claim(pilot)
    server.report(pilot, "jobstop", job=other["uuid"], exit_code=0, log_dir="/etc")
    assert server.call("GET", f"/jobs/{other['uuid']}/log/out").status == 403


def test_metrics_in_prometheus_format(server):
    server.submit({"payload": "x", "jobtype": "reco"})
    pilot = server.register(site="cern")
    job = server.claim(pilot)["job"]
    server.report(pilot, "jobstart", job=job["uuid"], pid=1)
    status, body, headers = get(server, "/metrics", token=server.token)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples[("p3s_jobs", (("jobtype", "reco"), ("state", "running")))] == 1
    assert samples[("p3s_pilots", (("site", "cern"), ("state", "running")))] == 1
    assert samples[("p3s_dispatch_latency_seconds_bucket", (("le", "+Inf"),))] == 1
    assert samples[("p3s_dispatch_latency_seconds_count", ())] == 1
    assert samples[("p3s_http_requests_total", (("code", "201"), ("method", "POST")))] >= 1
    for line in body.splitlines():
        assert line.startswith("#") or re.match(r'^[a-z_][a-z0-9_]*(\{[^}]*\})? [0-9.e+-]+$', line), line


def test_live_stream_pushes_changes(server):
    request = urllib.request.Request(server.url + "/api/v1/stream")
    request.add_header("Authorization", f"Bearer {server.token}")
    stream = urllib.request.urlopen(request, timeout=10)
    assert stream.readline() == b"event: hello\n"
    stream.readline(), stream.readline()
    job = server.submit({"payload": "x", "name": "pushed"})[0]
    lines = [stream.readline() for _ in range(2)]
    assert lines[0] == b"event: change\n"
    message = json.loads(lines[1].decode().removeprefix("data: "))
    assert message["jobs"][job["uuid"]]["state"] == "defined" and message["summary"]["jobs"]["defined"] == 1
    stream.close()


DAG = textwrap.dedent("""
    name: pic
    jobs:
      IN: {noop: true}
      first: {jobtype: first, payload: "x"}
      second: {jobtype: second, payload: "y"}
      OUT: {noop: true}
    data:
      - {source: IN, target: first, datatag: A}
      - {source: first, target: second, datatag: B}
      - {source: first, target: second, datatag: C}
      - {source: second, target: OUT, datatag: D}
""")


@pytest.mark.skipif(chromium_path() is None, reason="chromium is installed by bin/install-system-packages")
def test_monitor_in_a_real_browser(server, tmp_path):
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(server.url + "/")
        assert browser.eval("location.pathname") == "/login"
        browser.eval(f"document.querySelector('input[name=token]').value = {json.dumps(server.token)};"
                     "document.querySelector('form').submit()")
        browser.wait_for("location.pathname === '/' && document.querySelector('[data-count=defined]') !== null")
        browser.wait_for("document.getElementById('live').className === 'live on'")
        # a job appears and changes state live, without a reload
        browser.eval("window.notReloaded = true")
        job = server.submit({"payload": "sleep 1", "name": HOSTILE, "jobtype": "evdisp"})[0]
        browser.wait_for("document.querySelector('[data-count=defined] .n').textContent === '1'")
        pilot = server.register(host="wn01")
        server.claim(pilot)
        browser.wait_for("document.querySelector('[data-count=dispatched] .n').textContent === '1'")
        assert browser.eval("window.notReloaded") is True
        browser.screenshot(ARTEFACTS / "dashboard.png")
        # the jobs list shows the hostile name as text, and follows the state live
        browser.open(server.url + "/jobs")
        browser.wait_for(f"document.querySelector('tr[data-key=\"{job['uuid']}\"]') !== null")
        name_cell = f"document.querySelector('tr[data-key=\"{job['uuid']}\"] td[data-col=name]')"
        assert browser.eval(f"{name_cell}.textContent") == HOSTILE
        assert browser.eval(f"{name_cell}.children.length") == 0
        assert browser.eval("document.querySelectorAll('main script').length") == 0
        browser.eval("window.notReloaded = true")
        server.report(pilot, "jobstart", job=job["uuid"], pid=1)
        browser.wait_for(f"document.querySelector('tr[data-key=\"{job['uuid']}\"] td[data-col=state]').textContent === 'running'")
        assert browser.eval("window.notReloaded") is True
        # a workflow's DAG as a picture, coloured by state, following the jobs live
        server.ok("POST", "/templates", {"yaml": DAG}, 201)
        wf = server.ok("POST", "/workflows", {"template": "pic", "name": HOSTILE}, 201)
        browser.open(server.url + f"/workflows/{wf['uuid']}")
        browser.wait_for("document.querySelectorAll('svg.dag g.node').length === 4")
        assert browser.eval("document.querySelectorAll('svg.dag path.edge').length") == 4
        node = "document.querySelector('svg.dag g.node[data-vertex=\"{}\"]').dataset.state"
        assert browser.eval(node.format("first")) == "defined" and browser.eval(node.format("IN")) == "finished"
        assert browser.eval("document.querySelector('.wf-name').textContent") == HOSTILE
        worker = server.register(jobtypes=["first"])
        got = server.claim(worker)["job"]
        server.report(worker, "jobstop", job=got["uuid"], exit_code=0)
        browser.wait_for(node.format("second") + " === 'defined'")
        assert browser.eval(node.format("first")) == "finished"
        browser.screenshot(ARTEFACTS / "workflow.png")
        assert browser.dialogs == [] and browser.console == []
    finally:
        browser.close()


# Counts, in the page, every live change the monitor's own stream handler has dealt with (run
# before app.js, on every document): a test can then wait for a change to have been handled.
COUNT_HANDLED = """
const add = EventSource.prototype.addEventListener;
EventSource.prototype.addEventListener = function (type, listener, ...rest) {
  if (type !== "change") return add.call(this, type, listener, ...rest);
  return add.call(this, type, function (ev) {
    try { return listener.call(this, ev); } finally { (window.handled = window.handled || []).push(JSON.parse(ev.data)); }
  }, ...rest);
};
"""


@pytest.mark.skipif(chromium_path() is None, reason="chromium is installed by bin/install-system-packages")
def test_live_change_before_the_page_is_drawn_is_harmless(server, tmp_path):
    """A change of the workflow pushed while the page's own request is still pending (as on a busy
    server) once threw 'Cannot read properties of null' from the workflow page."""
    server.ok("POST", "/templates", {"yaml": DAG}, 201)
    wf = server.ok("POST", "/workflows", {"template": "pic", "name": "early"}, 201)
    browser = Browser(tmp_path / "profile")

    def release() -> None:
        while browser.paused:
            try:
                browser.call("Fetch.continueRequest", requestId=browser.paused.pop()["requestId"])
            except RuntimeError:                # already let go (Fetch.disable)
                pass

    try:
        browser.open(server.url + "/")
        browser.eval(f"document.querySelector('input[name=token]').value = {json.dumps(server.token)};"
                     "document.querySelector('form').submit()")
        browser.wait_for("location.pathname === '/' && document.querySelector('[data-count=defined]') !== null")
        browser.call("Page.addScriptToEvaluateOnNewDocument", source=COUNT_HANDLED)
        browser.call("Fetch.enable", patterns=[{"urlPattern": f"*/api/v1/workflows/{wf['uuid']}*",
                                                "requestStage": "Request"}])
        browser.open(server.url + f"/workflows/{wf['uuid']}")
        browser.wait_for("document.getElementById('live').className === 'live on'")
        server.wait_for(lambda: browser.eval("true") and browser.paused, timeout=30)   # the page's request, held
        assert browser.eval("document.getElementById('wf-state')") is None
        assert server.call("POST", f"/workflows/{wf['uuid']}/cancel").status < 300    # a live change of the workflow
        browser.wait_for(f"(window.handled || []).some((m) => m.workflows[{json.dumps(wf['uuid'])}])", timeout=30)
        assert browser.console == []
        release()
        browser.call("Fetch.disable")
        release()
        browser.wait_for("document.getElementById('wf-state') !== null"
                         " && document.getElementById('wf-state').textContent === 'cancelled'", timeout=30)
        assert browser.dialogs == [] and browser.console == []
    finally:
        browser.close()


@pytest.mark.skipif(chromium_path() is None, reason="chromium is installed by bin/install-system-packages")
def test_client_role_sees_no_kill_or_cancel_buttons(make_server, tmp_path):
    tokens = [{"token": "admin-token-0123456789", "role": "admin", "name": "boss"},
              {"token": "client-token-0123456789", "role": "client", "name": "shifter"}]
    server = make_server(tokens=tokens)
    job = server.submit({"payload": "x", "name": "waiting"})[0]
    browser = Browser(tmp_path / "profile")
    try:
        for token, buttons in (("client-token-0123456789", 0), ("admin-token-0123456789", 1)):
            browser.open(server.url + "/logout")
            browser.wait_for("document.querySelector('form') !== null")
            browser.eval("document.querySelector('form').submit()")
            browser.wait_for("location.pathname === '/login'")
            browser.open(server.url + f"/jobs/{job['uuid']}")
            browser.eval(f"document.querySelector('input[name=token]').value = {json.dumps(token)};"
                         "document.querySelector('form').submit()")
            browser.wait_for("document.querySelector('.job-name') !== null")
            assert browser.eval("document.querySelectorAll('main button.danger').length") == buttons
    finally:
        browser.close()
