"""The spec tells the truth: a bounded schemathesis run against a live server finds no server
error, and no request that the OpenAPI document allows is refused as invalid (400/422).

Rules OpenAPI 3.0 cannot say are in the document as ``x-`` extensions, and the run follows them:
``x-propertyNames`` (the keys of a map) becomes JSON Schema's propertyNames, a field naming a
record that must exist (``x-references``) is given its "none" value, ``x-requires-one-of``
(a filter that must be given) filters the generated queries (tests/spec_hooks.py). Bodies marked
``x-content-checked`` hold a text the server parses (a template): left out of the acceptance run."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ST = Path(sys.executable).with_name("st")
# Every API route but the monitor's stream (an endless response).
ROUTES = re.compile(r"^/api/v1/")
SKIP = re.compile(r"/stream$")
HERE = Path(__file__).resolve().parent

needs_schemathesis = pytest.mark.skipif(not ST.exists() and not shutil.which("st"),
                                        reason="schemathesis is in the test extras")


def _json_schema_keys(value):
    """The document with x-propertyNames as propertyNames, which schemathesis generates from, and
    fields that name another record (x-references) given only their "none" value."""
    if isinstance(value, dict):
        if "x-references" in value:
            return {"type": "string", "enum": [value.get("default", "")]}
        return {("propertyNames" if k == "x-propertyNames" else k): _json_schema_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_schema_keys(v) for v in value]
    return value


def _content_checked(document: dict, operation: dict) -> bool:
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ref = body.get("$ref", "")
    if ref:
        body = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return "x-content-checked" in body


def schemathesis(server, tmp: Path, methods: set[str] | None, *options: str,
                 content_checked: bool = False) -> subprocess.CompletedProcess:
    """Run schemathesis on the server's own document, narrowed to ROUTES (and ``methods``): the
    operations whose body is x-content-checked, or (by default) all the others."""
    document = server.ok("GET", "/openapi.json")
    paths = {}
    for path, item in document["paths"].items():
        if not ROUTES.match(path) or SKIP.search(path):
            continue
        kept = {k: v for k, v in item.items() if k == "parameters" or (
            (methods is None or k.upper() in methods) and _content_checked(document, v) == content_checked)}
        if set(kept) - {"parameters"}:
            paths[path] = kept
    document = _json_schema_keys({**document, "paths": paths})
    spec = tmp / "openapi.json"
    spec.write_text(json.dumps(document))
    return subprocess.run(
        [str(ST if ST.exists() else "st"), "run", str(spec), "--base-url", server.url,
         "-H", f"Authorization: Bearer {server.token}", "--hypothesis-max-examples", "12",
         "--hypothesis-derandomize", "--hypothesis-phases", "generate", "--stateful", "none",
         "--request-timeout", "20000", "--no-color", *options],
        capture_output=True, text=True, timeout=600, cwd=tmp,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "spec_hooks",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))})


@needs_schemathesis
def test_schemathesis_finds_no_server_error_and_valid_requests_are_accepted(server, tmp_path):
    """Every parameter and body field is typed (integers with their ranges, enums, patterns, the
    keys of maps): a request the document allows is never refused as invalid (404 and 409 depend
    on what exists), and none gets a server error."""
    done = schemathesis(server, tmp_path, None, "--checks", "not_a_server_error",
                        "--experimental", "positive_data_acceptance",
                        "--experimental-positive-data-acceptance-allowed-statuses", "2xx,404,409")
    assert done.returncode == 0, done.stdout[-6000:]


@needs_schemathesis
def test_schemathesis_finds_no_server_error_in_parsed_bodies(server, tmp_path):
    """Bodies holding a text the server parses (x-content-checked: templates) may be refused, but
    never with a server error."""
    done = schemathesis(server, tmp_path, None, "--checks", "not_a_server_error", content_checked=True)
    assert done.returncode == 0 and "POST /api/v1/templates" in done.stdout, done.stdout[-6000:]


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


def test_harmless_forms_are_accepted(server):
    """What the document allows and harms nothing: a grouping named twice, a time in exponent form."""
    assert server.call("GET", "/errors?by=host,host").status == 200
    reply = server.call("GET", "/freshness/admission?jobtype=reco&arrived=1.7e9")
    assert reply.status == 200, reply


def test_rules_openapi_cannot_type_are_named_and_kept(server):
    """A DELETE needs a filter (never everything by default); env names and map keys have rules."""
    document = server.ok("GET", "/openapi.json")
    assert "all=true" in document["paths"]["/api/v1/jobs"]["delete"]["x-requires-one-of"]
    reply = server.call("DELETE", "/jobs")
    assert reply.status == 422 and reply.body["error"]["field"] == "query"
    job = document["components"]["schemas"]["JobCreate"]["properties"]
    assert not re.match(job["env"]["x-propertyNames"]["pattern"], "A=B")
    data = document["components"]["schemas"]["DataCreate"]["properties"]
    assert not re.match(data["metadata"]["x-propertyNames"]["pattern"], "$where")
    reply = server.call("POST", "/pilots", {"host": "h", "key": "k" * 31})
    assert reply.status == 422 and reply.body["error"]["field"] == "key"
