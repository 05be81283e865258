"""`sbatch slurm/tune.sh` on a real single-node SLURM cluster; the Ray dashboard REST API during the job."""

from __future__ import annotations

import csv
import os
import re
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from hpc_data import tiny_files, tiny_spanet2_search

from spanet2.hpc.cluster import auth_token, dashboard_get

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _job_env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {"PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def _wait_for_dashboard(log: Path, job_info, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        match = re.search(r"dashboard-url (http://127\.0\.0\.1:\d+)", text)
        if match:
            return match.group(1)
        if job_info().get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING", None):
            break
        time.sleep(1)
    pytest.fail(f"no dashboard line in the job log:\n{log.read_text() if log.exists() else '(no log)'}")


def test_sbatch_tune_completes_and_dashboard_shows_job(slurm_cluster, tmp_path, run_cli):
    files = tiny_files(tmp_path / "data")
    config = tiny_spanet2_search(tmp_path / "search.yaml", files, num_samples=2, epochs=1)
    output = tmp_path / "search_out"
    log = tmp_path / "tune.log"
    job = slurm_cluster.sbatch(
        REPO / "slurm" / "tune.sh",
        str(config),
        str(output),
        options=("--cpus-per-task=2", f"--output={log}", "--time=15"),
        cwd=str(REPO),
        env=_job_env(),
    )

    try:
        _check_dashboard_during_job(slurm_cluster, job, log)
        info = slurm_cluster.wait(job, timeout=600)
    finally:
        slurm_cluster.cancel(job)  # no-op when finished; never leave a job (and its Ray) behind
    text = log.read_text()
    assert info["JobState"] == "COMPLETED", text[-4000:]
    assert "ssh -N -L 8265:127.0.0.1:" in text  # the tunnel recipe is in the log
    assert "cluster steps stopped" in text  # clean teardown of its own steps
    rows = list(csv.DictReader((output / "trials.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"}
    assert (output / "ranking.md").read_text().startswith("| rank |")
    best = output / "best_options.json"
    assert best.is_file()

    # The best options train as they are.
    rc, out, err = run_cli("train", "-of", best, "--log_dir", tmp_path / "best_run", "-n", "best", "-e", "1")
    assert rc == 0, err
    assert (tmp_path / "best_run" / "best" / "version_0" / "checkpoints" / "best.pt").is_file()


def _check_dashboard_during_job(slurm_cluster, job: int, log: Path) -> None:
    """While the search runs: the dashboard answers 401 without the token, and shows the node and our job."""
    url = _wait_for_dashboard(log, lambda: slurm_cluster.job_info(job))
    token = auth_token()
    assert token, "Ray wrote no auth token (~/.ray/auth_token)"
    with pytest.raises(urllib.error.HTTPError) as denied:
        dashboard_get(url, "/api/jobs/", token="")
    assert denied.value.code == 401
    seen_driver = seen_trial = False
    jobs: list = []
    actors: list = []
    alive: list = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (seen_driver and seen_trial and alive):
        nodes = dashboard_get(url, "/api/v0/nodes", token=token)["data"]["result"]["result"]
        alive = [n for n in nodes if n["state"] == "ALIVE"]
        jobs = dashboard_get(url, "/api/jobs/", token=token)
        seen_driver = seen_driver or any(
            j.get("type") == "DRIVER" and "spanet2" in (j.get("entrypoint") or "") for j in jobs
        )
        actors = dashboard_get(url, "/api/v0/actors?detail=1", token=token)["data"]["result"]["result"]
        # a Tune trial runs as an actor of the function trainable (class ImplicitFunc) named after the trial
        seen_trial = seen_trial or any("ImplicitFunc" in (a.get("class_name") or "") for a in actors)
        if not (seen_driver and seen_trial and alive):
            time.sleep(1)
    assert len(alive) == 1 and alive[0]["resources_total"]["CPU"] == 2.0, alive
    assert seen_driver, f"the search driver never showed up in /api/jobs/: {jobs}"
    assert seen_trial, f"no trial actor in /api/v0/actors: {[a.get('class_name') for a in actors]}"
