"""`p3s-workflow`: DAG templates and the workflows made from them.

    p3s-workflow add-template FILE [--name N] [--new-version]     YAML or the original GraphML
    p3s-workflow templates | show-template NAME | delete-template NAME
    p3s-workflow export-template NAME [--format yaml|graphml] [--output FILE]
    p3s-workflow start TEMPLATE [--input TAG=PATH] [--override VERTEX.FIELD=VALUE] [--state template]
    p3s-workflow list | show UUID | cancel UUID | delete UUID
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from p3s.cli.common import (add_client_arguments, fail, make_client, parse_pairs, print_json, print_table,
                            run_command)

PROG = "p3s-workflow"
STATE_MARKS = {"finished": "●", "running": "◐", "dispatched": "◑", "defined": "○", "template": "·",
               "cancelled": "✕", "failed": "✗", "timelimit": "✗", "pilot_lost": "✗", "killed": "✗", "nonstarter": "✗",
               "stale": "✕"}
COLOURS = {"finished": "32", "running": "36", "dispatched": "36", "defined": "34", "failed": "31", "timelimit": "31",
           "pilot_lost": "31", "killed": "31", "nonstarter": "31", "cancelled": "33", "stale": "33"}


def _overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``VERTEX.FIELD=VALUE`` (FIELD: payload, priority, timelimit, jobtype, eta, env.NAME) as API overrides."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_pairs(items, "--override").items():
        vertex, _, field = key.partition(".")
        if not vertex or not field:
            fail(f"--override must be VERTEX.FIELD=VALUE, got {key}={value}")
        changes = out.setdefault(vertex, {})
        if field.startswith("env."):
            changes.setdefault("env", {})[field[4:]] = value
        else:
            changes[field] = value
    return out


def read_template(path: str) -> dict[str, str]:
    """The body of POST /templates for a file: YAML, or GraphML by extension or content."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    kind = "graphml" if path.endswith(".graphml") or text.lstrip().startswith("<") else "yaml"
    return {kind: text, "filename": path}


def draw(workflow: dict, colour: bool) -> list[str]:
    """The DAG as layers (each vertex after all its parents), with each job's state."""
    jobs = {j["vertex"]: j for j in workflow["jobs"]}
    by_uuid = {j["uuid"]: j for j in workflow["jobs"]}
    parents: dict[str, set[str]] = {v: set() for v in jobs}
    for job in workflow["jobs"]:
        for child in job.get("children") or ():
            if child in by_uuid:
                parents[by_uuid[child]["vertex"]].add(job["vertex"])
    depth: dict[str, int] = {}

    def level(vertex: str) -> int:
        if vertex not in depth:
            depth[vertex] = 1 + max((level(p) for p in parents[vertex]), default=-1)
        return depth[vertex]

    width = max((len(v) for v in jobs), default=0)
    lines = []
    for layer in sorted({level(v) for v in jobs}):
        for i, vertex in enumerate(sorted(v for v in jobs if depth[v] == layer)):
            job = jobs[vertex]
            state = job["state"] + (" (noop)" if job.get("noop") else "")
            mark = STATE_MARKS.get(job["state"], "?")
            text = f"{mark} {state:<18}"
            if colour and job["state"] in COLOURS:
                text = f"\033[{COLOURS[job['state']]}m{text}\033[0m"
            where = f" on {job['host']}" if job.get("host") else ""
            after = f"  ← {', '.join(sorted(parents[vertex]))}" if parents[vertex] else ""
            prefix = f"[{layer}]" if i == 0 else "   "
            lines.append(f"{prefix} {vertex:<{width}}  {text}{where}{after}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add-template", help="validate and store a DAG template (YAML or GraphML)")
    add.add_argument("file", help="template file ('-' = standard input)")
    add.add_argument("--name", help="store under this name (default: the template's own)")
    add.add_argument("--new-version", action="store_true", help="add a new version of a used template")
    sub.add_parser("templates", help="list templates")
    show_t = sub.add_parser("show-template", help="show a template's vertices and edges")
    show_t.add_argument("name")
    show_t.add_argument("--version", type=int)
    delete_t = sub.add_parser("delete-template", help="delete a template no workflow uses")
    delete_t.add_argument("name")
    export = sub.add_parser("export-template", help="print a template as YAML or GraphML")
    export.add_argument("name")
    export.add_argument("--version", type=int)
    export.add_argument("--format", choices=("yaml", "graphml"), default="yaml")
    export.add_argument("--output", help="write to this file instead of standard output")
    start = sub.add_parser("start", aliases=["instantiate"], help="make a workflow from a template")
    start.add_argument("template")
    start.add_argument("--version", type=int)
    start.add_argument("--name", default="")
    start.add_argument("-D", "--description", default="")
    start.add_argument("-A", "--state", choices=("defined", "template"), default="defined",
                       help="defined starts it now (default); template creates it stopped")
    start.add_argument("-i", "--input", action="append", metavar="TAG=PATH",
                       help="input file for an edge (by data tag or edge id); repeatable")
    start.add_argument("-o", "--override", action="append", metavar="VERTEX.FIELD=VALUE",
                       help="change a vertex: payload, priority, timelimit, jobtype, eta or env.NAME; repeatable")
    start.add_argument("--filenames", choices=("generated", "template", "derived"), default="generated",
                       help="names of produced files [generated: uuid + extension]")
    start.add_argument("--dirpath", default="", help="directory for produced files")
    listing = sub.add_parser("list", help="list workflows")
    listing.add_argument("--state")
    listing.add_argument("--template")
    listing.add_argument("--limit", type=int, default=100)
    for name, text in (("show", "show a workflow and draw its DAG with job states"), ("cancel", "cancel a workflow"),
                       ("delete", "delete a workflow and its jobs and data"), ("resume", "start a template-state workflow")):
        one = sub.add_parser(name, help=text)
        one.add_argument("uuid")
    for command in {id(p): p for p in sub.choices.values()}.values():     # "instantiate" is an alias
        add_client_arguments(command)
    return parser


def run(args: argparse.Namespace) -> None:
    client = make_client(args)
    command = {"instantiate": "start"}.get(args.command, args.command)
    if command == "add-template":
        body = {**read_template(args.file), "new_version": args.new_version}
        if args.name:
            body["name"] = args.name
        doc = client.call("POST", "/templates", body)
        print_json(doc) if args.json else print(f"template {doc['name']} version {doc['version']}: "
                                                f"{doc['nvertices']} jobs, {doc['nedges']} data edges")
    elif command == "templates":
        items = client.call("GET", "/templates")["items"]
        print_json(items) if args.json else print_table(items, ("name", "version", "nvertices", "nedges", "workflows",
                                                                "description", "ts_def"))
    elif command == "show-template":
        doc = client.call("GET", f"/templates/{args.name}", query={"version": args.version})
        if args.json:
            print_json(doc)
            return
        print(f"{doc['name']} version {doc['version']}: {doc['description']}")
        print_table(doc["spec"]["vertices"], ("name", "jobtype", "noop", "priority", "timelimit", "payload"))
        print()
        print_table(doc["spec"]["edges"], ("id", "source", "target", "datatag", "datatype", "name", "dirpath"))
    elif command == "delete-template":
        print(f"deleted {', '.join(client.call('DELETE', f'/templates/{args.name}')['deleted'])}")
    elif command == "export-template":
        doc = client.call("GET", f"/templates/{args.name}", query={"version": args.version, "format": args.format})
        if args.output:
            Path(args.output).write_text(doc[args.format])
        else:
            sys.stdout.write(doc[args.format])
    elif command == "start":
        body = {"template": args.template, "version": args.version, "name": args.name,
                "description": args.description, "state": args.state, "inputs": parse_pairs(args.input, "--input"),
                "overrides": _overrides(args.override), "filenames": args.filenames, "dirpath": args.dirpath}
        doc = client.call("POST", "/workflows", body)
        print_json(doc) if args.json else print(doc["uuid"])
    elif command == "list":
        reply = client.call("GET", "/workflows", query={"state": args.state, "template": args.template,
                                                        "limit": args.limit})
        print_json(reply) if args.json else print_table(
            reply["items"], ("uuid", "state", "name", "template", "template_version", "ndone", "njobs", "ts_def", "ts_sto"))
    elif command == "show":
        doc = client.call("GET", f"/workflows/{args.uuid}")
        if args.json:
            print_json(doc)
            return
        print(f"workflow {doc['uuid']}  {doc['name']}  [{doc['state']}]  template {doc['template']} "
              f"v{doc['template_version']}  {doc['ndone']}/{doc['njobs']} done")
        if doc.get("error"):
            print(f"  {doc['error']}")
        print()
        for line in draw(doc, sys.stdout.isatty()):
            print(line)
        if doc["data"]:
            print()
            print_table(doc["data"], ("source", "target", "datatag", "state", "dirpath", "name"))
    elif command in ("cancel", "resume"):
        path = "cancel" if command == "cancel" else "start"
        doc = client.call("POST", f"/workflows/{args.uuid}/{path}")
        print_json(doc) if args.json else print(f"workflow {doc['uuid']} is {doc['state']}")
    elif command == "delete":
        client.call("DELETE", f"/workflows/{args.uuid}")
        print(f"deleted workflow {args.uuid}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_command(run, args)


if __name__ == "__main__":
    sys.argv[0] = PROG
    main()
