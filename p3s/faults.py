"""Test-only hooks. ``P3STEST_CRASH_AT=<point>`` makes the server exit at once (as kill -9
would) when it reaches that point, so tests can interrupt a state change at its worst moment.

Unset (always, in production) it costs one dictionary look-up per call.
"""
from __future__ import annotations

import os

VARIABLE = "P3STEST_CRASH_AT"
_point = os.environ.get(VARIABLE, "")


def crash_point(name: str) -> None:
    """Exit the process now, without clean-up, if the crash hook names ``name``."""
    if _point and _point == name:
        os._exit(70)


STALL_VARIABLE = "P3STEST_STALL_SECONDS"
_stall = float(os.environ.get(STALL_VARIABLE) or 0)


def stall_point() -> None:
    """Block the calling thread (the server's loop) for ``P3STEST_STALL_SECONDS``, once, if set:
    a test stand-in for any long operation that holds the loop (called by GET /summary)."""
    global _stall
    if _stall > 0:
        import time
        seconds, _stall = _stall, 0.0
        time.sleep(seconds)
