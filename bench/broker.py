#!/usr/bin/env python3
"""Benchmark the broker's claim path: throughput and latency of pilots claiming jobs.

For each case (stored jobs N x concurrent simulated pilots P) the script starts a fresh
``p3s-server`` (its own temporary data dir, no auth), creates N jobs, registers P pilots, then lets
every pilot loop on ``POST /api/v1/pilots/{uuid}/request`` as fast as it can, reporting the
previous job's end (``jobstop``, exit 0) in the same round trip, until a claim returns no job.

One JSON line per case goes to stdout; progress goes to stderr. The exit status is non-zero if a
job was handed out more than once, a pilot had to give up (an HTTP error, or a transport error
still failing after --retries retries), or the server's summary afterwards does not show every job
finished (none defined or dispatched).

Latency is measured per claim in the client, from the first send to the reply (retries included);
``p50_ms``/``p90_ms``/``p99_ms``/``max_ms`` are over the requests that handed out a job, the last,
empty, claim of each pilot is left out. Tornado's simple HTTP client opens a new connection per
request (as a pilot without keep-alive would), so the figures include a TCP connect to 127.0.0.1.
A transport error (connection reset, timeout) is retried with the same body, as a real pilot
would; ``retries`` counts them by phase. ``server_cpu_s``/``client_cpu_s`` are the CPU seconds of
the server process and of this script during the claim phase: server_cpu_s close to ``seconds``
means the (single-threaded) server was the bottleneck.

With --db mongodb://host/db each case uses its own database ``p3s_bench_<pid>_<N>_<P>`` on that
server; they are left behind (drop them by hand).

Usage:  .venv/bin/python bench/broker.py [--quick] [--db mongodb://host/db] [--server PATH]
Only the standard library and tornado are used.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuid_mod
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

FULL_CASES = [(n, p) for n in (1000, 10000) for p in (10, 100, 1000)]
QUICK_CASES = [(1000, 10), (1000, 100)]
CREATE_BATCH = 10000           # the server's limit of jobs per POST
STARTUP_TIMEOUT = 60.0
LISTEN_RE = re.compile(r"listening on (http://\S+)")


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile(wanted: int) -> int:
    """Raise the soft limit of open files towards ``wanted`` (up to the hard limit); return it.

    Done before starting the server so that it inherits the raised limit too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            progress(f"could not raise the open-files limit from {soft} to {target}: {exc}")
    return soft


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def proc_cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of process ``pid`` (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def case_db_uri(uri: str, n: int, p: int) -> str:
    """``uri`` with its database name replaced by one unique to this run and case."""
    parsed = urlparse(uri)
    return urlunparse(parsed._replace(path=f"/p3s_bench_{os.getpid()}_{n}_{p}"))


class Server:
    """A ``p3s-server`` subprocess on a free port with a fresh data dir."""

    def __init__(self, binary: str, db: str | None, log_level: str) -> None:
        self.binary, self.db, self.log_level = binary, db, log_level
        self.tmp = Path(tempfile.mkdtemp(prefix="p3s-bench-"))
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.stderr_path = self.tmp / "server.stderr"
        self.stdout_lines: list[str] = []

    def start(self) -> str:
        cmd = [self.binary, "--port", "0", "--data-dir", str(self.tmp / "data"), "--no-auth",
               "--log-level", self.log_level]
        if self.db:
            cmd += ["--db", self.db]
        # A config file or P3S_* variables of the caller must not change the server under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
        env["P3S_CONFIG"] = str(self.tmp / "none.yaml")
        (self.tmp / "none.yaml").write_text("{}\n")
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr_file, stdin=subprocess.DEVNULL,
                                     env=env, text=True, bufsize=1)
        ready = threading.Event()

        def drain() -> None:        # read stdout to the end so the server never blocks on it
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.stdout_lines.append(line.rstrip("\n"))
                match = LISTEN_RE.search(line)
                if match and not self.url:
                    self.url = match.group(1).rstrip("/")
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(STARTUP_TIMEOUT) or not self.url:
            self.stop()
            raise RuntimeError(f"p3s-server did not start: stdout={self.stdout_lines!r} "
                               f"stderr={self.stderr_path.read_text(errors='replace')[-2000:]!r}")
        return self.url

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                progress("server ignored SIGTERM for 30 s; killing it")
                self.proc.kill()
                self.proc.wait()
        self.stderr_file.close()
        return self.proc.returncode

    def log_problems(self) -> list[str]:
        """Lines of the server's log at WARNING or above, and traceback heads."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines()
                if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|^Traceback|Error:", line)]

    def cleanup(self, keep: bool) -> None:
        if keep:
            progress(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Client:
    """JSON calls to the API; transport errors (reset, timeout) are retried with the same body."""

    def __init__(self, base: str, max_clients: int, timeout: float, retries: int) -> None:
        self.base = base + "/api/v1"
        self.timeout, self.retries = timeout, retries
        self.http = AsyncHTTPClient(force_instance=True, max_clients=max_clients)
        self.transport_errors: list[tuple[str, float, str]] = []   # (phase, seconds since first send, message)

    async def call(self, method: str, path: str, body=None, expect=(200,), phase: str = "") -> dict:
        """One call; raises HTTPClientError on an unexpected status, the last error when out of retries."""
        request = HTTPRequest(self.base + path, method=method,
                              body=None if body is None else json.dumps(body),
                              headers={"Content-Type": "application/json"} if body is not None else None,
                              connect_timeout=self.timeout, request_timeout=self.timeout)
        sent = time.perf_counter()
        for attempt in range(self.retries + 1):
            try:
                # raise_error=False turns HTTP statuses into responses; tornado still raises
                # transport errors (ConnectionResetError, timeouts, StreamClosedError).
                response = await self.http.fetch(request, raise_error=False)
            except Exception as exc:
                if attempt == self.retries:
                    raise
                self.transport_errors.append((phase, time.perf_counter() - sent, f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if response.code == 599 and attempt < self.retries:   # transport error reported as a response
                self.transport_errors.append((phase, time.perf_counter() - sent, str(response.error)))
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if response.code not in expect:
                detail = response.body.decode(errors="replace")[:300] if response.body else str(response.error)
                raise HTTPClientError(response.code, f"{method} {path}: {detail}")
            return json.loads(response.body) if response.body else {}
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.http.close()


async def run_case(base: str, n: int, p: int, timeout: float, server_pid: int, retries: int) -> dict:
    client = Client(base, max_clients=p + 10, timeout=timeout, retries=retries)
    try:
        # --- jobs -----------------------------------------------------------------------------
        t0 = time.perf_counter()
        created = 0
        for start in range(0, n, CREATE_BATCH):
            batch = [{"payload": "/bin/true", "jobtype": "bench", "priority": i % 5}
                     for i in range(start, min(n, start + CREATE_BATCH))]
            reply = await client.call("POST", "/jobs", batch, expect=(201,), phase="create")
            created += len(reply["items"])
        create_s = time.perf_counter() - t0
        if created != n:
            raise RuntimeError(f"asked for {n} jobs, the server created {created}")
        progress(f"  created {n} jobs in {create_s:.2f} s")

        # --- pilots ---------------------------------------------------------------------------
        # The pilot picks its uuid, so that a retried registration is the same pilot.
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(
            client.call("POST", "/pilots", {"uuid": str(uuid_mod.uuid4()), "host": "benchhost", "site": "bench"},
                        expect=(201, 200), phase="register") for _ in range(p)))
        pilots = [r["pilot"]["uuid"] for r in replies]
        register_s = time.perf_counter() - t0
        if len(set(pilots)) != p:
            raise RuntimeError(f"registered {p} pilots, got {len(set(pilots))} distinct uuids")
        progress(f"  registered {p} pilots in {register_s:.2f} s")

        # --- claims ---------------------------------------------------------------------------
        claimed: list[str] = []
        latencies: list[float] = []          # requests that handed out a job (first send -> reply)
        empty_latencies: list[float] = []    # the last, empty, claim of each pilot
        failures: list[str] = []             # pilots that gave up (their state is unknown: they stop)
        resent = 0                           # a pilot got back the job it had just reported

        async def pilot_loop(uuid: str) -> None:
            nonlocal resent
            previous: str | None = None
            path = f"/pilots/{uuid}/request"
            while True:
                body: dict = {"wait": 0}
                if previous is not None:
                    body["report"] = {"event": "jobstop", "job": previous, "exit_code": 0}
                sent = time.perf_counter()
                try:
                    reply = await client.call("POST", path, body,
                                              phase="claim-first" if previous is None else "claim")
                except Exception as exc:
                    # An HTTP error (e.g. 409 when a retried report had been applied already) or
                    # out of retries.
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                elapsed = time.perf_counter() - sent
                job = reply.get("job")
                if job is None:
                    empty_latencies.append(elapsed)
                    return
                latencies.append(elapsed)
                if job["uuid"] == previous:
                    resent += 1
                claimed.append(job["uuid"])
                previous = job["uuid"]

        setup_errors = len(client.transport_errors)
        cpu_server0, cpu_client0 = proc_cpu_seconds(server_pid), self_cpu_seconds()
        t0 = time.perf_counter()
        await asyncio.gather(*(pilot_loop(uuid) for uuid in pilots))
        seconds = time.perf_counter() - t0
        cpu_server1, cpu_client1 = proc_cpu_seconds(server_pid), self_cpu_seconds()

        summary = await client.call("GET", "/summary", phase="summary")
    finally:
        client.close()

    latencies.sort()
    jobs = summary.get("jobs", {})
    duplicates = len(claimed) - len(set(claimed))
    errors = client.transport_errors
    claim_errors = errors[setup_errors:]
    result = {
        "case": "claims", "stored_jobs": n, "pilots": p,
        "claims": len(claimed), "requests": len(latencies) + len(empty_latencies) + len(failures),
        "seconds": round(seconds, 3),
        "claims_per_s": round(len(claimed) / seconds, 1) if seconds > 0 else None,
        "p50_ms": None if not latencies else round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": None if not latencies else round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": None if not latencies else round(percentile(latencies, 99) * 1000, 2),
        "max_ms": None if not latencies else round(latencies[-1] * 1000, 2),
        "duplicates": duplicates, "resent": resent,
        "retries": {phase: sum(1 for e in errors if e[0] == phase)
                    for phase in ("create", "register", "claim-first", "claim", "summary")
                    if any(e[0] == phase for e in errors)},
        "pilots_failed": len(failures),
        "unclaimed": n - len(set(claimed)),
        "defined_after": jobs.get("defined"), "dispatched_after": jobs.get("dispatched"),
        "finished_after": jobs.get("finished"),
        "create_s": round(create_s, 3), "register_s": round(register_s, 3),
        "server_cpu_s": None if cpu_server0 is None or cpu_server1 is None else round(cpu_server1 - cpu_server0, 2),
        "client_cpu_s": round(cpu_client1 - cpu_client0, 2),
    }
    if claim_errors:
        waits = sorted(t for _, t, _ in claim_errors)
        result["claim_retry_after_s"] = {"min": round(waits[0], 2), "p50": round(percentile(waits, 50), 2),
                                         "max": round(waits[-1], 2)}
    if errors:
        result["retry_causes"] = sorted({m for _, _, m in errors})[:3]
    if failures:
        result["failure_examples"] = failures[:3]
    return result


def code_version() -> str | None:
    """The commit of the tree under test, with "+dirty" when p3s/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "p3s"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def case_ok(result: dict) -> bool:
    n = result["stored_jobs"]
    return (result["duplicates"] == 0 and result["pilots_failed"] == 0 and result["claims"] == n
            and result["defined_after"] == 0 and result["dispatched_after"] == 0
            and result["finished_after"] == n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only N=1000 with P in {10, 100}")
    parser.add_argument("--db", default="", help="mongodb://… URI for the server (default: embedded store); "
                                                 "each case uses its own database p3s_bench_<pid>_<N>_<P> "
                                                 "on it, which is left behind")
    parser.add_argument("--server", default=str(Path(sys.executable).with_name("p3s-server")),
                        help="p3s-server executable [default: next to this Python]")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, seconds [120]")
    parser.add_argument("--retries", type=int, default=5,
                        help="retries of a claim after a transport error (connection reset, timeout), "
                             "with the same body as a pilot would [5]; 0: the pilot gives up at once")
    parser.add_argument("--log-level", default="WARNING", help="server log level [WARNING]")
    parser.add_argument("--keep", action="store_true", help="keep each case's temp dir (data, server log)")
    parser.add_argument("--case", action="append", metavar="N:P", help="run only this case (repeatable)")
    args = parser.parse_args(argv)

    if args.case:
        cases = [tuple(int(x) for x in c.split(":")) for c in args.case]
    else:
        cases = QUICK_CASES if args.quick else FULL_CASES
    if not (os.path.isfile(args.server) and os.access(args.server, os.X_OK)):
        found = shutil.which("p3s-server")
        if not found:
            parser.error(f"no p3s-server at {args.server} nor on PATH")
        args.server = found
    max_p = max(p for _, p in cases)
    limit = raise_nofile(max(4096, 4 * max_p + 256))
    if limit != resource.RLIM_INFINITY and limit < 2 * max_p + 64:
        progress(f"open-files limit {limit} is low for {max_p} pilots; expect connection errors")

    version = code_version()
    failed = False
    for n, p in cases:
        db = case_db_uri(args.db, n, p) if args.db else None
        progress(f"case N={n} P={p}" + (f" on {db}" if db else ""))
        server = Server(args.server, db, args.log_level)
        result: dict | None = None
        try:
            base = server.start()
            result = asyncio.run(run_case(base, n, p, args.timeout, server.proc.pid, args.retries))
        except Exception as exc:
            result = {"case": "claims", "stored_jobs": n, "pilots": p, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            code = server.stop()
            problems = server.log_problems()
            if result is not None:
                result["server_exit"] = code
                result["code"] = version
                if problems:
                    result["server_log_problems"] = len(problems)
                    progress(f"  server log: {len(problems)} problem line(s), e.g. {problems[:3]}")
            server.cleanup(args.keep)
        ok = "error" not in result and case_ok(result)
        failed |= not ok
        print(json.dumps(result), flush=True)
        progress(f"  {'ok' if ok else 'FAILED'}: {result.get('claims_per_s')} claims/s, "
                 f"p50 {result.get('p50_ms')} ms, p99 {result.get('p99_ms')} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
