#!/usr/bin/env python3
"""A server holding months of history: start time, memory, claims, list pages, retention.

For each size (ended jobs: 10^4 and 10^6 by default) the script writes a database directly into
the embedded store's SQLite files (BSON rows in bulk, as the server would have written them):
N ended jobs defined over the last 60 days, 10^4 defined jobs, 10^3 stopped pilots. Then it starts
``p3s-server --no-auth`` on it and prints one JSON line each for:

- ``start``: seconds from exec to "listening", cold (counters and statistics counted from the
  jobs) and again after a clean stop (counters and statistics kept), with the server's RSS;
- ``claims``: request latency p50/p99 of 100 simulated pilots (keep-alive connections), each
  reporting its last job's end and claiming the next in one request, then pausing ~1 s (a job);
  with the server's CPU per request (steadier than latency on a shared machine), its event loop's
  stalls of 20 ms or more meanwhile, and the machine's load average before and after;
- ``list``: first page (100) of the jobs list filtered by state and sorted by definition time,
  for ``defined`` (10^4 match) and ``finished`` (N match), p50/p99;
- ``pages``: summary p50 and one job's page p50;
- ``disk``: bytes of the data directory;
- ``retention``: a purge with the default policy (30 days: about half the ended jobs), its
  duration, what it removed, the archive's bytes, and the database file before and after.

- ``index_build``: the embedded engine's one-time indexing of rows it did not write (here: the
  bulk rows above; in use: a data directory of an older p3s), in this process;

Usage: .venv/bin/python bench/scale.py [--quick] [--sizes 10000,1000000] [--keep-dir DIR]
``--quick`` runs 10^4 and 10^5. The goals of issue 16: start <= 10 s, RSS <= 500 MB, claim p99
<= 10 ms, list page p99 <= 200 ms, all flat from 10^4 to 10^6.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuid_mod
from pathlib import Path

import bson
import psutil

REPO = Path(__file__).resolve().parent.parent
DEFINED = 10_000
PILOTS = 1_000
CLAIM_PILOTS = 100
CLAIM_SECONDS = 20.0
MAX_RSS_MB = float(os.environ.get("SCALE_MAX_RSS_MB", 9000))


def emit(case: str, **fields) -> None:
    print(json.dumps({"bench": "scale", "case": case, **fields}), flush=True)


def progress(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- the database, written directly ------------------------------------------------------------
def _ms(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def job_doc(i: int, now: dt.datetime, ended: bool, span_days: float, n: int) -> dict:
    """A job as the server writes it: ended ones spread over ``span_days`` in definition order."""
    if ended:
        ts_def = _ms(now - dt.timedelta(days=span_days) + dt.timedelta(days=span_days) * i / max(1, n))
    else:
        ts_def = _ms(now - dt.timedelta(seconds=3600 - i * 3600 / DEFINED))
    seq = int(ts_def.replace(tzinfo=dt.timezone.utc).timestamp() * 1e6) + i % 1000
    doc = {"_id": str(uuid_mod.UUID(int=random.getrandbits(128), version=4)), "name": f"dqm-{i}", "user": "shifter",
           "jobtype": ("evdisp", "purity", "crt")[i % 3], "payload": "/opt/dqm/run.sh --fast", "params": "",
           "env": {"P3S_INPUT_FILE": f"/data/run{i // 100}/file{i}.root"}, "priority": i % 3, "timelimit": 1000,
           "state": "defined", "site": "", "seq": seq, "input_file": f"/data/run{i // 100}/file{i}.root",
           "workflow": None, "vertex": None, "noop": False, "children": [], "n_parents": 0, "n_parents_done": 0,
           "max_attempts": 1, "attempts": 0, "pilot": None, "host": None, "pilot_site": None, "pid": None,
           "exit_code": None, "error": None, "kill_requested": False, "ts_def": ts_def, "ts_dis": None,
           "ts_sta": None, "ts_sto": None, "usage": {}, "usage_series": [], "stdout_tail": None,
           "stderr_tail": None}
    if ended:
        started = ts_def + dt.timedelta(seconds=2)
        doc.update(state="finished" if i % 10 else "failed", pilot=f"pilot-{i % PILOTS}", host=f"wn{i % 40:02d}",
                   pilot_site="np04", pid=1000 + i % 30000, exit_code=0 if i % 10 else 1, attempts=1,
                   ts_dis=_ms(ts_def + dt.timedelta(seconds=1)), ts_sta=_ms(started),
                   ts_sto=_ms(started + dt.timedelta(seconds=40)),
                   usage={"cpu_time": 38.5, "cpu_percent": 96.0, "rss": 210_000_000, "peak_rss": 250_000_000},
                   usage_series=[{"t": k * 10, "cpu": 95.0, "rss": 200_000_000 + k} for k in range(4)],
                   stdout_tail="processed 1000 events\nwrote histograms\ndone\n", stderr_tail="",
                   log_dir="/tmp/p3s/jobs")
    return doc


def pilot_doc(i: int, now: dt.datetime) -> dict:
    seen = _ms(now - dt.timedelta(days=60) * (1 - i / PILOTS))
    return {"_id": f"pilot-{i}", "host": f"wn{i % 40:02d}", "site": "np04", "pid": 5000 + i, "extra": "",
            "jobtypes": [], "state": "stopped" if i % 5 else "lost", "job": None, "njobs": 1000,
            "kill_requested": False, "kill_job": None, "version": "0.1.0", "ts_reg": seen - dt.timedelta(hours=20),
            "ts_lhb": seen, "ts_stop": seen, "usage": {}, "reason": "cycles done"}


def build(data_dir: Path, ended: int) -> float:
    """Create the store's files (as a server would), then write the rows in bulk; returns seconds."""
    from p3s.store import Database

    t0 = time.monotonic()
    database = Database("", data_dir, "p3s")
    database.open()               # collection files, key format and indexes, exactly as the server
    database.close()
    now = dt.datetime.utcnow()
    random.seed(ended)
    root = data_dir / "db" / "p3s"
    for name, docs in (("jobs", (job_doc(i, now, True, 60, ended) for i in range(ended))),
                       ("jobs", (job_doc(i, now, False, 0, DEFINED) for i in range(DEFINED))),
                       ("pilots", (pilot_doc(i, now) for i in range(PILOTS)))):
        connection = sqlite3.connect(root / name)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        batch = []
        for doc in docs:
            batch.append(("s:" + doc["_id"], bson.encode(doc)))
            if len(batch) >= 20000:
                connection.executemany("INSERT INTO documents VALUES (?, ?)", batch)
                connection.commit()
                batch = []
        connection.executemany("INSERT INTO documents VALUES (?, ?)", batch)
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
    return time.monotonic() - t0


def index_build(data_dir: Path) -> dict:
    """Forget the embedded engine's indexes and time the open that builds them again (once)."""
    from p3s.store import Database

    for name in ("jobs", "pilots"):
        connection = sqlite3.connect(data_dir / "db" / "p3s" / name)
        with connection:
            connection.execute("DELETE FROM info WHERE key = 'ix_paths'")
            if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'ix'").fetchone():
                connection.execute("DELETE FROM ix")
        connection.close()
    t0 = time.monotonic()
    database = Database("", data_dir, "p3s")
    database.open()
    opened = time.monotonic() - t0
    database.close()
    return {"seconds": round(opened, 1), "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
            "bytes": du(data_dir)}


# --- the server --------------------------------------------------------------------------------
class Server:
    def __init__(self, tmp: Path, data_dir: Path) -> None:
        self.config = tmp / "p3s.yaml"
        self.config.write_text(json.dumps({"data_dir": str(data_dir), "log_level": "WARNING", "retention_period": 0,
                                           "long_poll_max": 5, "pilot_lost_timeout": 600}))
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> float:
        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
        self.proc = subprocess.Popen([sys.executable, "-m", "p3s.cli.server", "--config", str(self.config),
                                      "--port", "0", "--no-auth"], stdout=subprocess.PIPE,
                                     stderr=open(self.log, "a"), text=True, env=env, cwd=REPO)
        self.peak_rss_mb = 0.0
        started = threading.Event()

        def watch() -> None:          # a guard for a shared machine: no server past MAX_RSS_MB
            while not started.is_set() and self.proc.poll() is None:
                try:
                    self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())
                except psutil.Error:
                    return
                if self.peak_rss_mb > MAX_RSS_MB:
                    self.proc.kill()
                    return
                time.sleep(0.5)
        threading.Thread(target=watch, daemon=True).start()
        line = self.proc.stdout.readline()
        started.set()
        if "listening on" not in line:
            raise RuntimeError(f"server did not start (peak RSS {self.peak_rss_mb} MB, limit {MAX_RSS_MB}): "
                               f"{self.log.read_text()[-2000:]}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        return time.monotonic() - t0

    def rss_mb(self) -> float:
        return round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)

    def cpu(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(600)
            self.proc.stdout.close()
            self.proc = None


class Conn:
    """One keep-alive HTTP/1.1 connection (asyncio streams; the client must not be the bottleneck)."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//", 1)[1].split(":")
        self.host, self.port = host, int(port)
        self.reader = self.writer = None

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, object, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} /api/v1{path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(data)}\r\n"
                "Content-Type: application/json\r\n\r\n").encode()
        t0 = time.perf_counter()
        self.writer.write(head + data)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        elapsed = (time.perf_counter() - t0) * 1000
        return int(status_line.split()[1]), json.loads(payload or b"null"), elapsed

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def claims(url: str) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + CLAIM_SECONDS

    async def pilot(k: int) -> None:
        nonlocal errors
        conn = Conn(url)
        status, reply, _ = await conn.call("POST", "/pilots", {"host": f"bench{k:03d}", "site": "np04"})
        uuid = reply["pilot"]["uuid"]
        last = None
        await asyncio.sleep(random.uniform(0, 1))
        while time.monotonic() < deadline:
            body: dict = {"wait": 0}
            if last:
                body["report"] = {"event": "jobstop", "job": last, "exit_code": 0}
            status, reply, ms = await conn.call("POST", f"/pilots/{uuid}/request", body)
            if status != 200:
                errors += 1
                last = None
            else:
                latencies.append(ms)
                last = (reply.get("job") or {}).get("uuid")
            await asyncio.sleep(random.uniform(0.5, 1.5))
        await conn.call("POST", f"/pilots/{uuid}/events", {"event": "stopped"})
        conn.close()

    await asyncio.gather(*(pilot(k) for k in range(CLAIM_PILOTS)))
    return {"requests": len(latencies), "errors": errors, "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99),
            "max_ms": pct(latencies, 1.0)}


async def loop_stalls(url: str, since: float) -> dict:
    """The server's event-loop stalls (p3s.loopwatch: late by 20 ms or more) since ``since``: how
    many, the longest, and the most CPU the loop's thread used in one (little CPU: the machine's)."""
    conn = Conn(url)
    _, reply, _ = await conn.call("GET", "/summary")
    conn.close()
    stalls = [s for s in reply["server"]["loop"]["stalls"] if s[0] >= since]
    return {"loop_stalls": len(stalls), "loop_stall_max_ms": max((s[1] for s in stalls), default=0),
            "loop_stall_max_cpu_ms": max((s[2] for s in stalls), default=0)}


async def timed(url: str, path: str, count: int, budget_s: float = 120.0) -> tuple[list[float], object]:
    """``count`` requests, fewer when they take more than ``budget_s`` in all."""
    conn = Conn(url)
    out, reply = [], None
    for _ in range(count):
        if sum(out) > budget_s * 1000:
            break
        status, reply, ms = await conn.call("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {reply}")
        out.append(ms)
    conn.close()
    return out, reply


async def pages(url: str, size: int) -> None:
    for state, count in (("defined", 30), ("finished", 5 if size > 100_000 else 20)):
        times, reply = await timed(url, f"/jobs?state={state}&sort=-ts_def&limit=100", count)
        emit("list", ended=size, state=state, matching=reply["total"], requests=len(times),
             p50_ms=pct(times, 0.5), p99_ms=pct(times, 0.99), goal_p99_ms=200)
    summary, reply = await timed(url, "/summary", 30)
    _, listed = await timed(url, "/jobs?state=finished&limit=1", 1)
    job, _ = await timed(url, f"/jobs/{listed['items'][0]['uuid']}", 30)
    emit("pages", ended=size, summary_p50_ms=pct(summary, 0.5), job_p50_ms=pct(job, 0.5))


def run_size(size: int, base: Path) -> None:
    tmp = base / f"n{size}"
    data_dir = tmp / "data"
    tmp.mkdir(parents=True)
    progress(f"building {size} ended + {DEFINED} defined jobs, {PILOTS} pilots")
    seconds = build(data_dir, size)
    emit("build", ended=size, defined=DEFINED, pilots=PILOTS, seconds=round(seconds, 1), bytes=du(data_dir))
    progress("indexing the rows written behind the engine (as for a data directory of an older p3s)")
    emit("index_build", ended=size, **index_build(data_dir))
    server = Server(tmp, data_dir)
    try:
        progress("cold start")
        cold = server.start()
        cold_rss = server.rss_mb()
        server.stop()
        progress("start after a clean stop")
        warm = server.start()
        emit("start", ended=size, cold_s=round(cold, 2), cold_rss_mb=cold_rss, kept_s=round(warm, 2),
             kept_rss_mb=server.rss_mb(), kept_peak_rss_mb=server.peak_rss_mb, goal_s=10, goal_rss_mb=500)
        progress("claims under 100 pilots")
        load0, cpu0, wall0 = os.getloadavg()[0], server.cpu(), time.time()
        result = asyncio.run(claims(server.url))
        cpu = server.cpu() - cpu0
        emit("claims", ended=size, pilots=CLAIM_PILOTS, server_cpu_s=round(cpu, 1),
             server_cpu_ms_per_request=round(cpu * 1000 / max(1, result["requests"]), 3), **result,
             **asyncio.run(loop_stalls(server.url, wall0)), load_avg=[round(load0, 2), round(os.getloadavg()[0], 2)],
             goal_p99_ms=10)
        progress("pages")
        asyncio.run(pages(server.url, size))
        emit("memory", ended=size, rss_mb=server.rss_mb(), goal_rss_mb=500)
        server.stop()
        emit("disk", ended=size, bytes=du(data_dir), db_bytes=du(data_dir / "db"))
        server.start()
        progress("retention pass (the default policy: 30 days)")
        jobs_file = data_dir / "db" / "p3s" / "jobs"
        before = jobs_file.stat().st_size
        cpu0, t0 = server.cpu(), time.monotonic()
        conn_reply = asyncio.run(_purge(server.url))
        took = time.monotonic() - t0
        free = sqlite3.connect(jobs_file).execute("PRAGMA freelist_count").fetchone()[0] * 4096
        emit("retention", ended=size, seconds=round(took, 1), server_cpu_s=round(server.cpu() - cpu0, 1),
             removed=conn_reply["kinds"]["jobs"]["removed"] + conn_reply["kinds"]["pilots"]["removed"],
             kinds=conn_reply["kinds"], archive_bytes=du(data_dir / "archive"), jobs_file_bytes_before=before,
             jobs_file_bytes_after=jobs_file.stat().st_size, jobs_file_free_bytes=free,
             rss_mb_after=server.rss_mb())
    finally:
        server.stop()


# --- another embedded engine, measured the same way ------------------------------------------
def probe_sqlite_columns(size: int, base: Path) -> None:
    """The same jobs in one SQLite table: the BSON document plus the fields the queries filter and
    sort on as columns with B-tree indexes (what the embedded store would need instead of hash
    indexes rebuilt in memory). Measured in this process: open, first page, count, one job, a
    conditional claim-like update by id."""
    path = base / f"probe{size}.sqlite"
    now = dt.datetime.utcnow()
    random.seed(size)
    t0 = time.monotonic()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT, ts_def TEXT, jobtype TEXT, "
                       "pilot TEXT, workflow TEXT, user TEXT, doc BLOB)")
    for docs in ((job_doc(i, now, True, 60, size) for i in range(size)),
                 (job_doc(i, now, False, 0, DEFINED) for i in range(DEFINED))):
        batch = []
        for doc in docs:
            batch.append((doc["_id"], doc["state"], doc["ts_def"].isoformat(), doc["jobtype"], doc["pilot"],
                          doc["workflow"], doc["user"], bson.encode(doc)))
            if len(batch) >= 20000:
                connection.executemany("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?)", batch)
                batch = []
        connection.executemany("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?)", batch)
    for columns in ("state, ts_def", "pilot, state", "workflow, state", "jobtype, state", "ts_def", "user"):
        connection.execute(f"CREATE INDEX IF NOT EXISTS i_{columns.replace(', ', '_')} ON jobs ({columns})")
    connection.commit()
    connection.close()
    built = time.monotonic() - t0
    rss0 = psutil.Process().memory_info().rss
    t0 = time.monotonic()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    opened = time.monotonic() - t0

    def timed_ms(fn, count: int) -> list[float]:
        out = []
        for _ in range(count):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    result: dict = {"ended": size, "build_s": round(built, 1), "open_s": round(opened, 4), "bytes": path.stat().st_size}
    for state in ("defined", "finished"):
        def first_page() -> None:
            rows = connection.execute("SELECT doc FROM jobs WHERE state = ? ORDER BY ts_def DESC, id LIMIT 100",
                                      (state,)).fetchall()
            [bson.decode(r[0]) for r in rows]
        times = timed_ms(first_page, 30)
        result[f"list_{state}_p50_ms"], result[f"list_{state}_p99_ms"] = pct(times, 0.5), pct(times, 0.99)
        times = timed_ms(lambda: connection.execute("SELECT count(*) FROM jobs WHERE state = ?", (state,)).fetchone(), 5)
        result[f"count_{state}_p50_ms"] = pct(times, 0.5)
    ids = [r[0] for r in connection.execute("SELECT id FROM jobs WHERE state = 'defined' LIMIT 2000")]
    one = ids[0]
    result["job_p50_ms"] = pct(timed_ms(lambda: bson.decode(connection.execute(
        "SELECT doc FROM jobs WHERE id = ?", (one,)).fetchone()[0]), 100), 0.5)
    queue = iter(ids)

    def claim() -> None:
        uuid = next(queue)
        with connection:
            row = connection.execute("SELECT doc FROM jobs WHERE id = ? AND state = 'defined'", (uuid,)).fetchone()
            doc = bson.decode(row[0])
            doc.update(state="dispatched", pilot="bench", ts_dis=dt.datetime.utcnow())
            connection.execute("UPDATE jobs SET state = ?, pilot = ?, doc = ? WHERE id = ?",
                               (doc["state"], doc["pilot"], bson.encode(doc), uuid))
    times = timed_ms(claim, 1000)
    result.update(claim_p50_ms=pct(times, 0.5), claim_p99_ms=pct(times, 0.99),
                  rss_mb_added=round((psutil.Process().memory_info().rss - rss0) / 2**20, 1))
    connection.close()
    path.unlink()
    emit("engine_probe", engine="sqlite-indexed-columns", **result)


async def _purge(url: str) -> dict:
    conn = Conn(url)
    status, reply, _ = await conn.call("POST", "/admin/purge", {"kinds": ["jobs", "pilots"]})
    conn.close()
    if status != 200:
        raise RuntimeError(f"purge: {status} {reply}")
    return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 ended jobs")
    parser.add_argument("--sizes", default=None, help="comma-separated numbers of ended jobs")
    parser.add_argument("--keep-dir", default=None, help="build under this directory and leave it")
    parser.add_argument("--probe", action="store_true", help="only measure the SQLite-with-indexed-columns probe")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000,100000" if args.quick else "10000,1000000")).split(",")]
    base = Path(args.keep_dir or tempfile.mkdtemp(prefix="p3s-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        for size in sizes:
            if not args.probe:
                run_size(size, base)
            probe_sqlite_columns(size, base)
    finally:
        if not args.keep_dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
