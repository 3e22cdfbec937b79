"""The spec tells the truth: a bounded schemathesis run against a live server finds no server
error, and no read that the OpenAPI document allows is refused as invalid (400/422)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ST = Path(sys.executable).with_name("st")
# The core API. The monitor's stream (an endless response) and kills (they stop the run's own
# resources) are left out.
ROUTES = re.compile(r"^/api/v1/(jobs|jobtypes|pilots|data|datatypes|sites|events|templates|workflows|summary|status)")
SKIP = re.compile(r"/(stream|kill)$")

needs_schemathesis = pytest.mark.skipif(not ST.exists() and not shutil.which("st"),
                                        reason="schemathesis is in the test extras")


def schemathesis(server, tmp: Path, methods: set[str] | None, *options: str) -> subprocess.CompletedProcess:
    """Run schemathesis on the server's own document, narrowed to ROUTES (and ``methods``)."""
    document = server.ok("GET", "/openapi.json")
    paths = {}
    for path, item in document["paths"].items():
        if not ROUTES.match(path) or SKIP.search(path):
            continue
        kept = {k: v for k, v in item.items() if k == "parameters" or methods is None or k.upper() in methods}
        if set(kept) - {"parameters"}:
            paths[path] = kept
    document["paths"] = paths
    spec = tmp / "openapi.json"
    spec.write_text(json.dumps(document))
    return subprocess.run(
        [str(ST if ST.exists() else "st"), "run", str(spec), "--base-url", server.url,
         "-H", f"Authorization: Bearer {server.token}", "--hypothesis-max-examples", "12",
         "--hypothesis-derandomize", "--hypothesis-phases", "generate", "--stateful", "none",
         "--request-timeout", "20000", "--no-color", *options],
        capture_output=True, text=True, timeout=600, cwd=tmp)


@needs_schemathesis
def test_schemathesis_finds_no_server_error(server, tmp_path):
    done = schemathesis(server, tmp_path, None, "--checks", "not_a_server_error")
    assert done.returncode == 0, done.stdout[-6000:]


@needs_schemathesis
def test_schemathesis_valid_reads_are_accepted(server, tmp_path):
    """Every query parameter is typed (integers with their ranges, enums, state patterns): a read
    the document allows is never refused as invalid."""
    done = schemathesis(server, tmp_path, {"GET"}, "--checks", "not_a_server_error",
                        "--experimental", "positive_data_acceptance",
                        "--experimental-positive-data-acceptance-allowed-statuses", "2xx,404")
    assert done.returncode == 0, done.stdout[-6000:]


def test_405_says_what_is_allowed(server):
    reply = server.call("PUT", "/jobs", {})
    assert reply.status == 405 and reply.headers["Allow"] == "DELETE, GET, POST"
    reply = server.call("PATCH", "/status", {})
    assert reply.status == 405 and reply.headers["Allow"] == "GET"


def test_query_parameters_are_typed_in_the_document(server):
    document = server.ok("GET", "/openapi.json")
    params = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert "-ts_def" in params["sort"]["enum"]
    assert re.match(params["state"]["pattern"], "defined,running")
    assert not re.match(params["state"]["pattern"], "defined,nosuch")
    job = document["components"]["schemas"]["JobCreate"]["properties"]
    assert job["timelimit"]["maximum"] == 2592000 and job["priority"]["maximum"] == 2 ** 63 - 1
