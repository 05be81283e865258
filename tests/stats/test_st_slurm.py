"""slurm/scan.sh: two scan configs on a Dask cluster inside a SLURM job, and the same script without SLURM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "scan.sh"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _two_configs(st_config, tmp_path):
    a = st_config("a.yaml", output=str(tmp_path / "out_a"), luminosities=[139])
    b = st_config(
        "b.yaml",
        output=str(tmp_path / "out_b"),
        luminosities=[300],
        asimov="background+sm",
        methods=[{"name": "spanet2", "threshold": 0.9}],
    )
    return a, b


@pytest.mark.slurm
def test_sbatch_scan_runs_two_configs_on_a_dask_cluster(slurm_cluster, st_config, tmp_path):
    a, b = _two_configs(st_config, tmp_path)
    log = tmp_path / "job.out"
    job = slurm_cluster.sbatch(
        SCRIPT,
        str(a),
        str(b),
        "--",
        "--no-plots",
        options=(f"--output={log}", f"--chdir={REPO}", "--cpus-per-task=2", "--time=10"),
        env=_env(),
    )
    info = slurm_cluster.wait(job, timeout=300)
    text = log.read_text() if log.exists() else ""
    assert info.get("JobState") == "COMPLETED", text
    assert "Dask scheduler tls://127.0.0.1:" in text
    assert "with 2 workers" in text  # the scan connected to the job's Dask cluster, not a LocalCluster
    assert text.count("scan.sh: spanet2 scan ") == 1  # both configs in one batch: one pass over the store
    assert "LocalCluster" not in text
    for out_dir, points in ((tmp_path / "out_a", 2 * 46), (tmp_path / "out_b", 46)):
        record = json.loads((out_dir / "results.json").read_text())
        assert record["points"]["computed"] == points
    sm = json.loads((tmp_path / "out_b" / "results.json").read_text())["intervals"]["spanet2"]["300.0"]["pl"]
    assert sm["lower"] < 1.0 < sm["upper"]


def test_scan_sh_without_slurm_runs_locally(st_config, tmp_path):
    a, _ = _two_configs(st_config, tmp_path)
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(a), "--", "--workers", "1", "--no-plots"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no SLURM job" in proc.stdout
    assert (tmp_path / "out_a" / "results.json").exists()
    bad = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "missing.yaml")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "no such scan config" in bad.stderr
