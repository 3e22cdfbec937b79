"""Results in view: what a job produced — the files it wrote to ``$P3S_OUTPUT_DIR`` and its output
data files — listed, served and shown, and the newest results of every job type.

Files are served only from under the configured ``result_dirs`` (resolved, symbolic links
followed, as the job logs are), only regular files, never as HTML: images as themselves (SVG with
a policy that lets no script run and no resource load), text as text, anything else as a download.
"""
from __future__ import annotations

import json
import os
import stat
import urllib.parse
from pathlib import Path
from typing import Any

from p3s import auth, models, states
from p3s.errors import ApiError, invalid, not_found
from p3s.models import utcnow
from p3s.server.base import ApiHandler, jsonable

MAX_FILES = 200                  # listed per job
MAX_SERVED = 32 << 20            # bytes
SUMMARY_MAX = 256 << 10          # a summary.json larger than this is listed, not read
IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
TEXTS = (".txt", ".log", ".json", ".csv", ".out", ".err", ".yaml", ".yml", ".md")
# For every served file: nothing in it may run, load anything, or be framed by another site.
FILE_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox; frame-ancestors 'self'"


_RESOLVED: dict[int, tuple[list[Path], Path]] = {}


def roots(config: Any) -> list[Path]:
    """The result roots, resolved on first use (the server does it at start) and never again: a link
    made later does not widen them."""
    return _resolved(config)[0]


def _resolved(config: Any) -> tuple[list[Path], Path]:
    found = _RESOLVED.get(id(config))
    if found is None:
        found = _RESOLVED[id(config)] = ([Path(os.path.expanduser(d)).resolve() for d in config.result_dirs],
                                         Path(os.path.realpath(config.data_path)))
    return found


def allowed(path: str | os.PathLike, config: Any) -> Path | None:
    """The resolved path when it lies under a configured result root, else None. Nothing under the
    server's own data directory (its database, its token) is ever a result."""
    result_roots, data_dir = _resolved(config)
    real = Path(path).resolve()
    if real == data_dir or real.is_relative_to(data_dir):
        return None
    return real if any(real == root or real.is_relative_to(root) for root in result_roots) else None


def kind_of(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if os.path.basename(name) == "summary.json":
        return "summary"
    return "image" if ext in IMAGES else "text" if ext in TEXTS else "file"


def _read_summary(path: Path) -> Any:
    try:
        if path.stat().st_size > SUMMARY_MAX:
            return {"error": f"summary.json is larger than {SUMMARY_MAX} bytes; download it"}
        return json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError) as exc:
        return {"error": f"summary.json is not readable JSON: {exc}"}


def outputs(job: dict, config: Any) -> dict[str, Any]:
    """The job's output directory listing (when readable here) and its output data files."""
    uuid = job["_id"]
    out: dict[str, Any] = {"job": uuid, "jobtype": job.get("jobtype"), "state": job.get("state"),
                           "output_dir": job.get("output_dir"), "files": [], "summary": None, "readable": False,
                           "ts_sto": job.get("ts_sto"), "age_s": None, "data": []}
    if job.get("ts_sto"):
        out["age_s"] = round((utcnow() - job["ts_sto"]).total_seconds(), 1)
    base = allowed(job["output_dir"], config) if job.get("output_dir") else None
    if base is not None and base.is_dir():
        out["readable"] = True
        for dirpath, dirnames, filenames in os.walk(base):
            if out.get("truncated"):
                break
            dirnames.sort()
            for name in sorted(filenames):
                if len(out["files"]) >= MAX_FILES:
                    out["truncated"] = True
                    break
                full = Path(dirpath) / name
                try:
                    info = full.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                rel = full.relative_to(base).as_posix()
                out["files"].append({"name": rel, "size": info.st_size, "mtime": info.st_mtime, "kind": kind_of(rel),
                                     "url": f"/api/v1/jobs/{uuid}/outputs/{urllib.parse.quote(rel, safe='')}"})
                if rel == "summary.json":
                    out["summary"] = _read_summary(full)
    for doc in models.DataFile._get_collection().find({"source_job": uuid},
                                                      {"name": 1, "dirpath": 1, "state": 1, "datatag": 1}):
        path = os.path.join(doc.get("dirpath") or "", doc["name"])
        readable = bool(doc.get("dirpath")) and allowed(path, config) is not None and os.path.isfile(path)
        out["data"].append({"uuid": doc["_id"], "name": doc["name"], "dirpath": doc.get("dirpath"),
                            "state": doc.get("state"), "datatag": doc.get("datatag"), "kind": kind_of(doc["name"]),
                            "url": f"/api/v1/data/{doc['_id']}/content" if readable else None})
    return out


def serve(handler: ApiHandler, path: Path) -> None:
    """Send one file with a safe content type and policy; 404 for what is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise not_found("file", path.name) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise not_found("file", path.name)
        # Checked again on the file actually opened: a directory swapped for a link meanwhile gains nothing.
        opened = f"/proc/self/fd/{handle.fileno()}"
        if os.path.exists(opened) and allowed(os.readlink(opened), handler.server.config) is None:
            raise ApiError(403, f"{path} is outside the result directories this server may read")
        if info.st_size > MAX_SERVED:
            raise ApiError(413, f"{path.name} is {info.st_size} bytes; the monitor serves at most {MAX_SERVED}")
        data = handle.read(MAX_SERVED)
    ext = path.suffix.lower()
    if ext in IMAGES:
        handler.set_header("Content-Type", IMAGES[ext])
    elif ext in TEXTS:
        handler.set_header("Content-Type", "text/plain; charset=utf-8")
    else:
        handler.set_header("Content-Type", "application/octet-stream")
        handler.set_header("Content-Disposition", "attachment")
    handler.set_header("Content-Security-Policy", FILE_CSP)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Cross-Origin-Resource-Policy", "same-origin")
    handler.finish(data)


class JobOutputsHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "What a job produced: the files in its $P3S_OUTPUT_DIR (when the server can read "
                              "it under result_dirs), its summary.json, and its output data files",
                   "response": "Outputs"}}

    def get(self, uuid: str) -> None:
        self.reply(jsonable(outputs(self.server.jobs.get(uuid), self.server.config)))


class JobOutputFileHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "One file of a job's $P3S_OUTPUT_DIR (images as themselves, text as text, "
                              "anything else as a download)", "response": "OpenAPI"}}

    def get(self, uuid: str, name: str) -> None:
        parts = name.split("/")
        if not name or "\0" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise invalid("path", f"{name!r} is not a relative path inside the job's output directory")
        job = self.server.jobs.get(uuid)
        if not job.get("output_dir"):
            raise not_found("output directory of job", uuid)
        base = allowed(job["output_dir"], self.server.config)
        if base is None:
            raise ApiError(403, f"{job['output_dir']} is outside the result directories this server may read")
        real = (base / name).resolve()
        if not real.is_relative_to(base) or allowed(real, self.server.config) is None:
            raise ApiError(403, f"{name} leads outside the job's output directory")
        serve(self, real)


class DataContentHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "The content of a data file, when it lies under result_dirs", "response": "OpenAPI"}}

    def get(self, uuid: str) -> None:
        doc = models.DataFile._get_collection().find_one({"_id": uuid}, {"name": 1, "dirpath": 1})
        if doc is None:
            raise not_found("data file", uuid)
        if not doc.get("dirpath"):
            raise not_found("content of data file", uuid)
        path = os.path.join(doc["dirpath"], doc["name"])
        real = allowed(path, self.server.config)
        if real is None:
            raise ApiError(403, f"{path} is outside the result directories this server may read")
        serve(self, real)


class LatestResultsHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Per job type, the newest finished job's outputs and their age",
                   "query": {"jobtype": "Only this job type."}, "response": "LatestResults"}}

    async def get(self) -> None:
        wanted = self.arg("jobtype")
        names = sorted({t for (state, t), n in self.server.lifecycle.counters.jobs.items()
                        if state == states.FINISHED and n > 0 and t != "noop"})
        if wanted is not None:
            names = [n for n in names if n == wanted]
        items = []
        # Kept in memory (p3s.latest): one read by id per type, however many jobs finished.
        for job in await self.server.latest.latest(names):
            item = outputs(job, self.server.config)
            item["name"] = job.get("name")
            items.append(item)
        self.reply(jsonable({"items": items}))


class FreshnessHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Per job type: ETA and policies, backlog, predicted wait, turnaround p50/p95, "
                              "share within ETA and dropped jobs over 10 min, 1 h and 24 h; workflows' "
                              "turnaround per template; files the injector dropped", "response": "Freshness"}}

    def get(self) -> None:
        self.reply(self.server.freshness.report())


class AdmissionHandler(ApiHandler):
    roles = {"GET": auth.READ}
    doc = {"GET": {"summary": "Would the jobs for data arriving now (or at `arrived`) be admitted, or shed? "
                              "The injector asks this before it starts a workflow",
                   "query": {"template": "Template whose root jobs to judge.", "jobtype": "Or one job type.",
                             "priority": "The job's priority (with jobtype).",
                             "site": "The site the job is restricted to (with jobtype).",
                             "arrived": "Seconds since the epoch."},
                   "response": "Admission", "x-requires-one-of": ["template", "jobtype"]}}
    query_schemas = {"priority": {"type": "integer", "minimum": -(1 << 31), "maximum": (1 << 63) - 1},
                     "arrived": {"type": "number", "minimum": 0, "maximum": 32503680000, "exclusiveMaximum": True}}

    def get(self) -> None:
        from p3s import dag, schema

        raw = self.arg("arrived")
        arrived = schema.Field("arrived", "time", "").clean(raw, "arrived") if raw is not None else utcnow()
        if self.arg("template") is not None:
            spec = dag.Template.from_dict(self.server.templates.get(self.arg("template"))["spec"])
            vertices = [{"jobtype": spec.vertices[v].jobtype, "priority": spec.vertices[v].priority,
                         "eta": spec.vertices[v].eta} for v in _first_jobs(spec)]
        elif self.arg("jobtype") is not None:
            vertices = [{"jobtype": self.arg("jobtype"), "priority": self.int_arg("priority", 0, -(1 << 31)),
                         "site": self.arg("site") or ""}]
        else:
            raise invalid("template", "give a template or a jobtype")
        self.reply(self.server.freshness.admission(vertices, arrived))


def _first_jobs(template: Any) -> list[str]:
    """The vertices that run first: roots, and the children of NOOP roots (through NOOP chains)."""
    out, todo, seen = [], list(template.roots()), set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if template.vertices[name].noop:
            todo.extend(template.children(name))
        else:
            out.append(name)
    return out


ROUTES = [
    ("/freshness", FreshnessHandler),
    ("/freshness/admission", AdmissionHandler),
    ("/results/latest", LatestResultsHandler),
    ("/jobs/{uuid}/outputs", JobOutputsHandler),
    ("/data/{uuid}/content", DataContentHandler),
    ("/jobs/{uuid}/outputs/{name}", JobOutputFileHandler),    # a sub-directory's slashes as %2F
]
