"""`sbatch --nodes=2 slurm/tune.sh|repeat.sh` on two real SLURM nodes (two slurmd on this machine): trials and
seeds land on both nodes, a node lost mid-search, the dashboard REST API with token auth, array-mode repeats."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from hpc_data import tiny_files, tiny_spanet2_search

from spanet2.hpc.cluster import dashboard_get
from spanet2.hpc.tune import read_ledger

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]
RUNNING = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", None)


def _job_env(token_path: Path | None = None) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    if token_path is not None:  # a token file of this test only: the job must create it
        env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    return env


def _log_text(log: Path) -> str:
    return log.read_text() if log.exists() else "(no log)"


def _wait_for_dashboard(log: Path, job_info, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"dashboard-url (http://127\.0\.0\.1:\d+)", _log_text(log))
        if match:
            return match.group(1)
        if job_info().get("JobState") not in RUNNING:
            break
        time.sleep(1)
    pytest.fail(f"no dashboard line in the job log:\n{_log_text(log)[-4000:]}")


def _raylet_of(node: str, job: int) -> int | None:
    """PID of the raylet that SLURM node `node` of job `job` runs (its environment names both)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() != "raylet":
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            if f"SLURMD_NODENAME={node}".encode() in environ and f"SLURM_JOB_ID={job}".encode() in environ:
                return int(proc.name)
    return None


def _check_dashboard(url: str, token: str) -> None:
    """The dashboard answers 401 without the token; with it, both nodes are ALIVE with one CPU each."""
    with pytest.raises(urllib.error.HTTPError) as denied:
        dashboard_get(url, "/api/jobs/", token="")
    assert denied.value.code == 401
    nodes = dashboard_get(url, "/api/v0/nodes", token=token)["data"]["result"]["result"]
    alive = [n for n in nodes if n["state"] == "ALIVE"]
    assert len(alive) == 2 and all(n["resources_total"]["CPU"] == 1.0 for n in alive), alive
    deadline = time.monotonic() + 180
    jobs: list = []
    while time.monotonic() < deadline:  # the search driver starts after the cluster line is printed
        jobs = dashboard_get(url, "/api/jobs/", token=token)
        if any(j.get("type") == "DRIVER" and "spanet2" in (j.get("entrypoint") or "") for j in jobs):
            return
        time.sleep(1)
    pytest.fail(f"the search driver never showed up in /api/jobs/: {jobs}")


def test_sbatch_tune_on_two_nodes_spreads_trials_and_survives_a_lost_node(slurm_two_nodes, tmp_path, run_cli):
    """10 trials, 2 at a time, one per node. Once a trial has finished on node2 and the next one runs there,
    node2's raylet is killed (SIGKILL): that trial restarts on node1 and the search completes."""
    cluster = slurm_two_nodes
    files = tiny_files(tmp_path / "data", n_train=800)
    config = tiny_spanet2_search(
        tmp_path / "search.yaml",
        files,
        # A node's first trial takes ~45 s (imports), later ones ~3 s: with 5 trials node1 could run all the rest
        # before node2's first had finished (the CPU network got faster), so there are enough for both.
        num_samples=10,
        epochs=8,
        max_concurrent_trials=2,
        scheduler={"type": "fifo"},
        max_failures=2,
    )
    output = tmp_path / "search_out"
    log = tmp_path / "tune.log"
    token_path = tmp_path / "ray" / "auth_token"
    job = cluster.sbatch(
        REPO / "slurm" / "tune.sh",
        str(config),
        str(output),
        options=("--nodes=2", "--cpus-per-task=1", f"--output={log}", "--time=20"),
        cwd=str(REPO),
        env=_job_env(token_path),
    )
    killed_trial = None
    try:
        url = _wait_for_dashboard(log, lambda: cluster.job_info(job))
        # ray-cluster.sh generated the token (none existed), private to the user
        assert token_path.stat().st_mode & 0o777 == 0o600
        token = token_path.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", token)
        _check_dashboard(url, token)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and cluster.job_info(job).get("JobState") in RUNNING:
            ledger = read_ledger(output)
            node_of = {r["trial_id"]: r["node_name"] for r in ledger if r["event"] == "start"}
            done = {r["trial_id"] for r in ledger if r["event"] in ("complete", "error")}
            on_node2 = [t for t, n in node_of.items() if n == "node2"]
            running = [t for t in on_node2 if t not in done]
            if len(on_node2) > len(running) >= 1:  # one finished on node2, another one runs there now
                pid = _raylet_of("node2", job)
                assert pid is not None, "no raylet of node2 found"
                os.kill(pid, signal.SIGKILL)
                killed_trial = running[0]
                break
            time.sleep(0.2)
        assert killed_trial is not None, f"never saw a second trial on node2:\n{_log_text(log)[-4000:]}"
        info = cluster.wait(job, timeout=600)
    finally:
        cluster.cancel(job)  # no-op when finished; never leave a job (and its Ray) behind
    text = _log_text(log)
    assert info["JobState"] == "COMPLETED", text[-5000:]
    assert f"ray: token auth, token {token_path} (generated" in text and "ssh -N -L 8265:127.0.0.1:" in text
    assert "cluster steps stopped" in text  # clean teardown of its own steps

    rows = {r["trial_id"]: r for r in csv.DictReader((output / "trials.csv").open())}
    assert len(rows) == 10 and {r["status"] for r in rows.values()} == {"TERMINATED"}, rows
    assert {r["epochs"] for r in rows.values()} == {"8"}  # every trial trained all its epochs
    assert {"node1", "node2"} <= {r["node_name"] for r in rows.values()}  # trials finished on both nodes
    assert len({r["node_id"] for r in rows.values()}) == 2  # two Ray nodes
    # the trial that lost its node started twice, the second time on node1, and finished there
    killed = rows[killed_trial]
    assert killed["starts"] == "2" and killed["node_name"] == "node1", killed
    starts = [r for r in read_ledger(output) if r["event"] == "start" and r["trial_id"] == killed_trial]
    assert [r["node_name"] for r in starts] == ["node2", "node1"]
    print(
        "trials per node:",
        {n: sum(r["node_name"] == n for r in rows.values()) for n in ("node1", "node2")},
        f"restarted after the kill: {killed_trial}",
    )

    # The best options train as they are.
    best = output / "best_options.json"
    rc, _, err = run_cli("train", "-of", best, "--log_dir", tmp_path / "best_run", "-n", "best", "-e", "1")
    assert rc == 0, err
    assert (tmp_path / "best_run" / "best" / "version_0" / "checkpoints" / "best.pt").is_file()


def _repeat_job(cluster, tmp_path: Path, files, *, options: tuple[str, ...], name: str) -> tuple[str, Path]:
    log = tmp_path / f"{name}.log"
    job = cluster.sbatch(
        REPO / "slurm" / "repeat.sh",
        str(files["options"]),
        "-n",
        "2",
        "--log_dir",
        str(tmp_path / "runs"),
        "--name",
        name,
        "--seed",
        "5",
        options=(*options, "--cpus-per-task=1", f"--output={log}", "--time=15"),
        cwd=str(REPO),
        env=_job_env(),
    )
    try:
        states = _wait_all(cluster, job, timeout=600)
    finally:
        cluster.cancel(job)
    assert states and set(states) == {"COMPLETED"}, f"{states}\n{_log_text(log)[-5000:]}"
    return _log_text(log), tmp_path / "runs" / name


def _wait_all(cluster, job: int, timeout: float) -> list[str]:
    """The final states of a job, or of every task of an array job."""
    deadline = time.monotonic() + timeout
    states: list[str] = []
    while time.monotonic() < deadline:
        out = cluster.run("scontrol", "show", "job", "-o", str(job), check=False).stdout
        states = re.findall(r"JobState=(\S+)", out)
        if states and not set(states) & {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED"}:
            return states
        time.sleep(2)
    raise TimeoutError(f"SLURM job {job} still {states} after {timeout} s")


def test_sbatch_repeat_on_two_nodes_spreads_seeds(slurm_two_nodes, tmp_path):
    files = tiny_files(tmp_path / "data")
    text, base = _repeat_job(slurm_two_nodes, tmp_path, files, options=("--nodes=2",), name="ray")
    assert "with 2 node(s)" in text
    runs = json.loads((base / "repeat.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [5, 6]
    assert {r["node_name"] for r in runs} == {"node1", "node2"}, runs  # one seed on each node
    assert "| node |" in text and "cluster steps stopped" in text


def test_sbatch_repeat_array_mode_one_seed_per_task(slurm_two_nodes, tmp_path):
    """`sbatch --array=0-1`: each task trains one seed without Ray for its options' own epochs; the summary
    holds both seeds."""
    files = tiny_files(tmp_path / "data")
    text, base = _repeat_job(slurm_two_nodes, tmp_path, files, options=("--array=0-1",), name="array")
    assert "one seed, no Ray" in text and "ray: cluster up" not in text
    summary = json.loads((base / "repeat.json").read_text())
    assert summary["seeds"] == [5, 6] and summary["summary"]["auc"]["n"] == 2
    epochs = json.loads(files["options"].read_text())["epochs"]
    for seed in (5, 6):
        record = json.loads((base / f"seed_{seed}" / "evaluation.json").read_text())
        metrics = (Path(record["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == epochs  # the options' epochs, not a number shared by the repeat command
