"""The fleet agent: the one program a backend runs on a node to start, list and stop fleet pilots.

Standard library only, and self-contained: a backend sends this file's source to the node's Python
(``python3 -c BOOT``, the source and a JSON request on stdin) and reads one JSON reply on stdout,
so a node needs nothing of p3s but the pilot itself, and never a matching version of this file.

A fleet pilot is recognised by all of: the environment variables ``P3S_FLEET`` (the fleet) and
``P3S_FLEET_NODE`` (the node name it serves) set when its launcher was executed, ``-m
p3s.pilot`` on its command line, the process name ``p3s-pilot`` and being a session leader.
No other process carries that combination, so listing and stopping never touch anything else;
a signal goes only to a process whose start time is still the one that was listed.

Starting: the request carries the pilot zipapp (``p3s.backends.pyz``), which the agent keeps in the
pilots' log directory under a name holding its hash (a copy there with other bytes is replaced),
so the node needs only ``python3``; without it the agent uses the node's installed p3s. The
agent imports the pilot once and forks the pilots from it (a fork costs
milliseconds, a fresh interpreter a tenth of a second of CPU); each pilot gets its own session,
stdin from /dev/null and stdout/stderr into ``<stderr_dir>/<pid>.stderr``, and lives on after the
agent exits. The token travels on stdin, never on a command line; the pilots find it in their memory's copy
of the environment (``os.environ``, not the process's visible one) and drop it before any payload.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import traceback

PILOT_MODULE = "p3s.pilot"
_PILOT_MODULES = (PILOT_MODULE, "p3s.cli.pilot")      # the latter: pilots started before the zipapp
PROCESS_NAME = "p3s-pilot"
BOOT = "import json,sys;sys.path[:]=[p for p in sys.path if p];exec(json.loads(sys.stdin.readline()))"
_UUID_LOG = re.compile(r"/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.log$")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc ------------------------------------------------------------------------------------
def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _boot_time() -> float:
    for line in (_read("/proc/stat") or b"").splitlines():
        if line.startswith(b"btime "):
            return float(line.split()[1])
    return 0.0


def _stat(pid: int) -> dict | None:
    """State, parent, session, CPU ticks and start ticks of a process (None when it is gone)."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    close = raw.rfind(b")")
    fields = raw[close + 2:].split()
    return {"state": fields[0].decode(), "ppid": int(fields[1]), "sid": int(fields[3]),
            "cpu": int(fields[11]) + int(fields[12]), "cpu_children": int(fields[13]) + int(fields[14]),
            "start": int(fields[19]), "comm": raw[raw.find(b"(") + 1:close].decode(errors="replace")}


def _environ(pid: int) -> dict[str, str]:
    raw = _read(f"/proc/{pid}/environ") or b""
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _argv(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline") or b""
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _rss(pid: int) -> int:
    raw = _read(f"/proc/{pid}/statm")
    return int(raw.split()[1]) * _PAGE if raw else 0


def _pilot_uuid(pid: int) -> str | None:
    """The pilot names its log file ``<uuid>.log`` and keeps it open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            match = _UUID_LOG.search(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if match:
            return match.group(1)
    return None


def _option(argv: list[str], short: str, long: str) -> str:
    for i, arg in enumerate(argv):
        if arg in (short, long) and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(long + "="):
            return arg[len(long) + 1:]
    return ""


def _is_pilot_argv(argv: list[str]) -> bool:
    return any(argv[i] == "-m" and argv[i + 1] in _PILOT_MODULES for i in range(len(argv) - 1))


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def find_pilots(fleet: str, node: str | None) -> dict[int, dict]:
    """pid -> facts of every live fleet pilot of ``fleet`` (on ``node``, or on any node)."""
    found = {}
    for pid in _pids():
        argv = _argv(pid)
        if not _is_pilot_argv(argv):
            continue
        stat = _stat(pid)
        if stat is None or stat["state"] in ("Z", "X") or stat["comm"] != PROCESS_NAME or stat["sid"] != pid:
            continue
        env = _environ(pid)
        if env.get("P3S_FLEET") != fleet or (node is not None and env.get("P3S_FLEET_NODE") != node):
            continue
        found[pid] = {"stat": stat, "argv": argv, "node": env.get("P3S_FLEET_NODE", "")}
    # a payload between its pilot's fork and its exec still looks like the pilot
    return {pid: facts for pid, facts in found.items() if facts["stat"]["ppid"] not in found}


def _host_facts() -> dict:
    meminfo = {}
    for line in (_read("/proc/meminfo") or b"").decode().splitlines():
        key, _, value = line.partition(":")
        meminfo[key] = int(value.split()[0]) * 1024 if value.split() else 0
    total = meminfo.get("MemTotal", 0)
    available = meminfo.get("MemAvailable", meminfo.get("MemFree", 0))
    return {"load": os.getloadavg()[0], "ncpus": os.cpu_count() or 1, "mem_total": total,
            "mem_used": round(100.0 * (total - available) / total, 1) if total else None}


# --- operations -------------------------------------------------------------------------------
def list_pilots(request: dict) -> dict:
    """Every fleet pilot on the node: pid, uuid, start time, CPU seconds and RSS of its process
    tree (its payloads included), its current job and site; and the node's load and memory."""
    pilots = find_pilots(request["fleet"], request.get("node"))
    children: dict[int, list[int]] = {}
    stats: dict[int, dict] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            stats[pid] = stat
            children.setdefault(stat["ppid"], []).append(pid)
    boot = _boot_time()
    listed = []
    for pid, facts in sorted(pilots.items()):
        stat = facts["stat"]
        tree, todo = [], list(children.get(pid, ()))
        while todo:
            child = todo.pop()
            tree.append(child)
            todo.extend(children.get(child, ()))
        cpu = stat["cpu"] + stat["cpu_children"] + sum(stats[c]["cpu"] for c in tree if c in stats)
        job = next((env["P3S_JOB_UUID"] for env in map(_environ, children.get(pid, ()))
                    if env.get("P3S_JOB_UUID")), None)
        listed.append({"pid": pid, "node": facts["node"], "uuid": _pilot_uuid(pid), "start_ticks": stat["start"],
                       "started": round(boot + stat["start"] / _CLK_TCK, 2), "cpu": round(cpu / _CLK_TCK, 2),
                       "rss": _rss(pid) + sum(_rss(c) for c in tree), "job": job,
                       "site": _option(facts["argv"], "-s", "--site"), "nprocs": 1 + len(tree)})
    return {"pilots": listed, "host": _host_facts()}


def _still(pid: int, start_ticks: int | None) -> bool:
    stat = _stat(pid)
    return stat is not None and stat["state"] not in ("Z", "X") and start_ticks in (None, stat["start"])


def _wait_gone(pids: set[int], starts: dict[int, int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while True:
        pids = {pid for pid in pids if _still(pid, starts[pid])}
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.05)


def stop_pilots(request: dict) -> dict:
    """SIGTERM the chosen fleet pilots (all of the node's when no pids are given), SIGKILL those
    still there after ``grace`` seconds. Pilots marked ``exiting`` (they said they are stopping)
    get up to ``linger`` seconds to exit by themselves first. A pid is signalled only while it is
    still the fleet pilot that was listed (same start time), so a reused pid is never hit."""
    ours = find_pilots(request["fleet"], request["node"])
    wanted = request.get("pilots")
    if wanted is None:
        targets = {pid: facts["stat"]["start"] for pid, facts in ours.items()}
    else:
        targets = {int(p["pid"]): p.get("start_ticks") for p in wanted
                   if int(p["pid"]) in ours and p.get("start_ticks") in (None, ours[int(p["pid"])]["stat"]["start"])}
    gone = [int(p["pid"]) for p in wanted or () if int(p["pid"]) not in targets]
    exiting = {int(p["pid"]) for p in wanted or () if p.get("exiting")} & set(targets)
    if exiting:
        staying = _wait_gone(exiting, targets, float(request.get("linger", 3)))
        gone += sorted(exiting - staying)
        targets = {pid: start for pid, start in targets.items() if pid not in exiting - staying}
    signalled: set[int] = set()
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.add(pid)
        except ProcessLookupError:
            gone.append(pid)
    left = _wait_gone(signalled, targets, float(request.get("grace", 10)))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    survived = _wait_gone(left, targets, 5.0)
    return {"term": sorted(signalled - left), "kill": sorted(left - survived), "survived": sorted(survived),
            "gone": sorted(gone)}


def _tail(path: str, lines: int = 5) -> str:
    text = (_read(path) or b"").decode(errors="replace").strip()
    return "\n".join(text.splitlines()[-lines:])


def _set_process_name() -> None:
    try:
        with open("/proc/self/comm", "w") as handle:
            handle.write(PROCESS_NAME)
    except OSError:
        pass


def _pilot_child(argv: list[str], stderr_dir: str, run_pilot) -> None:
    """In a forked child: become a detached pilot; never returns."""
    code = 1
    try:
        os.setsid()
        _set_process_name()
        null = os.open(os.devnull, os.O_RDWR)
        out = os.open(os.path.join(stderr_dir, f"{os.getpid()}.stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        code = run_pilot(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) else 1)


def _place_zipapp(directory: str, name: str, encoded: str) -> str:
    """The path of the pilot zipapp ``name`` in ``directory``, written there unless a file of ours
    with exactly those bytes is there already (another user's, or other bytes, are replaced)."""
    import base64
    import hashlib

    if not re.fullmatch(r"p3s-pilot-[0-9a-f]{16}\.pyz", name):
        raise ValueError(f"bad zipapp name {name!r}")
    data = base64.b64decode(encoded)
    if hashlib.sha256(data).hexdigest()[:16] != name[10:26]:
        raise ValueError("the zipapp does not match its name")
    path = os.path.join(directory, name)
    try:
        info = os.stat(path)
        if info.st_uid == os.getuid() and not info.st_mode & 0o022 and _read(path) == data:
            return path
    except OSError:
        pass
    tmp = os.path.join(directory, f".{name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return path


def start_pilots(request: dict) -> dict:
    """Fork ``count`` detached pilots running with this process's own arguments after
    ``-m p3s.pilot``; report their pids and those that exited within ``settle`` seconds."""
    argv = sys.argv[1:]
    if not _is_pilot_argv(argv):
        return {"error": "the agent was not started with the pilot's arguments"}
    pilot_args = argv[next(i for i in range(len(argv) - 1) if argv[i] == "-m" and argv[i + 1] in _PILOT_MODULES) + 2:]
    if request.get("token"):
        os.environ["P3S_TOKEN"] = request["token"]     # read by each pilot, and removed before any payload
    stderr_dir = request["stderr_dir"]
    try:
        os.makedirs(stderr_dir, exist_ok=True)
    except OSError as exc:
        return {"error": f"cannot create {stderr_dir}: {exc.strerror}"}
    try:
        if request.get("pyz"):
            sys.path.insert(0, _place_zipapp(stderr_dir, request["pyz_name"], request["pyz"]))
        from p3s.pilot.cli import run_pilot
        import p3s.pilot.client, p3s.pilot.payload, p3s.pilot.agent  # noqa: F401  (loaded once, shared by every fork)
    except Exception as exc:
        return {"error": f"cannot load the p3s pilot with {sys.executable}: {type(exc).__name__}: {exc}"}
    boot = _boot_time()
    started: dict[int, int] = {}
    for _ in range(int(request["count"])):
        try:
            pid = os.fork()
        except OSError as exc:
            return {"error": f"fork failed after {len(started)} pilots: {exc.strerror}",
                    "pids": [{"pid": p, "start_ticks": s, "started": boot + s / _CLK_TCK} for p, s in started.items()]}
        if pid == 0:
            _pilot_child(pilot_args, stderr_dir, run_pilot)
        stat = _stat(pid)
        started[pid] = stat["start"] if stat else 0
    exited = []
    deadline = time.monotonic() + float(request.get("settle", 0.3))
    while True:
        for pid in list(started):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del started[pid]
                exited.append({"pid": pid, "code": os.waitstatus_to_exitcode(status),
                               "stderr": _tail(os.path.join(stderr_dir, f"{pid}.stderr"))})
        if not started or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    pids = [{"pid": p, "start_ticks": s, "started": round(boot + s / _CLK_TCK, 2)} for p, s in started.items()]
    return {"pids": pids, "exited": exited}


OPERATIONS = {"start": start_pilots, "list": list_pilots, "stop": stop_pilots}


def serve(stdin=None, stdout=None) -> None:
    """Read one JSON request line, run it, write one JSON reply line (errors as values)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        request = json.loads(stdin.readline())
        reply = OPERATIONS[request["op"]](request)
    except Exception as exc:
        reply = {"error": f"agent failed: {type(exc).__name__}: {exc}"}
    stdout.write(json.dumps(reply) + "\n")
    stdout.flush()


if __name__ == "__main__":
    serve()
