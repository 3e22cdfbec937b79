"""A real Grid Engine cell on this host for the tests: Debian's gridengine 8.1.9
(``bin/install-system-packages``), with a private ``SGE_ROOT`` (links to the installed binaries and
utilities), its own cell, spool and ports, stopped by ``stop()``; nothing system-wide is read or
changed (``SGE_ROOT``, ``SGE_CELL``, ``SGE_QMASTER_PORT``, ``SGE_EXECD_PORT`` are in ``env``).

Facts measured here: the cell needs a ``host_aliases`` entry mapping the host's names, ``min_uid 0``
and ``min_gid 0`` to run root's jobs, a queue with ``pe_list NONE`` and ``load_thresholds NONE``,
and a short ``schedule_interval`` (the default is 15 s).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from slurm_cluster import free_ports, kill_marked

LIB = Path("/usr/lib/gridengine")
SHARE = Path("/usr/share/gridengine")
CELL = "p3s"


class SGEUnavailable(Exception):
    """The daemons cannot run here; the message says why."""


class SGECell:
    """``SGECell(tmp, slots=4).start()``; one execution host: this machine."""

    def __init__(self, tmp: Path, slots: int = 4) -> None:
        needed = [LIB / "spoolinit", LIB / "spooldefaults", Path("/usr/sbin/sge_qmaster"), Path("/usr/sbin/sge_execd")]
        missing = [str(p) for p in needed if not p.exists()]
        if missing or not shutil.which("qsub"):
            raise SGEUnavailable(f"Grid Engine is not installed ({', '.join(missing) or 'qsub'} missing): "
                                 f"run bin/install-system-packages")
        if os.geteuid() != 0:
            raise SGEUnavailable("the test cell's daemons run as root")
        self.tmp = Path(tmp)
        self.root = self.tmp / "root"
        self.slots = slots
        self.host = socket.gethostname().split(".")[0]
        self.procs: list[int] = []
        self.env: dict[str, str] = {}

    def _setup(self) -> None:
        qmaster_port, execd_port = free_ports(2)
        common = self.root / CELL / "common"
        common.mkdir(parents=True)
        for name in ("util", "bin", "lib", "utilbin"):
            (self.root / name).symlink_to(Path("/var/lib/gridengine") / name)
        spool = self.tmp / "spool"
        for sub in ("qmaster", "execd", "db"):
            (spool / sub).mkdir(parents=True)
        (self.tmp / "jobtmp").mkdir()
        (common / "bootstrap").write_text(f"""# Version: 8.1.9
admin_user              none
default_domain          none
ignore_fqdn             true
spooling_method         berkeleydb
spooling_lib            libspoolb
spooling_params         {spool / 'db'}
binary_path             /usr/sbin
qmaster_spool_dir       {spool / 'qmaster'}
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
""")
        (common / "act_qmaster").write_text(self.host + "\n")
        names = {self.host, socket.getfqdn(), "localhost"}
        (common / "host_aliases").write_text(f"{self.host} {' '.join(sorted(names - {self.host}))}\n")
        config = (SHARE / "default-configuration").read_text()
        config = config.replace("/var/spool/gridengine/execd", str(spool / "execd"))
        for key, value in (("min_uid", "0"), ("min_gid", "0"), ("load_report_time", "00:00:05"),
                           ("max_unheard", "00:01:00"), ("finished_jobs", "0")):
            config = "\n".join(f"{key:22} {value}" if line.split()[:1] == [key] else line
                               for line in config.splitlines()) + "\n"
        (self.tmp / "configuration").write_text(config)
        self.env = {**os.environ, "SGE_ROOT": str(self.root), "SGE_CELL": CELL,
                    "SGE_QMASTER_PORT": str(qmaster_port), "SGE_EXECD_PORT": str(execd_port)}
        for argv in ([str(LIB / "spoolinit"), "berkeleydb", "libspoolb", str(spool / "db"), "init"],
                     [str(LIB / "spooldefaults"), "configuration", str(self.tmp / "configuration")],
                     [str(LIB / "spooldefaults"), "complexes", str(SHARE / "util/resources/centry")],
                     [str(LIB / "spooldefaults"), "usersets", str(SHARE / "util/resources/usersets")],
                     [str(LIB / "spooldefaults"), "managers", "root"]):
            done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
            if done.returncode != 0:
                raise SGEUnavailable(f"{Path(argv[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self, timeout: float = 60) -> "SGECell":
        try:
            self._setup()
            self._daemon("/usr/sbin/sge_qmaster", self.tmp / "spool" / "qmaster", "qmaster.pid")
            self._wait(lambda: self.run("qconf", "-sh").returncode == 0, timeout, "sge_qmaster to answer")
            self._configure()
            # the execd's spool is named after the host's name as the resolver gives it (here: localhost)
            self._daemon("/usr/sbin/sge_execd", self.tmp / "spool" / "execd", "*/execd.pid")
            self._wait(self._host_up, timeout, "the execution host to report")
        except BaseException:
            self.stop()
            raise
        return self

    def _configure(self) -> None:
        for argv in (("qconf", "-ah", self.host), ("qconf", "-as", self.host)):
            self._check(self.run(*argv))
        sched = self.run("qconf", "-ssconf").stdout
        sched = "\n".join("schedule_interval                 0:0:1" if line.startswith("schedule_interval") else line
                          for line in sched.splitlines()) + "\n"
        (self.tmp / "sconf").write_text(sched)
        self._check(self.run("qconf", "-Msconf", str(self.tmp / "sconf")))
        (self.tmp / "exechost").write_text(f"hostname {self.host}\nload_scaling NONE\ncomplex_values NONE\n"
                                           f"user_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\n"
                                           f"usage_scaling NONE\nreport_variables NONE\n")
        self._check(self.run("qconf", "-Ae", str(self.tmp / "exechost")))
        queue = self.run("qconf", "-sq").stdout       # the template of a queue
        values = {"qname": "all.q", "hostlist": self.host, "slots": str(self.slots), "pe_list": "NONE",
                  "load_thresholds": "NONE", "shell": "/bin/sh", "shell_start_mode": "posix_compliant",
                  "tmpdir": str(self.tmp / "jobtmp")}    # job ids start at 1 in every cell: private TMPDIRs
        lines = [f"{key:18} {values.pop(key)}" if line.split()[:1] and (key := line.split()[0]) in values else line
                 for line in queue.splitlines()]
        (self.tmp / "queue").write_text("\n".join(lines) + "\n")
        self._check(self.run("qconf", "-Aq", str(self.tmp / "queue")))

    def _check(self, done: subprocess.CompletedProcess) -> None:
        if done.returncode != 0:
            raise SGEUnavailable(f"{' '.join(done.args)} failed: {(done.stderr or done.stdout).strip()}")

    def _host_up(self) -> bool:
        out = self.run("qstat", "-f", "-q", "all.q").stdout
        return f"all.q@{self.host}" in out and not any(
            line.startswith("all.q@") and len(line.split()) > 5 and any(c in line.split()[5] for c in "uadE")
            for line in out.splitlines())

    def _daemon(self, binary: str, spool: Path, pattern: str) -> None:
        done = subprocess.run([binary], capture_output=True, text=True, env=self.env, timeout=60)
        if done.returncode != 0:
            raise SGEUnavailable(f"{Path(binary).name} did not start: {(done.stderr or done.stdout).strip()}")
        deadline = time.monotonic() + 20
        while not list(spool.glob(pattern)):
            if time.monotonic() > deadline:
                raise SGEUnavailable(f"{Path(binary).name} wrote no pid file ({spool}/{pattern}): {self.messages()}")
            time.sleep(0.1)
        time.sleep(0.2)
        self.procs.append(int(next(spool.glob(pattern)).read_text().split()[0]))

    def messages(self) -> str:
        logs = sorted(self.tmp.glob("spool/**/messages"))
        return "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs)

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SGEUnavailable(f"Grid Engine did not come up (waiting for {what}):\n{self.messages()}")
            time.sleep(0.2)

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=timeout)

    def stop(self) -> None:
        """Delete every job, stop execd then qmaster (by pid), wait for them; then kill whatever
        still carries this cell's SGE_ROOT."""
        if self.procs:
            try:
                self.run("qdel", "-f", "-u", "root", timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass
        for pid in reversed(self.procs):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            # sge_qmaster (the first) takes 8-11 s to end on SIGTERM or `qconf -km`, waiting on its
            # threads' timers; its spool is thrown away with the cell, so it gets 1 s, then SIGKILL
            deadline = time.monotonic() + (1 if pid == self.procs[0] else 15)
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        self.procs = []
        if self.env:
            kill_marked("SGE_ROOT", self.env["SGE_ROOT"])     # daemons not yet recorded, job shepherds
