"""p3s.gcpolicy: what it tells /summary costs the loop nothing between freezes."""
from __future__ import annotations

import gc

from p3s import gcpolicy


def test_the_frozen_count_is_taken_again_only_after_a_freeze(monkeypatch):
    # The issue: every /summary walked every frozen object (gc.get_freeze_count), ~5 ms of the
    # loop per call with 10^4 jobs ready, and scripts and monitors poll /summary.
    walks = []
    count = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: walks.append(1) or count())
    gcpolicy.settle(force=True)
    first = gcpolicy.summary()["frozen"]
    assert gcpolicy.summary()["frozen"] == first and len(walks) == 1     # (frozen objects freed since: not counted)
    kept = [[n] for n in range(1000)]          # lists: tracked by the collector
    gcpolicy.settle(force=True)
    assert gcpolicy.summary()["frozen"] >= first + len(kept) // 2 and len(walks) == 2   # counted again
