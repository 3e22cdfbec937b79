"""A test-only crash hook: ``P3STEST_CRASH_AT=<point>`` makes the server exit at once (as kill -9
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
