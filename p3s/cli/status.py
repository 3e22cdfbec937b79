"""`p3s-status`: the totals at a glance, like condor_q's last lines — pilots and jobs by state and
type, the broker's queue, and the alarms that fire. Exit code 0 when no alarm fires (silenced ones
do not count), 3 when some do, so scripts and cron can use it."""
from __future__ import annotations

import argparse

from p3s.cli.common import add_client_arguments, make_client, paint, print_json, print_table, run_command, RESET
from p3s.states import JOB_STATES, PILOT_STATES

PROG = "p3s-status"


def _counts(counts: dict, order: tuple[str, ...]) -> str:
    parts = []
    for state in order:
        n = counts.get(state, 0)
        if n:
            colour = paint(state)
            parts.append(f"{n} {colour}{state}{RESET if colour else ''}")
    return ", ".join(parts) or "none"


def run(args: argparse.Namespace) -> None:
    client = make_client(args)
    summary = client.summary()
    alarms = client.call("GET", "/alarms")
    firing = [a for a in alarms["items"] if a["status"] == "alarm"]
    if args.json:
        print_json({"summary": summary, "alarms": alarms})
    else:
        print(f"Jobs:   {summary['jobs_total']} total: {_counts(summary['jobs'], JOB_STATES)}")
        rows = [{"type": t or "-", **{s: counts.get(s, 0) for s in JOB_STATES}, "total": sum(counts.values())}
                for t, counts in sorted(summary["jobs_by_type"].items())]
        shown = [s for s in JOB_STATES if any(r[s] for r in rows)]
        if rows:
            print_table(rows, ("type", *shown, "total"))
        print(f"Pilots: {summary['pilots_total']} total: {_counts(summary['pilots'], PILOT_STATES)}")
        sites = [{"site": s or "-", **{p: counts.get(p, 0) for p in PILOT_STATES}}
                 for s, counts in sorted(summary["pilots_by_site"].items())]
        if sites:
            print_table(sites, ("site", *PILOT_STATES))
        queue = summary.get("queue", {})
        print(f"Queue:  {queue.get('ready', 0)} job(s) ready, {queue.get('waiting_pilots', 0)} pilot(s) waiting")
        if not firing:
            print(f"Alarms: {paint('ok')}all clear{RESET if paint('ok') else ''}, as of {alarms['as_of']}")
        else:
            print(f"Alarms: {alarms['firing']} firing, {alarms['silenced']} silenced (as of {alarms['as_of']})")
            for a in firing:
                state = "silenced" if a["silenced"] else "alarm"
                note = f" [silenced by {a['ack']['by']} until {a['ack']['until']}: {a['ack']['reason']}]" \
                    if a["silenced"] else ""
                print(f"  {paint(state)}{state.upper()}{RESET if paint(state) else ''} {a['name']}: "
                      f"{a['message']} (since {a['since']}){note}")
    if alarms["firing"]:
        raise SystemExit(3)


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-status`` parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_client_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
