"""`p3s-dataset` as a user runs it: real processes against a real server."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def p3s_dataset(server, tmp_path: Path):
    """Run ``p3s-dataset ARGS…`` against the test server; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "p3s.cli.dataset", *args, "-S", server.url, "--token", server.token]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    return run


def files(server) -> list[dict]:
    return server.ok("GET", "/data?limit=1000")["items"]


def test_types(server, p3s_dataset):
    added = p3s_dataset("add-type", "TXT", "--ext", ".txt", "--comment", "plain text")
    assert added.returncode == 0, added.stderr
    assert server.ok("GET", "/datatypes/TXT")["ext"] == ".txt"
    listed = p3s_dataset("types")
    assert listed.stdout.split()[:6] == ["NAME", "EXT", "COMMENT", "TXT", ".txt", "plain"]
    assert json.loads(p3s_dataset("types", "--json").stdout)[0]["name"] == "TXT"
    again = p3s_dataset("add-type", "TXT", "--ext", ".txt")
    assert again.returncode == 1 and "exists already" in again.stderr
    assert p3s_dataset("add-type", "BIN", "--ext", "bin").returncode == 2
    assert p3s_dataset("delete-type", "TXT").returncode == 0
    assert server.ok("GET", "/datatypes")["items"] == []


def test_register_paths_and_lookup(server, p3s_dataset, tmp_path):
    server.ok("POST", "/datatypes", {"name": "ROOT", "ext": ".root"}, 201)
    (tmp_path / "run1.root").write_bytes(b"x" * 42)
    result = p3s_dataset("register", "run1.root", "elsewhere/run2.root", "-T", "ROOT", "--meta", "run=1")
    assert result.returncode == 0, result.stderr
    stored = {f["name"]: f for f in files(server)}
    assert stored["run1.root"]["size"] == 42 and stored["run2.root"]["size"] is None
    assert stored["run1.root"]["dirpath"] == str(tmp_path.resolve())
    assert stored["run2.root"]["dirpath"] == str(tmp_path.resolve() / "elsewhere")
    assert stored["run1.root"]["datatype"] == "ROOT" and stored["run1.root"]["metadata"] == {"run": "1"}

    found = p3s_dataset("lookup", "run1.root")
    assert found.returncode == 0 and stored["run1.root"]["uuid"] in found.stdout
    missing = p3s_dataset("lookup", "run3.root")
    assert missing.returncode == 1 and "run3.root" in missing.stderr and missing.stdout == ""

    listed = json.loads(p3s_dataset("list", "--datatype", "ROOT", "--json").stdout)
    assert listed["total"] == 2
    in_use = p3s_dataset("delete-type", "ROOT")
    assert in_use.returncode == 1 and "used by" in in_use.stderr


def test_register_json_file(server, p3s_dataset, tmp_path):
    (tmp_path / "files.json").write_text(json.dumps([
        {"name": "a.root", "dirpath": "/data", "metadata": {"run": 1}},
        {"name": "b.root", "dirpath": "/data", "state": "ready"},
    ]))
    result = p3s_dataset("register", "-j", "files.json", "--meta", "det=np04", "--json")
    assert result.returncode == 0, result.stderr
    assert [f["name"] for f in json.loads(result.stdout)] == ["a.root", "b.root"]
    stored = {f["name"]: f for f in files(server)}
    assert stored["a.root"]["metadata"] == {"run": 1, "det": "np04"} and stored["b.root"]["state"] == "ready"

    (tmp_path / "bad.json").write_text('[{"name": "c.root"\n "dirpath": "/data"}]')
    bad = p3s_dataset("register", "-j", "bad.json")
    assert bad.returncode == 2 and re.search(r"^bad\.json:2:\d+: ", bad.stderr, re.M), bad.stderr
    refused = p3s_dataset("register", "d.root", "-T", "NOPE")
    assert refused.returncode == 1 and "NOPE" in refused.stderr
    assert len(files(server)) == 2


def test_show_adjust_delete(server, p3s_dataset):
    [record] = server.ok("POST", "/data", [{"name": "a.root", "metadata": {"run": "1"}}], 201)["items"]
    shown = p3s_dataset("show", record["uuid"])
    assert shown.returncode == 0 and "name:" in shown.stdout and "a.root" in shown.stdout
    adjusted = p3s_dataset("adjust", record["uuid"], "-A", "ready", "--comment", "checked", "--meta", "det=np04")
    assert adjusted.returncode == 0, adjusted.stderr
    now = server.ok("GET", f"/data/{record['uuid']}")
    assert (now["state"], now["comment"], now["metadata"]) == ("ready", "checked", {"run": "1", "det": "np04"})
    assert p3s_dataset("adjust", record["uuid"]).returncode == 2
    deleted = p3s_dataset("delete", record["uuid"], "no-such-file")
    assert deleted.returncode == 1 and "deleted 1 file(s)" in deleted.stdout and "no-such-file" in deleted.stderr
    assert files(server) == []
