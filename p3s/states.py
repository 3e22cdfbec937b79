"""The state machines of jobs and pilots, each written once as a transition table.

Nothing else in p3s decides which state may follow which: ``p3s.lifecycle`` turns a table row
into the filter of one conditional database write, so an illegal change is refused (409) and
nothing is written.
"""
from __future__ import annotations

from typing import Mapping

# --- jobs -------------------------------------------------------------------------------------
TEMPLATE = "template"        # part of a workflow, not yet eligible
DEFINED = "defined"          # eligible for brokerage
DISPATCHED = "dispatched"    # claimed by a pilot, payload not yet started
RUNNING = "running"
FINISHED = "finished"        # exit code 0
FAILED = "failed"            # non-zero exit code
TIMELIMIT = "timelimit"      # ran past its time limit and was stopped
PILOT_LOST = "pilot_lost"    # its pilot stopped heartbeating
KILLED = "killed"            # stopped on request
NONSTARTER = "nonstarter"    # the payload could not be started
CANCELLED = "cancelled"      # withdrawn before it ran
STALE = "stale"              # dropped: past its deadline before it ran (or shed at admission)

JOB_STATES = (TEMPLATE, DEFINED, DISPATCHED, RUNNING, FINISHED, FAILED, TIMELIMIT,
              PILOT_LOST, KILLED, NONSTARTER, CANCELLED, STALE)
JOB_ACTIVE = frozenset({DISPATCHED, RUNNING})                      # count against jobtype limits
JOB_UNSUCCESSFUL = frozenset({FAILED, TIMELIMIT, PILOT_LOST, KILLED, NONSTARTER})
# Dropped to keep others within their ETA (p3s.freshness): not a failure, never retried.
JOB_DROPPED = frozenset({STALE})
JOB_ENDED = JOB_UNSUCCESSFUL | JOB_DROPPED | {FINISHED, CANCELLED}
# An unsuccessful end a job may be retried after, when it has attempts left (max_attempts > 1).
JOB_RETRYABLE = frozenset({FAILED, TIMELIMIT, PILOT_LOST, NONSTARTER})

# target state -> the states it may be entered from
JOB_TRANSITIONS: Mapping[str, frozenset[str]] = {
    # From an unsuccessful end: a retry (attempts left) or an operator's rerun. From dispatched or
    # running: a release (its pilot does not hold it, or never started it), no attempt counted.
    DEFINED: frozenset({TEMPLATE}) | JOB_UNSUCCESSFUL | {CANCELLED, STALE} | JOB_ACTIVE,
    TEMPLATE: frozenset({DEFINED}),
    DISPATCHED: frozenset({DEFINED}),
    RUNNING: frozenset({DISPATCHED}),
    # A job short enough to end before its first report goes straight from dispatched to its end;
    # a NOOP vertex of a workflow finishes from template without running.
    FINISHED: frozenset({TEMPLATE, DISPATCHED, RUNNING}),
    FAILED: frozenset({DISPATCHED, RUNNING}),
    TIMELIMIT: frozenset({DISPATCHED, RUNNING}),
    PILOT_LOST: frozenset({DISPATCHED, RUNNING}),
    KILLED: frozenset({DISPATCHED, RUNNING}),
    NONSTARTER: frozenset({DISPATCHED}),
    CANCELLED: frozenset({TEMPLATE, DEFINED}),
    # Shed at admission (from template, a workflow's root), past its deadline before a pilot took
    # it, or (a type's stop_running policy) while it ran.
    STALE: frozenset({TEMPLATE, DEFINED, DISPATCHED, RUNNING}),
}

# What an operator may send back to ``defined`` (a rerun); active jobs are released only by the server.
JOB_RERUN_SOURCES = frozenset({TEMPLATE, CANCELLED}) | JOB_UNSUCCESSFUL | JOB_DROPPED

# --- pilots -----------------------------------------------------------------------------------
IDLE = "idle"                # registered, between jobs
P_RUNNING = "running"        # holds a job
STOPPED = "stopped"          # exited (cycles exhausted, killed, or told to stop)
LOST = "lost"                # stopped heartbeating

PILOT_STATES = (IDLE, P_RUNNING, STOPPED, LOST)
PILOT_ALIVE = frozenset({IDLE, P_RUNNING})

PILOT_TRANSITIONS: Mapping[str, frozenset[str]] = {
    IDLE: frozenset({IDLE, P_RUNNING}),
    P_RUNNING: frozenset({IDLE, P_RUNNING}),
    STOPPED: frozenset({IDLE, P_RUNNING, LOST}),
    LOST: frozenset({IDLE, P_RUNNING}),
}


# --- workflows --------------------------------------------------------------------------------
WF_TEMPLATE = "template"     # instantiated, not started
WF_DEFINED = "defined"       # started: its root jobs are defined
WF_RUNNING = "running"       # a job of it has started
WF_FINISHED = "finished"     # every job finished
WF_FAILED = "failed"         # a job ended unsuccessfully; what depended on it was cancelled
WF_CANCELLED = "cancelled"   # cancelled on request
WF_DROPPED = "dropped"       # a job of it was dropped (stale or shed); what depended on it was cancelled

WORKFLOW_STATES = (WF_TEMPLATE, WF_DEFINED, WF_RUNNING, WF_FINISHED, WF_FAILED, WF_CANCELLED, WF_DROPPED)
WORKFLOW_ENDED = frozenset({WF_FINISHED, WF_FAILED, WF_CANCELLED, WF_DROPPED})

WORKFLOW_TRANSITIONS: Mapping[str, frozenset[str]] = {
    WF_DEFINED: frozenset({WF_TEMPLATE}),
    WF_RUNNING: frozenset({WF_DEFINED}),
    WF_FINISHED: frozenset({WF_DEFINED, WF_RUNNING}),     # all-NOOP workflows finish without running
    WF_FAILED: frozenset({WF_DEFINED, WF_RUNNING}),
    WF_CANCELLED: frozenset({WF_TEMPLATE, WF_DEFINED, WF_RUNNING}),
    WF_DROPPED: frozenset({WF_DEFINED, WF_RUNNING}),
}


class IllegalTransition(Exception):
    """A state change that the table does not allow; the API answers it with 409."""

    def __init__(self, kind: str, key: str, current: str | None, target: str) -> None:
        self.kind, self.key, self.current, self.target = kind, key, current, target
        super().__init__(f"{kind} {key} is {current}; it cannot become {target}")


def job_sources(target: str) -> frozenset[str]:
    """States a job may be in to move to ``target`` (KeyError for an unknown state)."""
    return JOB_TRANSITIONS[target]


def pilot_sources(target: str) -> frozenset[str]:
    """States a pilot may be in to move to ``target``."""
    return PILOT_TRANSITIONS[target]


def workflow_sources(target: str) -> frozenset[str]:
    """States a workflow may be in to move to ``target``."""
    return WORKFLOW_TRANSITIONS[target]


def end_state_for_exit(exit_code: int) -> str:
    """The end state of a payload that ran to completion with ``exit_code``."""
    return FINISHED if exit_code == 0 else FAILED
