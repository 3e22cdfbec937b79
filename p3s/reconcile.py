"""Start-up reconciliation: after a crash, jobs, pilots and counters are made to agree again.

The job documents are the truth about ownership (the claim writes the owner there, in its one
conditional write). At start the server: releases jobs dispatched to pilots that are no longer
alive (no attempt counted), ends jobs running on such pilots as ``pilot_lost`` (retried when they
have attempts left), and rewrites the current job and state of each live pilot from the jobs.
Then (``reconcile_workflows``) a workflow whose job ended for good unsuccessfully or was dropped
(stale, shed), but that a kill left ``defined``/``running`` or with the job's dependents still
waiting, is ended ``failed``/``dropped`` and those dependents cancelled, as it would have been.
Once per database (``retry_interrupted``), jobs an older p3s left ended with attempts left in the
last day (it ended a job and retried it in two writes, and a kill could come between) go back to
``defined``.
Every change is a conditional write, so another server sharing the database is not overruled.
"""
from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

from p3s import events, models, states
from p3s.errors import ApiError
from p3s.kept import kept_collection
from p3s.lifecycle import RETRY_RESET, Lifecycle, equals, will_retry
from p3s.models import utcnow
from p3s.states import IllegalTransition

log = logging.getLogger("p3s.reconcile")


def reconcile(lifecycle: Lifecycle) -> dict[str, int]:
    """Make jobs and pilots agree; returns how many of each kind of repair were made."""
    done = {"released": 0, "pilot_lost": 0, "pilots": 0}
    # Jobs first, then pilots: a pilot registers before it claims, so no job read here can belong
    # to a pilot that is alive but missing from the set read next.
    active = list(models.Job._get_collection().find({"state": {"$in": sorted(states.JOB_ACTIVE)}},
                                                    {"pilot": 1, "state": 1}))
    alive = {d["_id"]: d for d in models.Pilot._get_collection().find(
        {"state": {"$in": sorted(states.PILOT_ALIVE)}}, {"state": 1, "job": 1})}
    held: dict[str, str] = {}
    for job in active:
        owner = job.get("pilot")
        if owner in alive:
            held[owner] = job["_id"]
            continue
        if job["state"] == states.DISPATCHED:
            if lifecycle.release_job(job["_id"], owner, f"its pilot {owner} was gone when the server started",
                                     sources={states.DISPATCHED}) is not None:
                done["released"] += 1
            continue
        try:
            lifecycle.end_job(job["_id"], states.PILOT_LOST, sources={states.RUNNING},
                              where={"pilot": equals(owner)},
                              set_={"error": f"its pilot {owner} was gone when the server started"})
        except (IllegalTransition, ApiError):
            continue
        done["pilot_lost"] += 1
        events.record("job.pilot_lost", f"job {job['_id']} was running on pilot {owner}, gone at start-up",
                      job=job["_id"], pilot=owner, severity="warning")
    for uuid, doc in alive.items():
        job = held.get(uuid)
        target = states.P_RUNNING if job else states.IDLE
        if doc.get("job") == job and doc["state"] == target:
            continue
        try:
            lifecycle.move_pilot(uuid, target, set_={"job": job})
            done["pilots"] += 1
        except (IllegalTransition, ApiError):
            continue
    if any(done.values()):
        log.warning("start-up reconciliation: %s", done)
    return done


RETRY_GAP_CLOSED = "retry_gap_closed"       # the marker (in ``kept``) of a database retry_interrupted has seen
RETRY_WINDOW = 86400.0      # seconds: a job ended longer ago than this is not retried (its results are late)


def retry_interrupted(lifecycle: Lifecycle) -> int:
    """Retry the jobs an older p3s left ended with attempts left in the last RETRY_WINDOW; once per
    database (a marker in ``kept`` says it was done: this p3s ends and retries a job in one write,
    so none can appear later). An older job stays as it was shown all along: its results would
    come days late, and nobody expects it to run again. Returns how many it retried."""
    kept = kept_collection()
    if kept.find_one({"_id": RETRY_GAP_CLOSED}) is not None:
        return 0
    since = utcnow() - _dt.timedelta(seconds=RETRY_WINDOW)
    retried = 0
    # ts_sto first: on the embedded store the day's ended jobs drive the query, not every failed one
    for job in list(models.Job._get_collection().find(
            {"ts_sto": {"$gte": since}, "state": {"$in": sorted(states.JOB_RETRYABLE)}, "max_attempts": {"$gt": 1}},
            {"state": 1, "attempts": 1, "max_attempts": 1})):
        if not will_retry(job):
            continue
        try:
            lifecycle.move_job(job["_id"], states.DEFINED, sources={job["state"]}, set_=dict(RETRY_RESET),
                               where={"attempts": equals(job.get("attempts") or 0)})
        except (IllegalTransition, ApiError):
            continue
        retried += 1
        events.record("job.retry", f"job {job['_id']} was left {job['state']} with attempts left by a server "
                      "killed before retrying it; retrying", job=job["_id"], severity="warning")
    kept.update_one({"_id": RETRY_GAP_CLOSED}, {"$set": {"retried": retried}}, upsert=True)
    if retried:
        log.warning("%d jobs an older p3s left ended with attempts left are retried", retried)
    return retried


def reconcile_workflows(engine: Any) -> int:
    """Finish what a kill interrupted between a workflow job's bad end and the workflow's end (or
    the cancelling of the job's dependents); returns how many workflows were settled again.
    ``engine`` is the p3s.workflow.WorkflowEngine; settling again what is settled changes nothing."""
    jobs = models.Job._get_collection()
    open_ = {d["_id"] for d in models.Workflow._get_collection().find(
        {"state": {"$in": [states.WF_DEFINED, states.WF_RUNNING]}}, {"_id": 1})}
    # A dropped or failed workflow may still have waiting jobs on other branches: look at those too,
    # in case the kill came while the dependents of the bad job were being cancelled.
    open_ |= {d["workflow"] for d in jobs.find({"state": {"$in": [states.TEMPLATE, states.DEFINED]},
                                                "workflow": {"$ne": None}}, {"workflow": 1})}
    if not open_:
        return 0
    repaired = set()
    for job in jobs.find({"workflow": {"$in": sorted(open_)},
                          "state": {"$in": sorted(states.JOB_UNSUCCESSFUL | states.JOB_DROPPED)}}):
        if job["state"] in states.JOB_UNSUCCESSFUL and will_retry(job):
            continue
        engine.settle(job["workflow"], job)      # idempotent: what is done already stays as it is
        repaired.add(job["workflow"])
    return len(repaired)

