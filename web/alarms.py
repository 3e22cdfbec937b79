"""The monitor's alarm list, each check with its threshold from the configuration."""
from __future__ import annotations

from typing import Any

from p3s import models, states
from p3s.config import Config
from p3s.lifecycle import Counters
from p3s.web.stats import Stats

UNSUCCESSFUL = ("failed", "timelimit", "pilot_lost")


def _alarm(name: str, firing: bool, value: Any, threshold: Any, message: str) -> dict[str, Any]:
    return {"name": name, "status": "alarm" if firing else "ok", "value": value, "threshold": threshold,
            "message": message}


def check(config: Config, counters: Counters, stats: Stats) -> list[dict[str, Any]]:
    """Every alarm check, firing or not (sites come from the database: a handful of records)."""
    out = []
    for site in models.Site._get_collection().find({}, {"pilots": 1}):
        name, nominal = site["_id"], site.get("pilots", 0)
        alive = sum(counters.pilots[(state, name)] for state in states.PILOT_ALIVE)
        floor = nominal * (1 - config.alarm_pilot_shortfall)
        out.append(_alarm(f"pilots at {name}", alive < floor, alive, f">= {floor:g} (nominal {nominal})",
                          f"{alive} live pilots at site {name}, nominal {nominal}"))
    lost = stats.recent(["pilot_lost"], 3600)
    out.append(_alarm("pilots lost in the last hour", lost > config.alarm_lost_pilots, lost,
                      f"<= {config.alarm_lost_pilots}", f"{lost} pilots lost in the last hour"))
    backlog = sum(n for (state, _t), n in counters.jobs.items() if state == states.DEFINED)
    out.append(_alarm("backlog of defined jobs", backlog > config.alarm_backlog, backlog,
                      f"<= {config.alarm_backlog}", f"{backlog} jobs waiting for a pilot"))
    jobtypes = {t for (_e, t) in (k for c in stats.counts.values() for k in c)}
    for jobtype in sorted(jobtypes):
        bad10, good10 = stats.recent(UNSUCCESSFUL, 600, jobtype), stats.recent(["finished"], 600, jobtype)
        bad24, good24 = stats.recent(UNSUCCESSFUL, 86400, jobtype), stats.recent(["finished"], 86400, jobtype)
        if bad10 + good10 == 0:
            continue
        rate10 = bad10 / (bad10 + good10)
        rate24 = bad24 / (bad24 + good24) if bad24 + good24 else 0.0
        firing = bad10 >= config.alarm_failure_min and rate10 > config.alarm_failure_rate and rate10 > rate24
        out.append(_alarm(f"failure rate of {jobtype}", firing, round(rate10, 3),
                          f"<= {config.alarm_failure_rate:g} (24 h: {rate24:.3f})",
                          f"{bad10} of {bad10 + good10} {jobtype} jobs unsuccessful in 10 minutes"))
    return out


WITHIN_ETA_MIN = 5        # jobs with an ETA ended in 10 minutes before a type's share can alarm


def within_eta(freshness: Any) -> list[dict[str, Any]]:
    """A job type's share of jobs finished within its ETA over 10 minutes, against its threshold
    (the type's alarm_within_eta, else the configuration's)."""
    out = []
    for name, row in freshness.report()["types"].items():
        window = row["windows"]["10m"]
        share, threshold = window["share_within_eta"], row["alarm_within_eta"]
        if not row["eta"] or share is None:
            continue
        counted = window["done"] + sum(window["dropped"].values())
        firing = counted >= WITHIN_ETA_MIN and share < threshold
        out.append(_alarm(f"within ETA: {name}", firing, share, f">= {threshold:g} (ETA {row['eta']} s)",
                          f"{window['within_eta']} of {window['done']} {name} jobs within {row['eta']} s in 10 "
                          f"minutes; {sum(window['dropped'].values())} dropped"))
    return out
