"""Session fixture `slurm_cluster`: a real single-node SLURM cluster (slurmctld + slurmd + munge) for sbatch tests.

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

__all__ = ["SlurmCluster", "slurm_cluster", "start_slurm_cluster"]

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
    node: str
    cpus: int
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

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


def start_slurm_cluster(root: Path) -> SlurmCluster:
    """Write a slurm.conf under `root`, start munge (if needed), slurmctld, slurmd; wait until the node is idle."""
    node = socket.gethostname().split(".")[0]
    cpus, memory = _node_resources()
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=spanet2test
FirstJobId={random.randint(1000, 400000)}
SlurmctldHost={node}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
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
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
NodeName={node} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root=root, conf=conf, node=node, cpus=cpus, env=env)
    munge_pid = _ensure_munge()
    if munge_pid:
        cluster.pids["munged"] = munge_pid
    try:
        for daemon in ("slurmctld", "slurmd"):
            _run([f"/usr/sbin/{daemon}", "-f", str(conf)], timeout=60, env=env)
            pidfile = root / f"{daemon}.pid"
            for _ in range(100):
                if pidfile.exists() and pidfile.read_text().strip():
                    break
                time.sleep(0.1)
            cluster.pids[daemon] = int(pidfile.read_text().split()[0])
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return cluster
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM node did not become idle (state {state!r}); see {root}/log")
    except BaseException:
        stop_slurm_cluster(cluster)
        raise


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
    if "slurmctld" in cluster.pids and "slurmd" in cluster.pids:
        _cancel_all_jobs(cluster)
    for name in ("slurmd", "slurmctld", "munged"):
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


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM cluster for the whole session (see module docstring); skips where SLURM can't run."""
    reason = _install_if_missing()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged by hand needs root")
    try:
        cluster = start_slurm_cluster(tmp_path_factory.mktemp("slurm"))
    except (RuntimeError, subprocess.SubprocessError, OSError, AttributeError) as exc:
        pytest.skip(f"could not start a single-node SLURM cluster: {exc}")
    yield cluster
    stop_slurm_cluster(cluster)
