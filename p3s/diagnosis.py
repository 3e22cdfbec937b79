"""Diagnosis: the line that says why a job failed, and failures grouped for the errors view."""
from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from p3s import models, states
from p3s.models import utcnow

ERROR_WORDS = re.compile(r"error|exception|fatal|traceback|abort|denied|not found|no such|killed|segmentation",
                         re.IGNORECASE)
MAX_SCAN = 20000              # jobs read at most for one errors view
EXAMPLES = 5                  # example jobs per group
GROUPINGS = ("exit_code", "error_line", "host")


def error_line(job: dict, width: int = 200) -> str:
    """The first stderr line that looks like an error, else stderr's last line, else the error field."""
    lines = [line.strip() for line in (job.get("stderr_tail") or "").splitlines() if line.strip()]
    line = next((x for x in lines if ERROR_WORDS.search(x)), lines[-1] if lines else "")
    line = line or job.get("error") or ""
    return line if len(line) <= width else line[:width - 1] + "…"


def failure_reason(job: dict) -> str:
    """Why a job ended unsuccessfully, in one line: its error and its stderr's telling line."""
    reason = job.get("error") or job.get("state", "")
    line = error_line({"stderr_tail": job.get("stderr_tail")})
    return f"{reason}: {line}" if line and line not in reason else reason


def errors(seconds: int, by: tuple[str, ...] = ("exit_code", "host"), jobtype: str | None = None) -> dict[str, Any]:
    """Unsuccessful jobs that ended in the last ``seconds``, grouped by job type and ``by``.

    Each group has its count, first and last end, and up to EXAMPLES example jobs (newest first).
    """
    since = utcnow() - _dt.timedelta(seconds=seconds)
    query: dict[str, Any] = {"ts_sto": {"$gte": since}, "state": {"$in": sorted(states.JOB_UNSUCCESSFUL)}}
    if jobtype:
        query["jobtype"] = jobtype
    fields = {"jobtype": 1, "state": 1, "exit_code": 1, "host": 1, "error": 1, "stderr_tail": 1, "ts_sto": 1,
              "name": 1}
    cursor = models.Job._get_collection().find(query, fields).sort("ts_sto", -1).limit(MAX_SCAN + 1)
    groups: dict[tuple, dict] = {}
    scanned = 0
    for job in cursor:
        scanned += 1
        if scanned > MAX_SCAN:
            break
        values = {"exit_code": job.get("exit_code"), "error_line": error_line(job), "host": job.get("host") or ""}
        key = (job.get("jobtype", ""), job["state"], *(values[b] for b in by))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"jobtype": job.get("jobtype", ""), "state": job["state"],
                                   **{b: values[b] for b in by}, "count": 0, "last": job["ts_sto"],
                                   "first": job["ts_sto"], "examples": []}
        group["count"] += 1
        group["first"] = job["ts_sto"]
        if len(group["examples"]) < EXAMPLES:
            group["examples"].append({"uuid": job["_id"], "name": job.get("name", ""),
                                      "error_line": values["error_line"]})
    items = sorted(groups.values(), key=lambda g: (-g["count"], g["jobtype"]))
    return {"since": since, "seconds": seconds, "by": list(by), "total": min(scanned, MAX_SCAN),
            "truncated": scanned > MAX_SCAN, "items": items}
