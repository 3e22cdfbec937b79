#!/usr/bin/env python3
"""Benchmark ``p3s-fleet``: wall time of ``up``, ``report`` and ``kill`` for simulated nodes.

A fresh ``p3s-server`` (temporary data dir, no auth) is started; then, for each backend, the
command line a user would type is run and timed (interpreter start-up included):

    p3s-fleet up -w node[01-20] -n 8      (until every pilot has registered with the server)
    p3s-fleet report -w node[01-20]       (processes on every node against the server's records)
    p3s-fleet kill -w node[01-20]         (server-mediated stop; signals for any that stay)

``local``: the nodes are labels on this machine. ``ssh``: a real sshd of the benchmark's own
listens on 127.0.1.1 … 127.0.1.16 (one address per node, up to sshd's limit of 16 sockets) and
the fleet reaches every node over its own SSH connection; only loopback addresses are used.
``slurm``: a Slurm cluster of the benchmark's own (``tests/slurm_cluster.py``: munged, slurmctld
and one slurmd per node, node[01-20] of per-node CPUs each, on this host); ``up`` submits one
job array per node (``-w``) and waits for every pilot to register, ``kill`` ends when squeue is
empty (Slurm starts batch jobs on a ~3 s tick). Either way every pilot is a
real pilot process on this machine, so the figures include all of them starting, registering and
stopping at once on this machine's CPUs.

One JSON line per backend and command goes to stdout, progress to stderr. The exit status is
non-zero if a command failed or its counts were wrong (pilots not registered, listed or stopped).

Usage:  .venv/bin/python bench/fleet.py [--nodes 20] [--per-node 8] [-b local,ssh,slurm]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from p3s.pilot.guard import marked_processes  # noqa: E402
from slurm_cluster import SlurmCluster, SlurmUnavailable  # noqa: E402
from sshd import SSHDUnavailable, SSHServer, ssh_config  # noqa: E402

MAX_LISTEN = 16            # sshd listens on at most 16 sockets; nodes share the addresses beyond that


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    config = tmp / "p3s.yaml"
    config.write_text(f"data_dir: {tmp / 'data'}\nlog_level: WARNING\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    proc = subprocess.Popen([sys.executable, "-m", "p3s.cli.server", "--config", str(config), "--port", "0",
                             "--no-auth"], stdout=subprocess.PIPE, stderr=open(tmp / "server.log", "w"),
                            text=True, env=env)
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise SystemExit(f"the server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def fleet(args: list[str], extra_env: dict[str, str] | None = None) -> tuple[float, dict, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P3S_", "SSH_AUTH"))}
    env.update(extra_env or {})
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "p3s.cli.fleet", *args], capture_output=True, text=True,
                          env=env, timeout=600)
    seconds = time.perf_counter() - started
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        reply = {}
    return seconds, reply, done


def leftovers(name: str) -> list[int]:
    return marked_processes(f"P3S_FLEET={name}".encode())


def run_backend(backend: str, url: str, tmp: Path, nodes: int, per_node: int) -> list[dict]:
    name = f"bench{os.getpid()}{backend}"
    hosts = f"node[01-{nodes:02d}]"
    common = ["-B", backend, "--fleet", name, "-S", url, "-w", hosts, "--json"]
    sshd = None
    if backend == "ssh":
        addresses = [f"127.0.1.{i}" for i in range(1, min(nodes, MAX_LISTEN) + 1)]
        sshd = SSHServer(tmp / "sshd", addresses)
        aliases = {f"node{i:02d}": (addresses[(i - 1) % len(addresses)], sshd.port) for i in range(1, nodes + 1)}
        config = ssh_config(tmp / "ssh_config", aliases, sshd.user_key)
        common += ["--ssh-config", str(config), "--known-hosts", str(sshd.known_hosts(tmp / "known_hosts")),
                   "--python", sys.executable]
    cluster = None
    extra_env: dict[str, str] = {}
    if backend == "slurm":
        cluster = SlurmCluster(tmp / "slurm", nodes=nodes, cpus=per_node, prefix="node")
        cluster.start()
        extra_env = {"SLURM_CONF": cluster.env["SLURM_CONF"]}
        progress(f"slurm: {nodes} nodes of {per_node} CPUs up, {cluster.proctrack}")
    total = nodes * per_node
    results = []

    def timed(op: str, args: list[str], check) -> None:
        seconds, reply, done = fleet([op, *common, *args], extra_env)
        figures = check(reply)
        ok = done.returncode == 0 and figures.pop("ok")
        if not ok:
            progress(f"{backend} {op} failed (exit status {done.returncode}): {done.stderr[-1000:]}")
        results.append({"op": op, "seconds": round(seconds, 2), **figures, "ok": ok})

    def up(reply: dict) -> dict:
        return {"started": reply.get("started"), "registered": reply.get("registered"),
                "ok": reply.get("registered") == total}

    def report(reply: dict) -> dict:
        hosts = reply.get("hosts", [])
        listed = sum(len(h["pilots"]) for h in hosts)
        alive = sum((h["server"]["idle"] or 0) + (h["server"]["running"] or 0) for h in hosts)
        mismatches = sum(len(h["unknown"]) + len(h["gone"]) for h in hosts)
        return {"listed": listed, "server_alive": alive, "mismatches": mismatches,
                "ok": listed == alive == total and not mismatches}

    def kill(reply: dict) -> dict:
        hosts = reply.get("hosts", [])
        stopped = {key: sum(len(h[key]) for h in hosts) for key in ("on_request", "sigterm", "sigkill", "survived")}
        ended = stopped["on_request"] + stopped["sigterm"] + stopped["sigkill"]
        return {**stopped, "ok": ended == total and not leftovers(name)}

    def batch_up(reply: dict) -> dict:
        return {"submitted": reply.get("submitted"), "registered": reply.get("registered"),
                "ok": reply.get("registered") == total}

    def batch_report(reply: dict) -> dict:
        total_row = next((r for r in reply.get("nodes", []) if r["node"] == "total"), {})
        return {"running": total_row.get("running"), "registered": total_row.get("registered"),
                "ok": total_row.get("running") == total_row.get("registered") == total}

    def batch_kill(reply: dict) -> dict:
        queue = cluster.run("squeue", "-h").stdout.strip() if cluster else ""
        return {"found": reply.get("found"), "on_request": reply.get("stopped_on_request"),
                "cancelled": len(reply.get("cancelled_running", [])), "squeue_empty": not queue,
                "ok": reply.get("found") == total and not reply.get("left") and not queue and not leftovers(name)}

    if cluster is not None:
        up, report, kill = batch_up, batch_report, batch_kill
    try:
        timed("up", ["-n", str(per_node), "--logdir", str(tmp / "logs"), "--joblogdir", str(tmp / "jobs"),
                     "--workdir", str(tmp / "work"), "--", "-c", "0", "-p", "30"], up)
        timed("report", [], report)
        timed("kill", ["--wait", "30", "--grace", "5"], kill)
    finally:
        for pid in leftovers(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if sshd is not None:
            sshd.stop()
        if cluster is not None:
            cluster.stop()
    return [{"backend": backend, "nodes": nodes, "per_node": per_node, **r} for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20, help="simulated nodes [20]")
    parser.add_argument("--per-node", type=int, default=8, help="pilots per node [8]")
    parser.add_argument("-B", "--backend", default="local,ssh",
                        help="comma-separated backends: local, ssh, slurm [local,ssh]")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="p3s-bench-fleet-") as tmpdir:
        tmp = Path(tmpdir)
        server, url = start_server(tmp)
        progress(f"server on {url}; {os.cpu_count()} CPUs")
        try:
            for backend in args.backend.split(","):
                progress(f"{backend}: up, report, kill of {args.nodes} nodes x {args.per_node} pilots")
                try:
                    results = run_backend(backend, url, tmp / backend, args.nodes, args.per_node)
                except (SSHDUnavailable, SlurmUnavailable) as exc:
                    progress(f"{backend}: skipped: {exc}")
                    continue
                for result in results:
                    print(json.dumps(result), flush=True)
                    failed |= not result["ok"]
                    progress(f"{backend} {result['op']}: {result['seconds']:.2f} s")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
