"""Operators' bulk actions on jobs: rerun (as a new attempt) and kill, one job or all matching a filter.

Each job is changed by its own conditional write through the lifecycle, so a job that changed
state meanwhile is skipped (and said so), never half-changed; a kill -9 in the middle leaves every
job either done or untouched. ``dry_run`` only counts, for the confirmation a person is asked.
"""
from __future__ import annotations

from typing import Any

from p3s import events, slices, states
from p3s.errors import ApiError, invalid
from p3s.jobs import JobService
from p3s.lifecycle import RETRY_RESET
from p3s.states import IllegalTransition

MAX_BULK = 10000
RERUNNABLE = states.JOB_UNSUCCESSFUL | {states.CANCELLED}
KILLABLE = frozenset({states.TEMPLATE, states.DEFINED}) | states.JOB_ACTIVE


def _select(jobs: JobService, query: dict, allowed: frozenset[str]) -> tuple[int, list[dict]]:
    wanted = query.get("state", {}).get("$in") if isinstance(query.get("state"), dict) else None
    if wanted is not None:
        bad = [s for s in wanted if s not in allowed]
        if bad:
            raise invalid("state", f"{bad[0]} jobs cannot be changed this way (only {', '.join(sorted(allowed))})")
    narrowed = {"$and": [query, {"state": {"$in": sorted(allowed)}}]}
    total = jobs.collection.count_documents(narrowed)
    if total > MAX_BULK:
        raise ApiError(413, f"{total} jobs match; at most {MAX_BULK} per request (narrow the filter)")
    docs = list(jobs.collection.find(narrowed, {"state": 1, "workflow": 1, "pilot": 1}))
    return total, docs


async def rerun(jobs: JobService, query: dict, who: str, dry_run: bool = False) -> dict[str, Any]:
    """Put unsuccessful or cancelled jobs matching ``query`` back to ``defined`` as a fresh attempt."""
    total, docs = _select(jobs, query, RERUNNABLE)
    if dry_run:
        return {"matched": total, "done": [], "skipped": []}
    done, skipped = [], []
    for n, doc in enumerate(docs):
        if n % slices.SLICE == slices.SLICE - 1:
            await slices.pause()           # thousands of writes: let other requests run between slices
        if doc.get("workflow"):
            skipped.append({"uuid": doc["_id"], "reason": f"part of workflow {doc['workflow']}: resume the workflow"})
            continue
        try:
            jobs.lifecycle.move_job(doc["_id"], states.DEFINED, sources={doc["state"]},
                                    set_={**RETRY_RESET, "error": None, "attempts": 0, "stdout_tail": None,
                                          "stderr_tail": None})
            done.append(doc["_id"])
        except (IllegalTransition, ApiError) as exc:
            skipped.append({"uuid": doc["_id"], "reason": str(exc)})
    if done:
        events.record("job.rerun", f"{who} reran {len(done)} job(s)", data={"jobs": done[:100], "by": who})
    return {"matched": total, "done": done, "skipped": skipped}


async def kill(jobs: JobService, query: dict, who: str, dry_run: bool = False) -> dict[str, Any]:
    """Cancel matching jobs not yet dispatched; ask the pilots of dispatched or running ones to stop."""
    total, docs = _select(jobs, query, KILLABLE)
    if dry_run:
        return {"matched": total, "done": [], "skipped": []}
    done, skipped = [], []
    for n, doc in enumerate(docs):
        if n % slices.SLICE == slices.SLICE - 1:
            await slices.pause()
        try:
            jobs.kill(doc["_id"])
            done.append(doc["_id"])
        except (IllegalTransition, ApiError) as exc:
            skipped.append({"uuid": doc["_id"], "reason": str(exc)})
    if done:
        events.record("job.bulk_kill", f"{who} killed or cancelled {len(done)} job(s)",
                      data={"jobs": done[:100], "by": who}, severity="warning")
    return {"matched": total, "done": done, "skipped": skipped}
