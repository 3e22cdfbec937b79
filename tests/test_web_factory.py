"""The monitor's site page shows the pilot factory's last round (``p3s-fleet top-up --every``)."""
from __future__ import annotations

import json

import pytest

from browser import Browser, chromium_path
from p3s.fleet import service


@pytest.mark.skipif(chromium_path() is None, reason="chromium is installed by bin/install-system-packages")
def test_site_page_shows_the_factorys_last_round(server, tmp_path):
    from p3s.fleet.server import ServerView

    server.ok("POST", "/sites", {"name": "lab", "pilots": 8}, 201)
    view = ServerView(server.url, server.token)
    service.record(view, "lab", "slurm", service.Round("first", {}, [], 8, 8, 8, 0), None)
    service.record(view, "lab", "slurm", service.Round("second", {}, [], 8, 2, 5, 3), None)
    service.record(view, "other", "sge", service.Round("elsewhere", {}, [], 1, 1, 1, 0), None)
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(server.url + "/sites/lab")
        browser.eval(f"document.querySelector('input[name=token]').value = {json.dumps(server.token)};"
                     "document.querySelector('form').submit()")
        browser.wait_for("document.getElementById('factory') !== null")
        field = "document.querySelector('#factory dd[data-field={}]').textContent"
        shown = {key: browser.eval(field.format(key)) for key in ("wanted", "submitted", "queued", "registered",
                                                                  "backend", "error")}
        assert shown == {"wanted": "8", "submitted": "2", "queued": "5", "registered": "3", "backend": "slurm",
                         "error": "–"}
        assert browser.dialogs == [] and browser.console == []
    finally:
        browser.close()
