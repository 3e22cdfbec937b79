"""Diagnosis: the line that says why a job failed (the errors view groups by it: p3s.failures)."""
from __future__ import annotations

import re

ERROR_WORDS = re.compile(r"error|exception|fatal|traceback|abort|denied|not found|no such|killed|segmentation",
                         re.IGNORECASE)
MAX_SCAN = 20000              # jobs read at most for the errors view (p3s.failures)
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
