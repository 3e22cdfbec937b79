"""A real single-host Slurm cluster for the tests and the bench: Debian's ``slurm-wlm`` and ``munge``
(``bin/install-system-packages``), started in a private directory and stopped by ``stop()``.

munged runs with a key and socket of its own, slurmctld and one slurmd per node name
(``NodeName=wn[01-04] NodeHostname=<this host> NodeAddr=127.0.0.1 Port=[…]``, started with
``slurmd -N wnNN``) on free ports; ``SLURM_CONF`` points the client commands at the private
config, so nothing system-wide is read or changed. Facts measured here: ``SlurmdParameters=
config_overrides`` lets a node declare more CPUs than the machine has (else it drains with "Low
socket*core*thread count"); the munge socket's directory needs o+x; ``proctrack/cgroup`` (used when
/sys/fs/cgroup/freezer is writable, else ``proctrack/linuxproc``) makes scancel kill every process
of a job; the scheduler looks at 100 jobs per pass by default (then waits for its 60 s full pass), so
the cluster raises ``default_queue_depth`` (160 pilots in one go: 101 started, 59 waited).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SBIN = Path("/usr/sbin")
NEEDED = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(Exception):
    """The daemons cannot run here; the message says why."""


def free_ports(count: int) -> list[int]:
    """``count`` consecutive free TCP ports on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise SlurmUnavailable("no run of free ports")


def cgroup_freezer_writable() -> bool:
    probe = Path("/sys/fs/cgroup/freezer") / f"p3s-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


class SlurmCluster:
    """``SlurmCluster(tmp, nodes=4, cpus=8).start()``; ``env`` is what a client needs (SLURM_CONF)."""

    def __init__(self, tmp: Path, nodes: int = 4, cpus: int = 8, prefix: str = "wn") -> None:
        missing = [name for name in NEEDED if not (SBIN / name).exists()]
        if missing or not shutil.which("sbatch"):
            raise SlurmUnavailable(f"Slurm is not installed ({', '.join(missing) or 'sbatch'} missing): "
                                   f"run bin/install-system-packages")
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster's daemons run as root (slurmd must start jobs as any user)")
        self.tmp = Path(tmp)
        self.names = [f"{prefix}{i:02d}" for i in range(1, nodes + 1)]
        self.cpus = cpus
        self.proctrack = "proctrack/cgroup" if cgroup_freezer_writable() else "proctrack/linuxproc"
        # Slurm names a node's cgroups slurm_<node>/uid_<uid>/job_<id>: two test clusters at once (two
        # worktrees' suites) share node names, so their job ids must differ
        self.first_job_id = random.randrange(1_000, 60_000_000)
        self.procs: list[subprocess.Popen] = []
        self.conf = self.tmp / "etc" / "slurm.conf"
        self.munge_socket = self.tmp / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SCANCEL_"))]:
            if key != "SLURM_CONF":
                del self.env[key]

    # --- set-up -------------------------------------------------------------------------------
    def _write_config(self, ctl_port: int, node_ports: list[int]) -> None:
        host = socket.gethostname()
        for sub in ("etc", "state", "spool", "log", "munge"):
            (self.tmp / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.tmp / "munge", 0o711)           # clients need o+x on the socket's directory
        os.chmod(self.tmp, 0o755)
        first, last = node_ports[0], node_ports[-1]
        nodes = f"{self.names[0][:-2]}[{self.names[0][-2:]}-{self.names[-1][-2:]}]"
        self.conf.write_text(f"""# p3s test cluster (tests/slurm_cluster.py)
ClusterName=p3stest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctl_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.tmp / 'state'}
SlurmdSpoolDir={self.tmp / 'spool'}/%n
SlurmctldPidFile={self.tmp / 'slurmctld.pid'}
SlurmdPidFile={self.tmp / 'spool'}/slurmd-%n.pid
SlurmctldLogFile={self.tmp / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.tmp / 'log'}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType={self.proctrack}
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SchedulerParameters=default_queue_depth=10000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=2
InactiveLimit=0
SlurmdTimeout=60
MessageTimeout=20
MaxArraySize=10001
FirstJobId={self.first_job_id}
NodeName={nodes} NodeHostname={host} NodeAddr=127.0.0.1 Port=[{first}-{last}] CPUs={self.cpus} State=UNKNOWN
PartitionName=p3s Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=other Nodes=ALL Default=NO MaxTime=INFINITE State=UP
""")
        (self.tmp / "etc" / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\n"
                                                     "ConstrainCores=no\nConstrainRAMSpace=no\n")
        key = self.tmp / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)

    def _daemon(self, argv: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(self.tmp / "log" / log, "ab"),
                                stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 60) -> "SlurmCluster":
        ctl_port, *node_ports = free_ports(len(self.names) + 1)
        self._write_config(ctl_port, node_ports)
        munge = self.tmp / "munge"
        self._daemon([str(SBIN / "munged"), "-F", "--force", f"--socket={self.munge_socket}",
                      f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                      f"--seed-file={munge / 'munged.seed'}", f"--log-file={self.tmp / 'log' / 'munged.log'}"],
                     "munged.out")
        self._wait(lambda: self.munge_socket.exists(), 10, "munged's socket")
        self._daemon([str(SBIN / "slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._wait(lambda: self.run("scontrol", "ping").returncode == 0, timeout, "slurmctld to answer")
        for name in self.names:
            self._daemon([str(SBIN / "slurmd"), "-D", "-N", name, "-f", str(self.conf)], f"slurmd-{name}.out")
        self._wait(self._nodes_idle, timeout, "every node to be idle")
        return self

    def _nodes_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-p", "p3s", "-o", "%N %t").stdout.split("\n")
        states = dict(line.split() for line in out if line.strip())
        return len(states) == len(self.names) and all(s == "idle" for s in states.values())

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((self.tmp / "log").glob("*"))
                                 if p.is_file())
                self.stop()
                raise SlurmUnavailable(f"Slurm did not come up (waiting for {what}; "
                                       f"{len(dead)} daemon(s) exited):\n{logs}")
            time.sleep(0.1)

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=timeout)

    # --- tear-down ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel every job and let them end, stop the daemons (slurmds first), wait for them; then
        kill whatever still carries this cluster's SLURM_CONF (a job step orphaned by a dead slurmd)."""
        if any(p.poll() is None for p in self.procs[1:2]):
            try:
                self.run("scancel", "--user", "root", timeout=10)
                deadline = time.monotonic() + 15
                while self.run("squeue", "-h", timeout=10).stdout.strip() and time.monotonic() < deadline:
                    time.sleep(0.2)
            except (OSError, subprocess.SubprocessError):
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs = []
        kill_marked("SLURM_CONF", str(self.conf))
        if self.proctrack == "proctrack/cgroup":
            for name in self.names:
                remove_empty_cgroups(Path("/sys/fs/cgroup/freezer") / f"slurm_{name}")


def remove_empty_cgroups(top: Path) -> None:
    """rmdir ``top`` and the cgroups under it, deepest first; a cgroup still in use (by another
    test cluster with the same node names) cannot be removed and stays."""
    if not top.is_dir():
        return
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
        try:
            path.rmdir()
        except OSError:
            pass


def kill_marked(key: str, value: str) -> None:
    """SIGKILL every process whose environment has ``key=value``."""
    wanted = f"{key}={value}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if wanted not in handle.read().split(b"\0"):
                    continue
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            continue
