"""Alarms: rules that each say what they check, when each started firing, and acknowledgements.

A rule is a function of the server's in-memory figures returning findings (one per thing it
watches: a job type, a site, a host…). ``AlarmBoard.check`` runs every rule, notes when each
finding started firing (``since``) and when it cleared, records both as events, and attaches any
acknowledgement: an operator may silence an alarm for a time, saying who and why; the
acknowledgement is shown to everyone and stored (collection ``alarms``), like ``since``, so that a
restart forgets neither. Other parts add rules by appending to ``RULES``.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import logging
import time
from typing import Any, Callable, Iterable

import mongoengine as me

from p3s import events, models, states
from p3s.errors import invalid, not_found
from p3s.models import utcnow
from p3s.web.stats import UNSUCCESSFUL

log = logging.getLogger("p3s.alarms")
MAX_ACK_MINUTES = 7 * 24 * 60


class AlarmState(me.Document):
    """Since when an alarm fires, and its acknowledgement (an alarm never seen firing has none)."""

    key = me.StringField(primary_key=True)
    since = me.DateTimeField(null=True)
    ack = me.DictField(null=True)                # {by, reason, until, at}
    meta = {"collection": "alarms", "auto_create_index": False}


@dataclasses.dataclass
class Finding:
    """One thing a rule watches, firing or not."""

    key: str                 # stable identity, e.g. "failure_rate:reco"
    name: str                # what a person reads, e.g. "failure rate of reco"
    checks: str              # what the rule checks, in words
    firing: bool
    value: Any
    threshold: str
    message: str


Rule = Callable[[Any], Iterable[Finding]]


def _live_pilots(counters: Any, site: str | None = None) -> int:
    return sum(n for (state, s), n in counters.pilots.items()
               if state in states.PILOT_ALIVE and (site is None or s == site))


def failure_rates(server: Any) -> Iterable[Finding]:
    """Per job type: share of its jobs ending unsuccessfully in the last 10 minutes."""
    config, stats = server.config, server.stats
    now = int(time.time() // 60)
    bad_by_type: collections.Counter = collections.Counter()
    good_by_type: collections.Counter = collections.Counter()
    for minute in range(now - 9, now + 1):                 # one pass over the last 10 minutes
        for (event, jobtype), n in stats.counts.get(minute, {}).items():
            if event in UNSUCCESSFUL:
                bad_by_type[jobtype] += n
            elif event == "finished":
                good_by_type[jobtype] += n
    for jobtype in sorted(set(bad_by_type) | set(good_by_type)):
        bad, good = bad_by_type[jobtype], good_by_type[jobtype]
        rate = bad / (bad + good)
        yield Finding(
            f"failure_rate:{jobtype}", f"failure rate of {jobtype or '(no type)'}",
            f"share of {jobtype} jobs ending failed, timelimit, pilot_lost or nonstarter in the last 10 min "
            f"is above {config.alarm_failure_rate:g}, with at least {config.alarm_failure_min} of them",
            bad >= config.alarm_failure_min and rate > config.alarm_failure_rate, round(rate, 3),
            f"<= {config.alarm_failure_rate:g} (or < {config.alarm_failure_min} unsuccessful)",
            f"{bad} of {bad + good} {jobtype} jobs unsuccessful in the last 10 minutes")


def lost_pilots(server: Any) -> Iterable[Finding]:
    """Per site: pilots declared lost in the last hour (each lost pilot counted once)."""
    limit = server.config.alarm_lost_pilots
    for site, lost in sorted(server.stats.lost_by_site(3600).items()):
        label = site or "(no site)"
        yield Finding(f"lost_pilots:{site}", f"pilots lost at {label}",
                      f"pilots of site {label} declared lost (silent for pilot_lost_timeout) in the last hour "
                      f"are more than {limit}", lost > limit, lost, f"<= {limit}",
                      f"{lost} pilot(s) of site {label} lost in the last hour")


def no_pilots(server: Any) -> Iterable[Finding]:
    """Jobs wait while no pilot is alive, whatever the sites."""
    counters = server.lifecycle.counters
    waiting = sum(n for (state, _t), n in counters.jobs.items() if state == states.DEFINED)
    alive = _live_pilots(counters)
    yield Finding("no_pilots", "no live pilots", "jobs wait defined while no pilot of any site is alive",
                  waiting > 0 and alive == 0, alive, "> 0 while jobs wait",
                  f"{alive} live pilot(s), {waiting} job(s) waiting")


def site_pilots(server: Any) -> Iterable[Finding]:
    """Per configured site: live pilots below its nominal count."""
    shortfall, counters = server.config.alarm_pilot_shortfall, server.lifecycle.counters
    for site in models.Site._get_collection().find({}, {"pilots": 1}):
        name, nominal = site["_id"], site.get("pilots", 0)
        if not nominal:
            continue
        alive = _live_pilots(counters, name)
        floor = nominal * (1 - shortfall)
        yield Finding(f"site_pilots:{name}", f"pilots at {name}",
                      f"live pilots of site {name} are at least {floor:g} ({nominal} nominal less "
                      f"{shortfall:.0%})", alive < floor, alive, f">= {floor:g} (nominal {nominal})",
                      f"{alive} live pilots at site {name}, nominal {nominal}")


def backlog(server: Any) -> Iterable[Finding]:
    limit, counters = server.config.alarm_backlog, server.lifecycle.counters
    waiting = sum(n for (state, _t), n in counters.jobs.items() if state == states.DEFINED)
    yield Finding("backlog", "backlog of defined jobs", f"jobs waiting defined are at most {limit}",
                  waiting > limit, waiting, f"<= {limit}", f"{waiting} jobs waiting for a pilot")


def black_holes(server: Any) -> Iterable[Finding]:
    """Hosts whose last N jobs all failed, until an operator clears them."""
    n = server.config.blackhole_jobs
    for row in server.hosts.flagged():
        yield Finding(f"blackhole:{row['host']}", f"black-hole host {row['host']}",
                      f"a host's last {n} jobs in a row were unsuccessful (failed, nonstarter, timelimit); "
                      "fires until an operator clears the host", True, row["streak"], f"< {n} in a row",
                      f"host {row['host']}: {row['reason']}" + ("; drained" if row["drained"] else ""))


RULES: list[Rule] = [no_pilots, failure_rates, lost_pilots, black_holes, site_pilots, backlog]


class AlarmBoard:
    """Runs the rules, keeps since-when and acknowledgements, stored across restarts."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.collection = AlarmState._get_collection()
        self.states: dict[str, dict] = {}
        self.last: list[dict] = []
        self.as_of: _dt.datetime | None = None

    def load(self) -> None:
        self.states = {d["_id"]: d for d in self.collection.find({})}

    def _save(self, key: str, **fields: Any) -> None:
        self.collection.update_one({"_id": key}, {"$set": fields}, upsert=True)
        self.states.setdefault(key, {"_id": key}).update(fields)

    def check(self) -> list[dict]:
        """Every rule's findings, firing first; notes changes of state as events."""
        now = utcnow()
        items = []
        for rule in RULES:
            try:
                findings = list(rule(self.server))
            except Exception:
                log.exception("alarm rule %s failed", getattr(rule, "__name__", rule))
                continue
            for f in findings:
                items.append(self._item(f, now))
        seen = {i["key"] for i in items}
        for key, state in list(self.states.items()):
            if key not in seen and state.get("since") is not None:   # what it watched is gone: cleared
                self._save(key, since=None)
                events.record("alarm.cleared", f"alarm {key} cleared", data={"alarm": key})
        items.sort(key=lambda a: (a["status"] != "alarm", a["silenced"], a["name"]))
        self.last, self.as_of = items, now
        return items

    def _item(self, f: Finding, now: _dt.datetime) -> dict:
        state = self.states.get(f.key, {})
        since = state.get("since")
        if f.firing and since is None:
            since = now
            self._save(f.key, since=now)
            events.record("alarm.firing", f"alarm: {f.message}", severity="error", data={"alarm": f.key})
        elif not f.firing and since is not None:
            since = None
            self._save(f.key, since=None)
            events.record("alarm.cleared", f"alarm {f.name} cleared: {f.message}", data={"alarm": f.key})
        ack = state.get("ack")
        if ack and ack.get("until") and ack["until"] <= now:
            ack = None
        return {"key": f.key, "name": f.name, "checks": f.checks, "status": "alarm" if f.firing else "ok",
                "value": f.value, "threshold": f.threshold, "message": f.message, "since": since,
                "ack": ack, "silenced": bool(f.firing and ack)}

    def acknowledge(self, key: str, who: str, reason: str, minutes: int) -> dict:
        """Silence alarm ``key`` for ``minutes``; the reason and the name are shown to all."""
        if not reason.strip():
            raise invalid("reason", "say why the alarm is silenced")
        if not 1 <= minutes <= MAX_ACK_MINUTES:
            raise invalid("minutes", f"must be between 1 and {MAX_ACK_MINUTES}, got {minutes}")
        known = {i["key"] for i in (self.last or self.check())} | set(self.states)
        if key not in known:
            raise not_found("alarm", key)
        now = utcnow()
        ack = {"by": who, "reason": reason.strip(), "at": now, "until": now + _dt.timedelta(minutes=minutes)}
        self._save(key, ack=ack)
        events.record("alarm.ack", f"alarm {key} acknowledged by {who} for {minutes} min: {reason.strip()}",
                      data={"alarm": key, "minutes": minutes})
        return self.find(key)

    def unacknowledge(self, key: str, who: str) -> dict:
        if not (self.states.get(key) or {}).get("ack"):
            raise not_found("acknowledgement of alarm", key)
        self._save(key, ack=None)
        events.record("alarm.unack", f"acknowledgement of alarm {key} withdrawn by {who}", data={"alarm": key})
        return self.find(key)

    def find(self, key: str) -> dict:
        for item in self.check():
            if item["key"] == key:
                return item
        state = self.states.get(key, {})
        return {"key": key, "name": key, "status": "ok", "since": None, "ack": state.get("ack"), "silenced": False}


def summary(items: list[dict]) -> dict[str, int]:
    return {"firing": sum(i["status"] == "alarm" and not i["silenced"] for i in items),
            "silenced": sum(i["silenced"] for i in items)}


WITHIN_ETA_MIN = 5        # jobs with an ETA ended in 10 minutes before a type's share can alarm


def within_eta(server: Any) -> Iterable[Finding]:
    """Per job type with an ETA (p3s.freshness): the share of its jobs finished within their ETA over
    10 minutes, against the type's alarm_within_eta (else the configuration's)."""
    for name, row in server.freshness.report()["types"].items():
        window = row["windows"]["10m"]
        share, threshold = window["share_within_eta"], row["alarm_within_eta"]
        if not row["eta"] or share is None:
            continue
        dropped = sum(window["dropped"].values())
        yield Finding(f"within_eta:{name}", f"within ETA: {name}",
                      f"share of {name} jobs finished within their ETA ({row['eta']} s from data arrival) in the "
                      f"last 10 min is at least {threshold:g}, with at least {WITHIN_ETA_MIN} jobs counted",
                      window["done"] + dropped >= WITHIN_ETA_MIN and share < threshold, share,
                      f">= {threshold:g} (ETA {row['eta']} s)",
                      f"{window['within_eta']} of {window['done']} {name} jobs within {row['eta']} s in the last "
                      f"10 minutes; {dropped} dropped")


RULES.append(within_eta)
