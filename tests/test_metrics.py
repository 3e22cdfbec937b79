"""/metrics: behind a metrics or admin token unless made public; written by prometheus_client,
so no label value can break the scrape."""
from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

ADMIN = "admin-token-0123456789"
TOKENS = [{"token": ADMIN, "role": "admin", "name": "boss"},
          {"token": "client-token-0123456789", "role": "client", "name": "shifter"},
          {"token": "metrics-token-012345678", "role": "metrics", "name": "prometheus"}]


def scrape(server, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(server.url + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_value(server, name: str) -> float:
    """The value of sample ``name`` on ``server``'s /metrics (its admin token)."""
    status, text = scrape(server, server.token)
    assert status == 200, text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no {name} in /metrics")


def test_metrics_need_a_metrics_or_admin_token(make_server):
    server = make_server(tokens=TOKENS)
    assert scrape(server)[0] == 401
    assert scrape(server, "client-token-0123456789")[0] == 403
    assert scrape(server, "wrong-token-0123456789")[0] == 401
    assert scrape(server, "metrics-token-012345678")[0] == 200 and scrape(server, ADMIN)[0] == 200
    assert server.call("GET", "/jobs", token="metrics-token-012345678").status == 403   # metrics only
    public = make_server(tokens=TOKENS, metrics_public=True)
    assert scrape(public)[0] == 200


def test_a_hostile_site_name_does_not_break_the_scrape(server):
    hostile = 'cern\n# TYPE p3s_jobs counter\np3s_fake{x="1"} 9 "\\'
    server.register(site=hostile)
    status, body = scrape(server, server.token)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    sites = [s.labels["site"] for s in families["p3s_pilots"].samples]
    assert sites == [hostile] and "p3s_fake" not in families
    assert families["p3s_jobs"].type == "gauge"
