"""Session fixtures for sbatch tests on real SLURM daemons (slurmctld + slurmd + munge) on this machine:

- `slurm_cluster`: one node (the host's name, all its CPUs);
- `slurm_two_nodes`: two nodes `node1` and `node2` (one CPU each), two slurmd daemons on this host with their
  own ports (`slurmd -N node1`, `slurmd -N node2`): a job's steps tell them apart by `SLURMD_NODENAME`.

Installs `slurm-wlm munge` with apt when missing (root only); skips with the reason when it cannot.
Daemons run on free ports with their own state dir, so two test sessions on one machine do not collide;
teardown kills exactly the processes this fixture started (by PID).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["SlurmCluster", "slurm_cluster", "slurm_two_nodes", "start_slurm_cluster", "stop_slurm_cluster"]

_MUNGE_DIRS = ("/run/munge", "/var/lib/munge", "/var/log/munge")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _run(cmd: list[str], *, timeout: float = 60, env: dict | None = None, check: bool = True):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=check)


@dataclass
class SlurmCluster:
    """A running test cluster. `env` holds SLURM_CONF; pass it to sbatch/squeue/scontrol subprocesses."""

    root: Path
    conf: Path
    node: str  # the first node's name
    cpus: int  # CPUs per node
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()

    def run(self, *cmd: str, timeout: float = 60, check: bool = True, env: dict | None = None):
        merged = dict(self.env, **(env or {}))
        return _run(list(cmd), timeout=timeout, env=merged, check=check)

    def sbatch(
        self,
        script: str | os.PathLike,
        *args: str,
        options: tuple[str, ...] = (),
        cwd: str | None = None,
        env: dict | None = None,
    ) -> int:
        """Submit `script args` with extra sbatch `options`; return the job id."""
        merged = dict(self.env, **(env or {}))
        out = subprocess.run(
            ["sbatch", "--parsable", *options, str(script), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=merged,
            cwd=cwd,
            check=True,
        ).stdout
        return int(out.strip().split(";")[0])

    def job_info(self, job_id: int) -> dict[str, str]:
        out = self.run("scontrol", "show", "job", "-o", str(job_id), check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: int, *, timeout: float = 600, poll: float = 2.0) -> dict[str, str]:
        """Block until the job leaves PENDING/RUNNING/etc.; return its `scontrol show job` fields."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            state = info.get("JobState", "")
            if state and state not in (
                "PENDING",
                "RUNNING",
                "CONFIGURING",
                "COMPLETING",
                "REQUEUED",
                "SUSPENDED",
                "REQUEUE_HOLD",
                "REQUEUE_FED",
                "RESIZING",
                "SIGNALING",
                "STAGE_OUT",
            ):
                return info
            time.sleep(poll)
        raise TimeoutError(f"SLURM job {job_id} still {info.get('JobState')} after {timeout} s")

    def cancel(self, job_id: int) -> None:
        self.run("scancel", str(job_id), check=False)


def _install_if_missing() -> str | None:
    """None when SLURM + munge are usable; otherwise the reason they are not."""
    if all(
        shutil.which(x) or os.path.exists(f"/usr/sbin/{x}")
        for x in ("sbatch", "slurmctld", "slurmd", "munged")
    ):
        return None
    if os.geteuid() != 0:
        return "SLURM is not installed and installing it (apt-get install slurm-wlm munge) needs root"
    if not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install slurm-wlm munge"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(["apt-get", "update", "-q"], timeout=300, env=env)
        _run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], timeout=600, env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        return f"apt-get install slurm-wlm munge failed: {str(exc)[:200]} {stderr[-300:]}"
    return None


def _ensure_munge() -> int | None:
    """Make `munge -n | unmunge` work; return the PID of a munged we started (None if one was running)."""

    def works() -> bool:
        try:
            token = _run(["munge", "-n"], timeout=10).stdout
            subprocess.run(["unmunge"], input=token, capture_output=True, text=True, timeout=10, check=True)
            return True
        except (subprocess.SubprocessError, OSError):
            return False

    if works():
        return None
    for d in _MUNGE_DIRS:
        os.makedirs(d, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        if shutil.which("mungekey") or os.path.exists("/usr/sbin/mungekey"):
            _run(["mungekey", "--create", "--keyfile", str(key)], timeout=30)
        else:
            key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    pidfile = Path("/run/munge/munged.pid")
    _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], timeout=30)
    for _ in range(50):
        if works():
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("munged started but `munge -n | unmunge` still fails")
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def _node_resources() -> tuple[int, int]:
    out = _run(["slurmd", "-C"], timeout=30).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))
    memory = int(re.search(r"RealMemory=(\d+)", out).group(1))
    return cpus, max(int(memory * 0.9), 1000)


def start_slurm_cluster(root: Path, *, nodes: int = 1) -> SlurmCluster:
    """Write a slurm.conf under `root`, start munge (if needed), slurmctld and the slurmd daemons; wait until
    every node is idle. nodes=1: one node named after the host with all its CPUs; nodes=2: `node1`, `node2`
    on this host (one slurmd each, own port, spool, pid and log file), the host's CPUs split between them."""
    host = socket.gethostname().split(".")[0]
    cpus, memory = _node_resources()
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if nodes == 1:
        names = (host,)
        node_lines = f"NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN"
        slurmd = f"SlurmdPort={_free_port()}\nSlurmdSpoolDir={root}/spool\nSlurmdPidFile={root}/slurmd.pid\n"
        slurmd += f"SlurmdLogFile={root}/log/slurmd.log"
    elif nodes == 2:
        names = ("node1", "node2")
        cpus, memory = max(cpus // 2, 1), max(memory // 2, 500)
        node_lines = "\n".join(
            f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs={cpus} "
            f"RealMemory={memory} State=UNKNOWN"
            for name in names
        )
        # %n: the node name, so the two daemons on one host keep separate state
        slurmd = f"SlurmdSpoolDir={root}/spool-%n\nSlurmdPidFile={root}/slurmd-%n.pid\n"
        slurmd += f"SlurmdLogFile={root}/log/slurmd-%n.log"
    else:
        raise ValueError(f"nodes must be 1 or 2, got {nodes}")
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=spanet2test
FirstJobId={random.randint(1000, 400000)}
SlurmctldHost={host}
SlurmctldPort={_free_port()}
{slurmd}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation={root}/state
SlurmctldPidFile={root}/slurmctld.pid
SlurmctldLogFile={root}/log/slurmctld.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root=root, conf=conf, node=names[0], cpus=cpus, env=env, nodes=names)
    munge_pid = _ensure_munge()
    if munge_pid:
        cluster.pids["munged"] = munge_pid
    try:
        _start_daemon(cluster, "slurmctld", [], root / "slurmctld.pid")
        if nodes == 1:
            _start_daemon(cluster, "slurmd", [], root / "slurmd.pid")
        else:
            for name in names:
                _start_daemon(cluster, f"slurmd:{name}", ["-N", name], root / f"slurmd-{name}.pid")
        deadline = time.monotonic() + 60
        states: list[str] = []
        while time.monotonic() < deadline:
            states = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            if len(states) == nodes and set(states) == {"idle"}:
                return cluster
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM nodes did not become idle (states {states!r}); see {root}/log")
    except BaseException:
        stop_slurm_cluster(cluster)
        raise


def _start_daemon(cluster: SlurmCluster, key: str, args: list[str], pidfile: Path) -> None:
    daemon = key.split(":")[0]
    _run([f"/usr/sbin/{daemon}", "-f", str(cluster.conf), *args], timeout=60, env=cluster.env)
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.1)
    cluster.pids[key] = int(pidfile.read_text().split()[0])


def _other_slurm_daemons(cluster: SlurmCluster) -> bool:
    ours = set(cluster.pids.values())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in ours:
            continue
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() in ("slurmctld", "slurmd"):
                return True
    return False


def _cancel_all_jobs(cluster: SlurmCluster, timeout: float = 60) -> None:
    """scancel every job of this cluster and wait until slurmd has ended their steps (no orphans)."""
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        cluster.run("scancel", "--full", "--user", str(os.getuid()), check=False, timeout=30)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not cluster.run("squeue", "-h", "-o", "%i", check=False, timeout=30).stdout.strip():
                return
            time.sleep(1)


def stop_slurm_cluster(cluster: SlurmCluster) -> None:
    """Cancel the jobs, then terminate the daemons this fixture started, by PID (slurmd first)."""
    slurmds = [k for k in cluster.pids if k.startswith("slurmd")]
    if "slurmctld" in cluster.pids and slurmds:
        _cancel_all_jobs(cluster)
    for name in (*slurmds, "slurmctld", "munged"):
        if name == "munged" and _other_slurm_daemons(cluster):
            continue  # another test session's cluster still authenticates through this munged
        pid = cluster.pids.pop(name, None)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _cluster_fixture(tmp_path_factory, nodes: int):
    reason = _install_if_missing()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged by hand needs root")
    try:
        cluster = start_slurm_cluster(tmp_path_factory.mktemp(f"slurm{nodes}"), nodes=nodes)
    except (RuntimeError, subprocess.SubprocessError, OSError, AttributeError) as exc:
        pytest.skip(f"could not start a {nodes}-node SLURM cluster: {exc}")
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM cluster for the whole session (see module docstring); skips where SLURM can't run."""
    cluster = _cluster_fixture(tmp_path_factory, 1)
    yield cluster
    stop_slurm_cluster(cluster)


@pytest.fixture(scope="module")
def slurm_two_nodes(tmp_path_factory):
    """Two SLURM nodes (`node1`, `node2`) on this machine, for the tests of one module; stopped after them."""
    cluster = _cluster_fixture(tmp_path_factory, 2)
    yield cluster
    stop_slurm_cluster(cluster)
