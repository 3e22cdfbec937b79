"""`p3s-injector` as it runs in production: a real injector process watching real directories,
against a real server (inotify and polling, partial files, duplicates, sampling, backlog drop,
server restarts, back-filling), plus its building blocks with a fake clock."""
from __future__ import annotations

import json
import logging
import os
import socket
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from p3s import injector as inj
from p3s.pilot.client import Client, P3SError

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = (REPO / "conf" / "dags" / "1filter.yaml").read_text()


# --- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def wf_server(server):
    """The server with the TXT data type and the 1filter template (input data tag INPTXT)."""
    server.ok("POST", "/datatypes", {"name": "TXT", "ext": ".txt"}, 201)
    server.ok("POST", "/templates", {"yaml": TEMPLATE}, 201)
    return server


class InjectorProcess:
    def __init__(self, server, log_path: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
        self.log_path = log_path
        self._log = open(log_path, "w")
        command = [sys.executable, "-m", "p3s.cli.injector", "-S", server.url, "--token", server.token,
                   "--template", "1filter", "--datatype", "TXT", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log, env=env, cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, server) -> None:
        server.wait_for(lambda: "input files bound to INPTXT" in self.log() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.log()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(15)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def injector(tmp_path):
    started: list[InjectorProcess] = []

    def start(server, *args: str) -> InjectorProcess:
        process = InjectorProcess(server, tmp_path / f"injector{len(started)}.log", *args)
        started.append(process)
        process.wait_ready(server)
        return process

    yield start
    for process in started:
        process.close()


def run_once(server, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    command = [sys.executable, "-m", "p3s.cli.injector", "-S", server.url, "--token", server.token,
               "--template", "1filter", "--datatype", "TXT", "--once", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def records(server, name: str) -> list[dict]:
    return server.ok("GET", f"/data?name={name}")["items"]


def registered(server, name: str) -> dict | None:
    """The injector's own data record of ``name``."""
    mine = [r for r in records(server, name) if "injector" in r["metadata"]]
    assert len(mine) <= 1, mine
    return mine[0] if mine else None


def workflows_of(server, name: str) -> list[str]:
    """Workflows that took ``name`` as their input."""
    return [r["workflow"] for r in records(server, name) if r["workflow"] and r["datatag"] == "INPTXT"]


def events(server, kind: str) -> list[dict]:
    return server.ok("GET", f"/events?kind={kind}&limit=1000")["items"]


def decided(server, name: str) -> dict | None:
    """The injector's event about file ``name`` (accepted, skipped or error)."""
    for kind in ("injector.accepted", "injector.skipped", "injector.error"):
        for event in events(server, kind):
            if event["data"].get("file") == name:
                return event
    return None


# --- end to end ---------------------------------------------------------------------------------
def test_inotify_new_files_partial_writes_duplicates_and_events(wf_server, injector, tmp_path):
    server = wf_server
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "early.txt").write_text("TEST before the injector\n")
    process = injector(server, "-d", str(inbox), "--pattern", "*.txt", "--settle", "0.5")
    assert "(inotify" in process.log()

    server.wait_for(lambda: workflows_of(server, "early.txt"))      # present at start: settled, then taken
    (inbox / "a.txt").write_text("TEST one\nno\n")
    (inbox / "ignored.log").write_text("not a match\n")
    (inbox / ".hidden.txt").write_text("a temporary file\n")
    server.wait_for(lambda: workflows_of(server, "a.txt"))

    # a file written in two parts, kept open in between, is taken only once closed
    with open(inbox / "partial.txt", "w") as handle:
        handle.write("TEST part one\n")
        handle.flush()
        time.sleep(1.5)                                               # three times --settle
        assert records(server, "partial.txt") == []
        handle.write("TEST part two\n")
    server.wait_for(lambda: workflows_of(server, "partial.txt"))
    assert registered(server, "partial.txt")["size"] == len("TEST part one\nTEST part two\n")

    # a file registered already is a duplicate: not registered again, no workflow
    server.ok("POST", "/data", {"name": "dup.txt", "dirpath": "/elsewhere"}, 201)
    (inbox / "dup.txt").write_text("TEST again\n")
    (inbox / "empty.txt").touch()
    server.wait_for(lambda: decided(server, "dup.txt") and decided(server, "empty.txt"))
    assert len(records(server, "dup.txt")) == 1 and workflows_of(server, "dup.txt") == []
    assert decided(server, "dup.txt")["data"]["reason"] == "duplicate"
    empty = registered(server, "empty.txt")
    assert empty["state"] == "skipped" and "small" in empty["comment"]
    assert records(server, "ignored.log") == [] and records(server, ".hidden.txt") == []

    # the data record, the workflow and the event tell the same story
    mine = registered(server, "a.txt")
    [workflow] = workflows_of(server, "a.txt")
    assert mine["state"] == "defined" and mine["dirpath"] == str(inbox) and mine["datatype"] == "TXT"
    assert mine["size"] == len("TEST one\nno\n") and mine["metadata"]["workflow"] == workflow
    detail = server.ok("GET", f"/workflows/{workflow}")
    assert detail["template"] == "1filter" and detail["state"] in ("defined", "running")
    filter_job = next(j for j in detail["jobs"] if j["vertex"] == "filter")
    assert server.job(filter_job["uuid"])["env"]["INPTXT"] == str(inbox / "a.txt")
    assert {d["name"] for d in detail["data"]} == {"a.txt", "a.filter.OUTTXT.txt"}
    accepted = decided(server, "a.txt")
    assert accepted["kind"] == "injector.accepted" and accepted["source"] == "injector"
    assert accepted["data"]["workflow"] == workflow and accepted["data"]["data"] == mine["uuid"]

    assert process.stop(signal.SIGTERM) == 0
    assert events(server, "injector.started") and events(server, "injector.stopped")
    assert "3 accepted, 2 skipped (duplicate 1, small 1)" in events(server, "injector.stopped")[0]["message"]


def test_polling_every_nth_file_and_settle(wf_server, injector, tmp_path):
    server = wf_server
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    process = injector(server, "-d", str(inbox), "--poll", "0.2", "--settle", "0.6", "--every", "2")
    assert "(polling" in process.log()
    names = [f"f{i}.txt" for i in range(1, 7)]
    for name in names:
        (inbox / name).write_text(f"TEST {name}\n")
        time.sleep(0.05)
    server.wait_for(lambda: all(decided(server, name) for name in names))
    for i, name in enumerate(names):
        mine = registered(server, name)
        if i % 2 == 0:
            assert mine["state"] == "defined" and len(workflows_of(server, name)) == 1, name
        else:
            assert mine["state"] == "skipped" and "--every 2" in mine["comment"], name
            assert workflows_of(server, name) == [] and decided(server, name)["data"]["reason"] == "sampled"

    # a file that keeps growing is taken only when its size has been stable for --settle seconds
    with open(inbox / "growing.txt", "w") as handle:
        for _ in range(6):
            handle.write("TEST more\n")
            handle.flush()
            time.sleep(0.25)
            assert records(server, "growing.txt") == []
    server.wait_for(lambda: workflows_of(server, "growing.txt"))   # the 7th candidate: taken
    assert registered(server, "growing.txt")["size"] == 6 * len("TEST more\n")
    assert process.stop(signal.SIGINT) == 0


def test_once_backfills_with_a_rate_limit_and_skips_duplicates(wf_server, tmp_path):
    server = wf_server
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(5):
        (inbox / f"run{i}.txt").write_text("TEST\n")
    (inbox / "old.txt").write_text("TEST\n")
    server.ok("POST", "/data", {"name": "old.txt"}, 201)
    done = run_once(server, "-d", str(inbox), "--max-per-window", "2", "--window", "60", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accepted": 2, "skipped": {"duplicate": 1, "rate": 3}, "errors": 0,
                                       "waiting": 0}
    states = {f"run{i}.txt": registered(server, f"run{i}.txt")["state"] for i in range(5)}
    assert sorted(states.values()) == ["defined", "defined", "skipped", "skipped", "skipped"]
    assert "rate: at most 2 file(s) per 60 s" in registered(server, "run4.txt")["comment"]
    assert len(server.ok("GET", "/workflows")["items"]) == 2

    again = run_once(server, "-d", str(inbox))                        # nothing is reconsidered
    assert again.returncode == 0 and "0 accepted, 6 skipped (duplicate 6)" in again.stdout
    assert len(server.ok("GET", "/workflows")["items"]) == 2


def test_once_fraction_is_reproducible(wf_server, tmp_path):
    server = wf_server
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"np04_{i:03d}.txt" for i in range(12)]
    for name in names:
        (inbox / name).write_text("TEST\n")
    done = run_once(server, "-d", str(inbox), "--fraction", "0.5")
    assert done.returncode == 0, done.stderr
    expected = {name for name in names if inj.hash_fraction(name) < 0.5}
    assert 0 < len(expected) < len(names)
    assert {name for name in names if workflows_of(server, name)} == expected


def test_backlog_drops_new_files_until_it_clears(wf_server, injector, tmp_path):
    server = wf_server
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    server.submit(*[{"payload": "true", "jobtype": "filter"} for _ in range(5)])
    server.submit({"payload": "true", "jobtype": "other"})
    injector(server, "-d", str(inbox), "--settle", "0.3", "--backlog-limit", "3", "--backlog-type", "filter")
    (inbox / "b1.txt").write_text("TEST\n")
    server.wait_for(lambda: decided(server, "b1.txt"))
    dropped = registered(server, "b1.txt")
    assert dropped["state"] == "skipped" and dropped["comment"].startswith("injector: backlog: 5 defined filter jobs")
    assert workflows_of(server, "b1.txt") == []
    event = decided(server, "b1.txt")
    assert event["kind"] == "injector.skipped" and event["severity"] == "warning"
    assert event["data"]["reason"] == "backlog"

    server.ok("DELETE", "/jobs?jobtype=filter&state=defined")
    (inbox / "b2.txt").write_text("TEST\n")
    server.wait_for(lambda: workflows_of(server, "b2.txt"))


def test_server_restart_loses_no_file_and_makes_no_duplicate(wf_server, injector, tmp_path):
    server = wf_server
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    process = injector(server, "-d", str(inbox), "--settle", "0.3", "--max-backoff", "0.5", "--timeout", "2")
    (inbox / "r1.txt").write_text("TEST\n")
    server.wait_for(lambda: workflows_of(server, "r1.txt"))
    server.stop()
    for name in ("r2.txt", "r3.txt"):
        (inbox / name).write_text("TEST\n")
    time.sleep(1.5)
    assert "retrying with backoff" in process.log()
    server.start(port=server.port)
    server.wait_for(lambda: workflows_of(server, "r2.txt") and workflows_of(server, "r3.txt"), timeout=20)
    for name in ("r1.txt", "r2.txt", "r3.txt"):
        assert len(workflows_of(server, name)) == 1 and registered(server, name)["state"] == "defined"
    assert len(server.ok("GET", "/workflows")["items"]) == 3
    assert "server reachable again" in process.log()
    server.wait_for(lambda: events(server, "injector.outage"))
    assert process.stop(signal.SIGTERM) == 0


def test_stops_cleanly_while_the_server_is_away(wf_server, injector, tmp_path):
    server = wf_server
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    process = injector(server, "-d", str(inbox), "--settle", "0.3", "--max-backoff", "5")
    server.stop()
    (inbox / "x.txt").write_text("TEST\n")
    server.wait_for(lambda: "retrying with backoff" in process.log(), timeout=60)   # in its outage now
    assert process.stop(signal.SIGTERM) == 0        # a stop stuck in the backoff fails on stop()'s own wait
    assert "SIGTERM: stopping" in process.log()
    assert (inbox / "x.txt").exists()               # left for the next run, not lost


def test_configuration_errors_exit_2(wf_server, tmp_path):
    unknown = run_once(wf_server, "-d", str(tmp_path), "--template", "nosuch")
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr
    tag = run_once(wf_server, "-d", str(tmp_path), "--input-tag", "NOPE")
    assert tag.returncode == 2 and "NOPE" in tag.stderr
    missing = run_once(wf_server, "-d", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_gives_up_after_max_outage(wf_server, tmp_path):
    with socket.socket() as probe:                  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "p3s.cli.injector", "-S", f"http://127.0.0.1:{port}", "--token", "x",
               "--template", "1filter", "--once", "-d", str(tmp_path), "--max-outage", "1", "--max-backoff", "0.3"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=30)
    assert result.returncode == 1 and "unreachable for more than 1 s" in result.stderr


# --- lost replies, resumption (in process, around a real client) ---------------------------------
class LossyClient(Client):
    """Sends each request, but reports the server unreachable for the first reply of each kind
    listed: the request went through, its answer was lost."""

    def __init__(self, url: str, token: str, lose: set[tuple[str, str]]) -> None:
        super().__init__(url, token, retries=0, timeout=5)
        self.lose = set(lose)

    def call(self, method, path, body=None, query=None, timeout=None, retries=None):
        reply = super().call(method, path, body, query, timeout, retries)
        if (method, path) in self.lose:
            self.lose.discard((method, path))
            raise P3SError(0, "connection reset (simulated)")
        return reply


class RefusingClient(Client):
    """Answers ``status`` instead of sending requests that ``refuse(method, path, body)`` picks."""

    def __init__(self, url: str, token: str, status: int, refuse) -> None:
        super().__init__(url, token, retries=0, timeout=5)
        self.status, self.refuse = status, refuse

    def call(self, method, path, body=None, query=None, timeout=None, retries=None):
        if self.refuse(method, path, body):
            raise P3SError(self.status, "refused (simulated)")
        return super().call(method, path, body, query, timeout, retries)


def backfill(server, inbox: Path, lose: set = frozenset(), client: Client | None = None) -> inj.Injector:
    options = inj.Options(dirs=[str(inbox)], template="1filter", datatype="TXT", once=True, max_backoff=0.2)
    injector = inj.Injector(options, client or LossyClient(server.url, server.token, lose))
    assert injector.run() == 0
    return injector


def test_lost_replies_make_no_duplicate_record_or_workflow(wf_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, "p3s.injector")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "lost.txt").write_text("TEST\n")
    done = backfill(wf_server, inbox, {("POST", "/data"), ("POST", "/workflows")})
    assert done.summary()["accepted"] == 1
    assert "the registration went through before the outage" in caplog.text
    assert "exists already (made before the outage)" in caplog.text
    assert len(workflows_of(wf_server, "lost.txt")) == 1
    assert registered(wf_server, "lost.txt")["metadata"]["workflow"] == workflows_of(wf_server, "lost.txt")[0]
    assert len(wf_server.ok("GET", "/workflows")["items"]) == 1


def test_a_registered_file_without_workflow_is_resumed(wf_server, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "halfway.txt").write_text("TEST\n")
    # what an injector stopped between registration and instantiation leaves behind
    wf_server.ok("POST", "/data", {"name": "halfway.txt", "dirpath": str(inbox), "state": "defined",
                                   "metadata": {"injector": {"id": "x", "template": "1filter"}}}, 201)
    done = backfill(wf_server, inbox)
    assert done.summary() == {"accepted": 1, "skipped": {}, "errors": 0, "waiting": 0}
    assert len(workflows_of(wf_server, "halfway.txt")) == 1
    assert len([r for r in records(wf_server, "halfway.txt") if r["workflow"] is None]) == 1
    assert decided(wf_server, "halfway.txt")["data"]["resumed"] is True


# --- building blocks ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sampler_every_fraction_and_window():
    every = inj.Sampler(every=3)
    assert [every.sample(f"f{i}") is None for i in range(7)] == [True, False, False, True, False, False, True]
    fraction = inj.Sampler(fraction=0.25)
    taken = [n for n in (f"run{i}" for i in range(2000)) if fraction.sample(n) is None]
    assert 400 < len(taken) < 600
    assert taken == [n for n in (f"run{i}" for i in range(2000)) if inj.Sampler(fraction=0.25).sample(n) is None]
    clock = Clock()
    window = inj.Sampler(max_per_window=2, window=10, clock=clock)
    assert [window.admit(), window.admit(), window.admit()] == [True, True, False]
    clock.now += 10.5
    assert window.admit() and window.admit() and not window.admit()


def test_tracker_settles_or_waits_for_close(tmp_path):
    clock = Clock()
    tracker = inj.FileTracker(["*.dat"], settle=2, clock=clock)
    still, growing, open_, other = (tmp_path / n for n in ("still.dat", "growing.dat", "open.dat", "x.txt"))
    for path in (still, growing, open_, other):
        path.write_text("x")
        tracker.found(str(path))
    tracker.written(str(open_))
    assert str(other) not in tracker.pending
    assert tracker.due() == [] and tracker.next_check() == clock.now + 2
    clock.now += 1
    growing.write_text("xx")
    assert tracker.due() == []
    clock.now += 1.5
    assert tracker.due() == [str(still)]                   # growing changed 1.5 s ago; open waits for close
    clock.now += 1
    assert tracker.due() == [str(growing)]
    clock.now += 100
    assert tracker.due() == []
    tracker.closed(str(open_))
    assert tracker.due() == [str(open_)]
    tracker.closed(str(still))                             # handed over once only
    assert tracker.due() == [] and not tracker.pending


def test_falls_back_to_polling_without_inotify(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "inotify_simple", None)
    watcher = inj.make_watcher([str(tmp_path)], None)
    assert isinstance(watcher, inj.PollWatcher) and watcher.interval == inj.FALLBACK_POLL


def test_input_tag_of_template():
    spec = {"vertices": [{"name": "IN", "noop": True}, {"name": "f", "noop": False}, {"name": "OUT", "noop": True}],
            "edges": [{"id": "o", "source": "f", "target": "OUT", "datatag": "OUTTXT"},
                      {"id": "i", "source": "IN", "target": "f", "datatag": "INPTXT"}]}
    assert inj.input_tag_of(spec) == "INPTXT"


def test_a_refused_workflow_is_reported_and_its_record_skipped(wf_server, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.txt").write_text("TEST\n")
    client = RefusingClient(wf_server.url, wf_server.token, 422, lambda m, p, b: p == "/workflows")
    done = backfill(wf_server, inbox, client=client)
    assert done.summary()["errors"] == 1
    record = registered(wf_server, "bad.txt")
    assert record["state"] == "skipped" and "workflow refused" in record["comment"]
    assert decided(wf_server, "bad.txt")["kind"] == "injector.error"


def test_a_file_the_server_keeps_failing_does_not_block_the_others(wf_server, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a_poison.txt").write_text("TEST\n")
    (inbox / "b_good.txt").write_text("TEST\n")
    client = RefusingClient(wf_server.url, wf_server.token, 500,
                            lambda m, p, b: p == "/data" and m == "POST" and b["name"] == "a_poison.txt")
    options = inj.Options(dirs=[str(inbox)], template="1filter", datatype="TXT", once=True, max_backoff=0.1)
    injector = inj.Injector(options, client)
    thread = threading.Thread(target=injector.run)
    thread.start()
    try:
        wf_server.wait_for(lambda: workflows_of(wf_server, "b_good.txt"))
    finally:
        injector.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert injector.summary()["waiting"] == 1 and records(wf_server, "a_poison.txt") == []
