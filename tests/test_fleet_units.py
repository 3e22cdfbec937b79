"""The fleet's pure parts: host lists, fan-out, placement, pilot options, backend discovery."""
from __future__ import annotations

import io
import threading
import time

import pytest

from p3s.backends import BackendNotFound, available, load
from p3s.backends.base import HostResult
from p3s.fleet.fanout import Progress, run_on
from p3s.fleet.nodes import NodesError, expand, fold
from p3s.fleet.topup import place
from p3s.fleet.up import PilotOptionsError, PilotPlan, check_pilot_options


def test_host_lists():
    assert expand("wn[01-03]") == ["wn01", "wn02", "wn03"]
    assert expand("wn[01-05,08],gpu[1-2]") == ["gpu1", "gpu2", "wn01", "wn02", "wn03", "wn04", "wn05", "wn08"]
    assert expand("wn[01-10]!wn[02-09]") == ["wn01", "wn10"]
    assert expand("wn[01-10]", exclude="wn[03-10]") == ["wn01", "wn02"]
    assert fold(["wn01", "wn02", "wn03", "wn07"]) == "wn[01-03,07]"
    for bad, message in (("wn[01-20", "missing bracket"), ("wn[3-1]", "bad range"), ("a;b", "bad host name"),
                         ("-oProxyCommand=x", "bad host name"), ("", "names no hosts")):
        with pytest.raises(NodesError, match=message.replace("[", r"\[")):
            expand(bad)


def test_fan_out_is_bounded_and_errors_are_values():
    running, peak, lock = [0], [0], threading.Lock()

    def action(node: str) -> HostResult:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if node == "wn03":
            raise RuntimeError("backend bug")
        return HostResult(node)

    results = run_on([f"wn{i:02d}" for i in range(1, 9)], action, fanout=3, progress=Progress(io.StringIO()))
    assert peak[0] == 3 and list(results) == [f"wn{i:02d}" for i in range(1, 9)]
    assert results["wn03"].error == "RuntimeError: backend bug" and all(r.ok for n, r in results.items() if n != "wn03")


def test_progress_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        run_on(["a", "b"], HostResult, progress=Progress(stream), label="up")
    assert "up: 2/2 hosts" in terminal.getvalue() and pipe.getvalue() == ""


def test_placement_prefers_the_least_loaded_hosts():
    load = {"wn01": (3, 0.1), "wn02": (0, 0.9), "wn03": (0, 0.2)}
    assert place(4, load, {}, None) == ({"wn03": 2, "wn02": 2}, 0)
    assert place(5, load, {"wn01": 3, "wn02": 0, "wn03": 0}, 2) == ({"wn03": 2, "wn02": 2}, 1)


def test_pilot_options_are_checked_with_the_pilots_parser():
    check_pilot_options(["-c", "0", "-p", "30", "--jobtypes", "reco"])
    for args, message in ((["-c", "x"], "invalid int value"), (["--ho", "x"], "-H/--host is set by p3s-fleet"),
                          (["--token=t"], "--token is set"), (["-S", "http://x"], "--pilot-server"),
                          (["stray"], "unrecognized arguments")):
        with pytest.raises(PilotOptionsError, match=message):
            check_pilot_options(args)
    launch = PilotPlan("http://s:1", "tok", "lab", "/logs/{node}", extra=["-c", "0"]).launch("wn07")
    assert launch.pilot_args[:4] == ["-S", "http://s:1", "-H", "wn07"] and "/logs/wn07" in launch.pilot_args
    assert launch.pilot_args[-4:] == ["-s", "lab", "-c", "0"] and "tok" not in launch.pilot_args
    assert launch.stderr_dir == "/logs/wn07" and launch.token == "tok"


def test_backends_are_entry_points():
    assert {"local", "ssh"} <= set(available())
    assert load("local").name == "local" and load("ssh").name == "ssh"
    with pytest.raises(BackendNotFound, match="no backend 'condor'"):
        load("condor")
