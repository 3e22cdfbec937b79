"""Fixtures: a real p3s server process on a free port, on the embedded store or on the MongoDB
named by ``P3S_TEST_DB``: a URI (``P3S_TEST_DB=mongodb://localhost:27017``), or ``wire`` for the
MongoDB wire-protocol server of tests/wire_server.py, which the session starts itself."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import signal
import subprocess
import sys
import inspect
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from p3s.cli.common import stop_processes

REPO = Path(__file__).resolve().parent.parent
TEST_DB = os.environ.get("P3S_TEST_DB", "")

# The original system's job file example (its numbers are strings), verbatim.
SEED_EXAMPLE = """[
    {
        "name":         "p3s_job",
        "timeout":      "100",
        "jobtype":      "type1",
        "payload":      "/home/p3s/my_executable.py",
        "env":          {"P3S":"TRUE","MYVAR":"FALSE"},
        "priority":     "1",
        "state":        "defined"
    }
]
"""

# Fast timings so that reaper behaviour shows within seconds.
FAST = {"reaper_period": 1, "pilot_lost_timeout": 3, "timelimit_grace": 1, "long_poll_max": 5,
        "long_poll_wait": 2, "heartbeat": 1, "checkpoint_period": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WireServer:
    """tests/wire_server.py (nx-27017 with the adapter) as a subprocess on a free port."""

    def __init__(self, *options: str) -> None:
        self.options = list(options)
        self.dir = Path(tempfile.mkdtemp(prefix="p3s-wire-"))
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WireServer":
        import pymongo

        self.log = open(self.dir / "wire.log", "a")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "wire_server.py"), "--port", str(self.port),
                                      "--data-dir", str(self.dir / "data"), *self.options],
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500)
                client.admin.command("ping")
                client.close()
                return self
            except pymongo.errors.PyMongoError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"wire server did not start:\n{(self.dir / 'wire.log').read_text()[-3000:]}")
                time.sleep(0.1)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            stop_processes([self.proc], 10)
            self.proc = None
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def wire_database():
    """With P3S_TEST_DB=wire, the wire server every test's database lives on."""
    global TEST_DB
    if TEST_DB != "wire":
        yield None
        return
    wire = WireServer()
    try:
        wire.start()
        TEST_DB = wire.uri
        yield wire
    finally:
        TEST_DB = "wire"
        wire.stop()


def memory_database(tmp_path: Path, name: str = "p3s_unit"):
    """An open in-memory mongomock database for unit tests (nothing kept), closed after use."""
    from p3s.store import Database
    database = Database("memory:", tmp_path, name)
    database.open()
    try:
        yield database
    finally:
        database.close()


def pass_database(tmp_path: Path, name: str = "p3s_unit"):
    """An open database of this pass for unit tests: a fresh one on the suite's MongoDB in its
    wire pass, else the embedded store in ``tmp_path``; dropped (MongoDB) and closed after use."""
    from p3s.store import Database
    uri = test_database_uri()
    database = Database(uri, tmp_path, name)
    database.open()
    try:
        yield database
    finally:
        if uri:
            database.drop()
        database.close()


def on_mongodb() -> bool:
    """Whether the tests' servers use a MongoDB (a real one or the wire server)."""
    return bool(TEST_DB)


def test_database_uri() -> str:
    """A fresh database on the MongoDB of P3S_TEST_DB (kept query options), or '' for embedded."""
    if not TEST_DB:
        return ""
    base, _, options = TEST_DB.partition("?")
    scheme, _, rest = base.partition("://")
    hosts = rest.split("/", 1)[0]
    name = f"p3s_test_{uuid.uuid4().hex[:12]}"
    return f"{scheme}://{hosts}/{name}" + (f"?{options}" if options else "")


class Reply:
    def __init__(self, status: int, body: Any, headers: Any) -> None:
        self.status, self.body, self.headers = status, body, headers

    @property
    def error(self) -> dict:
        return self.body["error"]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


class ServerProcess:
    """A p3s-server subprocess and a tiny HTTP helper to talk to it."""

    def __init__(self, tmp: Path, settings: dict[str, Any], auth: bool = True, db: str | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.data_dir = tmp / "data"
        self.config_path = tmp / "p3s.yaml"
        self.db = db if db is not None else test_database_uri()
        self.config_path.write_text(yaml.safe_dump({"data_dir": str(self.data_dir), "db": self.db,
                                                    "log_level": "DEBUG", **FAST, **settings}))
        self.auth = auth
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.token = ""
        self.log_path = tmp / "server.log"
        self.extra_env: dict[str, str] = {}      # e.g. the crash hook of p3s.faults
        self.prefix: list[str] = []              # e.g. prlimit and its options

    def start(self, port: int = 0) -> "ServerProcess":
        args = [*self.prefix, sys.executable, "-m", "p3s.cli.server", "--config", str(self.config_path),
                "--port", str(port)]
        if not self.auth:
            args.append("--no-auth")
        env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
        env.update(self.extra_env)
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, cwd=REPO)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.wait(5)
            raise RuntimeError(f"server did not start: {line!r}\n{self.log_path.read_text()[-3000:]}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        configured = [t["token"] for t in self.settings.get("tokens", []) if t["role"] == "admin" and "token" in t]
        if configured:
            self.token = configured[0]
        elif self.auth:
            self.token = (self.data_dir / "token").read_text().strip()
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        code = self.proc.wait(15)
        self.proc.stdout.close()
        self._log.close()
        self.proc = None
        return code

    def restart(self, sig: int = signal.SIGTERM) -> None:
        port = self.port
        self.stop(sig)
        self.start(port)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             raw: bytes | None = None, timeout: float = 30) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + "/api/v1" + path, data=data, method=method)
        token = self.token if token is None else token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, json.loads(response.read() or b"null"), response.headers)
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                decoded = json.loads(payload)
            except ValueError:
                decoded = payload.decode(errors="replace")
            return Reply(exc.code, decoded, exc.headers)

    # shorthands used throughout the tests
    def ok(self, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        reply = self.call(method, path, body, **kw)
        assert reply.status == status, reply
        return reply.body

    def submit(self, *jobs: dict) -> list[dict]:
        return self.ok("POST", "/jobs", list(jobs), 201)["items"]

    def register(self, **fields: Any) -> str:
        return self.ok("POST", "/pilots", {"host": "wn01", **fields}, 201)["pilot"]["uuid"]

    def claim(self, pilot: str, wait: float = 0, **body: Any) -> dict:
        return self.ok("POST", f"/pilots/{pilot}/request", {"wait": wait, **body})

    def report(self, pilot: str, event: str, **fields: Any) -> Reply:
        return self.call("POST", f"/pilots/{pilot}/events", {"event": event, **fields})

    def job(self, uuid_: str) -> dict:
        return self.ok("GET", f"/jobs/{uuid_}")

    def wait_for(self, predicate, timeout: float = 15, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(interval)

    def drop(self) -> None:
        if self.db:
            import pymongo

            client = pymongo.MongoClient(self.db)
            client.drop_database(client.get_default_database().name)
            client.close()


@pytest.fixture
def make_server(tmp_path: Path):
    """Factory: ``make_server(auth=True, **settings)`` starts a server; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def factory(auth: bool = True, db: str | None = None, **settings: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"s{len(started)}", settings, auth, db)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.stop(signal.SIGKILL)
        server.drop()


@pytest.fixture
def server(make_server, request) -> ServerProcess:
    """A server with the FAST settings, or those of the test's ``@pytest.mark.server_settings(...)``
    (e.g. a long ``pilot_lost_timeout`` where pilots stay silent for a while and loss is not tested)."""
    marker = request.node.get_closest_marker("server_settings")
    return make_server(**(marker.kwargs if marker else {}))


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "server_settings(**settings): settings of the `server` fixture's server")


# --- scheduling: which worker runs what, and what the second pass leaves out ------------------
# `make test` runs each pass with pytest-xdist (`-n`, `--dist loadgroup`): tests go to workers one
# by one, so every fixture a test uses must be private to it (free ports, tmp_path), which they
# are. The exceptions are the module-scoped daemons: a Slurm cluster, a Grid Engine cell and an
# sshd cost seconds to start, so all the tests of one daemon go to one worker (an xdist_group)
# and share it as they do without xdist.
DAEMON_GROUPS = {"slurm": "slurm", "sge": "sge", "sshd": "sshd"}

# Modules whose tests never reach the database a pass is about: pure units (no store at all),
# or tests that open the embedded store by name whatever P3S_TEST_DB says. The wire pass would
# run them a second time unchanged, so it leaves them out. A test of these modules that uses a
# server (the `server`/`make_server` fixtures, directly or through another fixture) or a module
# that reads the pass's database (TEST_DB, on_mongodb, test_database_uri) stays in both passes.
STORE_FREE_MODULES = {
    "test_dag": "DAG templates: YAML/GraphML parsing and validation, no store",
    "test_listing": "opens the embedded store (Database('')) whatever the pass",
    "test_checkpoints": "opens the embedded store (Database('')) whatever the pass",
    "test_gcpolicy": "the garbage collector policy: no database",
    "test_broker_unit": "opens an in-memory embedded store (Database('memory:')) whatever the pass",
    "test_batch_units": "sbatch/qsub command lines and parsers, no store",
    "test_fleet_units": "host lists, fan-out, placement, option checks: no store",
    "test_pilot_bare": "the pilot package's imports, the zipapp and procfs: no store "
                       "(its test with a server stays in both passes)",
}
SERVER_FIXTURES = {"server", "make_server"}
_DB_NAMES = ("TEST_DB", "on_mongodb", "test_database_uri")


def _reads_the_pass_database(module: Any) -> bool:
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return True
    return any(name in source for name in _DB_NAMES)


@pytest.hookimpl(tryfirst=True)       # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        for fixture, group in DAEMON_GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
    if not TEST_DB:
        return
    kept, left_out = [], []
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module else ""
        if (name in STORE_FREE_MODULES and not SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
                and not _reads_the_pass_database(module)):
            left_out.append(item)
        else:
            kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_report_header(config) -> str | None:
    if TEST_DB:
        return ("database pass: tests of " + ", ".join(sorted(STORE_FREE_MODULES))
                + " that use no server run in the embedded pass only (tests/conftest.py says why)")
    return None
