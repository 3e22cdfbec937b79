"""`p3s-workflow` against a real server: templates, start, show (the DAG drawn), export, cancel."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p3s.cli.workflow", *args, "-S", server.url, f"--token={server.token}"],
                          capture_output=True, text=True, timeout=30)


def test_templates_workflows_and_drawing(server, tmp_path):
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    added = run(server, "add-template", str(REPO / "conf" / "dags" / "3filters.yaml"))
    assert added.returncode == 0 and "template 3filters version 1" in added.stdout
    listing = run(server, "templates")
    assert "3filters" in listing.stdout
    shown = run(server, "show-template", "3filters")
    assert shown.returncode == 0 and "filter2" in shown.stdout and "INPTXT" in shown.stdout
    exported = tmp_path / "3f.graphml"
    assert run(server, "export-template", "3filters", "--format", "graphml", "--output", str(exported)).returncode == 0
    copy = run(server, "add-template", str(exported), "--name", "3filters-copy")
    assert copy.returncode == 0, copy.stderr
    started = run(server, "start", "3filters", "-i", "INPTXT=/data/run1.txt", "-o", "filter1.priority=7",
                  "--filenames", "derived")
    assert started.returncode == 0, started.stderr
    uuid = started.stdout.strip()
    drawing = run(server, "show", uuid).stdout
    lines = drawing.splitlines()
    assert any(line.startswith("[0] NOOP1") and "finished" in line for line in lines)
    assert any("filter1" in line and "defined" in line and "← NOOP1" in line for line in lines)
    assert any(line.startswith("[2] NOOP2") and "← filter1, filter2, filter3" in line for line in lines)
    job = [j for j in server.ok("GET", f"/workflows/{uuid}")["jobs"] if j["vertex"] == "filter1"][0]
    assert server.job(job["uuid"])["priority"] == 7
    bad = run(server, "start", "3filters", "-o", "nosuch.payload=x")
    assert bad.returncode == 1 and "nosuch" in bad.stderr
    assert "cancelled" in run(server, "cancel", uuid).stdout
    assert run(server, "delete", uuid).returncode == 0
    assert run(server, "delete-template", "3filters-copy").returncode == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\njobs:\n  a: {payload: x}\ndata:\n  - {source: a, target: zz}\n")
    refused = run(server, "add-template", str(broken))
    assert refused.returncode == 1 and "zz" in refused.stderr and ":5:" in refused.stderr
