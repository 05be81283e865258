"""`spanet2 repeat`: n seeds in parallel on Ray; the printed mean ± std equal a direct computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hpc_data import tiny_files

from spanet2.hpc import repeat as repeat_module
from spanet2.hpc.repeat import summarize_runs


def test_public_api():
    assert set(repeat_module.__all__) == {
        "RepeatResult",
        "format_repeat_summary",
        "run_repeats",
        "summarize_runs",
        "train_and_evaluate",
    }


def test_summary_is_mean_and_sample_std():
    table = {
        row: {"event_fraction": 0.1, "event_efficiency": e, "higgs_efficiency": 0.5}
        for row, e in (("=4", 0.2), ("=5", 0.3), (">=6", 0.4), ("Total", 0.3))
    }
    runs = [
        {"accuracy": a, "auc": u, "assignment_table": table}
        for a, u in ((0.8, 0.9), (0.82, 0.91), (0.84, 0.95))
    ]
    summary = summarize_runs(runs)
    assert summary["accuracy"]["mean"] == pytest.approx(0.82)
    assert summary["accuracy"]["std"] == pytest.approx(0.02)  # sample std (n - 1)
    assert summary["auc"]["std"] == pytest.approx(np.std([0.9, 0.91, 0.95], ddof=1))
    assert summary["assignment_table"]["Total"]["event_efficiency"]["mean"] == pytest.approx(0.3)
    assert summary["assignment_table"]["Total"]["event_efficiency"]["std"] == pytest.approx(0.0)
    one = summarize_runs(runs[:1])
    assert one["accuracy"]["mean"] == 0.8 and math.isnan(one["accuracy"]["std"])


def test_repeat_three_seeds_matches_per_seed_results(ray_local, tmp_path, run_cli):
    files = tiny_files(tmp_path / "data")
    log_dir = tmp_path / "runs"
    rc, out, err = run_cli(
        "repeat",
        files["options"],
        "-n",
        "3",
        "--log_dir",
        log_dir,
        "--name",
        "rep",
        "-e",
        "1",
        "--seed",
        "11",
    )
    assert rc == 0, err
    per_seed = [
        json.loads((log_dir / "rep" / f"seed_{s}" / "evaluation.json").read_text()) for s in (11, 12, 13)
    ]
    assert [Path(r["run_dir"]).name for r in per_seed] == ["version_0"] * 3
    acc = [r["evaluation"]["accuracy"] for r in per_seed]
    auc = [r["evaluation"]["auc"] for r in per_seed]
    assert len(set(acc + auc)) > 1  # the seeds really differ
    expected_line = (
        f"| mean ± std | {np.mean(acc):.4f} ± {np.std(acc, ddof=1):.4f} | "
        f"{np.mean(auc):.4f} ± {np.std(auc, ddof=1):.4f} |"
    )
    assert expected_line in out
    eff = [r["evaluation"]["assignment_table"]["Total"]["event_efficiency"] for r in per_seed]
    higgs = [r["evaluation"]["assignment_table"]["Total"]["higgs_efficiency"] for r in per_seed]
    assert (
        f"{np.mean(eff):.3f} ± {np.std(eff, ddof=1):.3f} | {np.mean(higgs):.3f} ± {np.std(higgs, ddof=1):.3f} |"
        in out
    )
    summary = json.loads((log_dir / "rep" / "repeat.json").read_text())
    assert summary["seeds"] == [11, 12, 13]
    assert summary["summary"]["auc"]["mean"] == pytest.approx(np.mean(auc))

    # a rerun reuses the finished seeds (no training, no new run directories)
    rc, out2, err = run_cli(
        "repeat",
        files["options"],
        "-n",
        "3",
        "--log_dir",
        log_dir,
        "--name",
        "rep",
        "-e",
        "1",
        "--seed",
        "11",
    )
    assert rc == 0, err
    assert expected_line in out2
    assert not (log_dir / "rep" / "seed_11" / "version_1").exists()


def test_repeat_bad_inputs_exit_2(tmp_path, run_cli):
    files = tiny_files(tmp_path / "data", n_train=50, n_test=20)
    rc, _, err = run_cli("repeat", files["options"], "-n", "0", "--log_dir", tmp_path / "r")
    assert rc == 2 and err.count("\n") == 1 and "-n" in err
    rc, _, err = run_cli(
        "repeat",
        files["options"],
        "-n",
        "2",
        "--testing_file",
        tmp_path / "none.h5",
        "--log_dir",
        tmp_path / "r",
    )
    assert rc == 2 and err.count("\n") == 1 and "testing_file: file not found" in err
    rc, _, err = run_cli("repeat", tmp_path / "missing.json", "-n", "2", "--log_dir", tmp_path / "r")
    assert rc == 2 and err.count("\n") == 1 and "missing.json" in err
    assert not (tmp_path / "r").exists()


def test_array_tasks_train_one_seed_each_and_the_last_writes_the_summary(tmp_path, run_cli):
    """`--task-index I` (what slurm/repeat.sh passes in an array job): seed SEED+I here, no Ray; the options'
    own epochs; repeat.json appears once both seeds are done."""
    files = tiny_files(tmp_path / "data", n_train=200, n_test=100)
    args = ("repeat", files["options"], "-n", "2", "--log_dir", tmp_path / "runs", "--name", "arr", "-r", "3")
    rc, out, err = run_cli(*args, "--task-index", "1")
    assert rc == 0, err
    assert "1 of 2 seeds finished" in out and not (tmp_path / "runs" / "arr" / "repeat.json").exists()
    first = json.loads((tmp_path / "runs" / "arr" / "seed_4" / "evaluation.json").read_text())
    assert first["node_name"]  # where it trained (SLURMD_NODENAME in a job)
    rc, out, err = run_cli(*args, "--task-index", "0")
    assert rc == 0, err
    summary = json.loads((tmp_path / "runs" / "arr" / "repeat.json").read_text())
    assert summary["seeds"] == [3, 4] and summary["summary"]["accuracy"]["n"] == 2
    epochs = json.loads(files["options"].read_text())["epochs"]
    for run in summary["runs"]:
        assert len((Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()) == epochs
    rc, _, err = run_cli(*args, "--task-index", "2")
    assert rc == 2 and err.count("\n") == 1 and "--task-index" in err and "0..1" in err
