"""Real searches on tiny data: SPANet2 and DNN trials through Ray Tune + Optuna, outputs, multi-worker trials,
and kill + --resume without re-running finished trials."""

from __future__ import annotations

import collections
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hpc_data import tiny_dnn_search, tiny_files, tiny_spanet2_search

from spanet2.hpc import tune as tune_module
from spanet2.hpc.tune import read_ledger
from spanet2.training.dnn import load_dnn_options
from spanet2.training.options import load_options


def test_public_api():
    assert set(tune_module.__all__) == {
        "SearchResult",
        "TrialSpec",
        "format_ranking",
        "has_search_state",
        "prepare_search",
        "read_ledger",
        "run_search",
        "stored_search_config",
        "train_trial",
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_files(tmp_path_factory.mktemp("hpc_data"))


def _rows(output: Path) -> list[dict]:
    with (output / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_spanet2_search_ranks_trials_and_writes_best_options(ray_local, files, tmp_path, run_cli):
    config = tiny_spanet2_search(tmp_path / "search.yaml", files, num_samples=2, epochs=1)
    output = tmp_path / "out"
    rc, out, err = run_cli("tune", config, "--output", output)
    assert rc == 0, err
    rows = _rows(output)
    assert [r["status"] for r in rows] == ["TERMINATED", "TERMINATED"]
    losses = [float(r["val_loss"]) for r in rows]
    assert losses == sorted(losses) and [r["rank"] for r in rows] == ["1", "2"]
    assert "| rank | trial | status | epochs | val_loss | learning_rate | dropout |" in out
    # every trial trained through the SAME train() as the CLI: a run directory with its own metrics
    for row in rows:
        metrics = (Path(row["log_dir"]) / "version_0" / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == 1 and json.loads(metrics[0])["val_loss"] == pytest.approx(
            float(row["val_loss"])
        )
    best = json.loads((output / "best_trial.json").read_text())
    assert best["trial_id"] == rows[0]["trial_id"]
    options = load_options(output / "best_options.json")
    base = load_options(files["options"])
    assert options.learning_rate == pytest.approx(float(rows[0]["learning_rate"]))
    assert options.dropout == pytest.approx(float(rows[0]["dropout"]))
    assert options.epochs == base.epochs  # the full training length, not the search's epochs per trial
    assert options.training_file == str(files["train"]) and options.event_info_file == str(files["event"])
    assert (output / "provenance.json").is_file() and (output / "search.yaml").is_file()
    ledger = read_ledger(output)
    assert collections.Counter(r["event"] for r in ledger) == {"start": 2, "complete": 2}

    # the output folder now holds a search: starting again there is refused (exit 2, one line)
    rc, _, err = run_cli("tune", config, "--output", output)
    assert rc == 2 and err.count("\n") == 1 and "--resume" in err
    # resuming a finished search re-runs nothing
    rc, _, err = run_cli("tune", config, "--output", output, "--resume")
    assert rc == 0, err
    assert len(read_ledger(output)) == len(ledger)


def test_dnn_search_maximises_auc(ray_local, files, tmp_path, run_cli):
    config = tiny_dnn_search(tmp_path / "dnn.yaml", files, num_samples=3, epochs=2)
    output = tmp_path / "out"
    rc, out, err = run_cli("tune", config, "--output", output)
    assert rc == 0, err
    rows = _rows(output)
    aucs = [float(r["val_auc"]) for r in rows]
    assert len(rows) == 3 and aucs == sorted(aucs, reverse=True)
    best = load_dnn_options(output / "best_options.json")
    assert best.hidden_dim == int(rows[0]["hidden_dim"]) and best.n_layers == int(rows[0]["n_layers"])
    assert best.learning_rate == pytest.approx(float(rows[0]["learning_rate"]))
    assert json.loads((output / "best_trial.json").read_text())["pairing"] == "min-dr"


@pytest.mark.slow
def test_trial_with_two_workers_ddp_gloo(ray_local, files, tmp_path, run_cli):
    """A trial on 2 Ray Train workers (TorchTrainer, gloo): the trainer's DDP engine sees world size 2."""
    config = tiny_spanet2_search(
        tmp_path / "search.yaml",
        files,
        num_samples=1,
        epochs=1,
        engine="ddp",
        resources_per_trial={"cpu": 1, "workers": 2},
    )
    output = tmp_path / "out"
    rc, _, err = run_cli("tune", config, "--output", output)
    assert rc == 0, err
    (row,) = _rows(output)
    assert row["status"] == "TERMINATED"
    checkpoint = torch.load(Path(row["log_dir"]) / "version_0" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["engine"] == "ddp" and checkpoint["world_size"] == 2


@pytest.mark.slow
def test_killed_search_resumes_without_rerunning_finished_trials(files, tmp_path):
    """SIGTERM a running `spanet2 tune` after 2 finished trials; `--resume` runs only the rest."""
    config = tiny_spanet2_search(
        tmp_path / "search.yaml", files, num_samples=4, epochs=1, scheduler={"type": "fifo"}
    )
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "spanet2",
        "tune",
        str(config),
        "--output",
        str(output),
        "--num-cpus",
        "1",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with (tmp_path / "first.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and process.poll() is None:
                if sum(r["event"] == "complete" for r in read_ledger(output)) >= 2:
                    break
                time.sleep(0.2)
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            process.send_signal(signal.SIGTERM)
            rc = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    first = read_ledger(output)
    finished_before = {r["trial_id"] for r in first if r["event"] == "complete"}
    assert rc == 130, (tmp_path / "first.log").read_text()[-3000:]
    assert 2 <= len(finished_before) < 4

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ledger = read_ledger(output)
    starts = collections.Counter(r["trial_id"] for r in ledger if r["event"] == "start")
    completes = {r["trial_id"] for r in ledger if r["event"] == "complete"}
    assert len(completes) == 4
    assert all(starts[t] == 1 for t in finished_before)  # finished trials were not trained again
    rows = _rows(output)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"TERMINATED"}
    print(
        f"finished before the kill: {len(finished_before)}; trainings started in total: "
        f"{sum(starts.values())} for 4 trials"
    )


def test_asha_stops_a_bad_trial_before_its_last_epoch(ray_local, files, tmp_path, run_cli):
    """4 epochs, grace period 1: a good trial first (learning rate 5e-3), then a deliberately bad one
    (learning rate 0: its loss never moves). At the epoch-1 rung the bad trial is worse than the good one's
    epoch 1, so ASHA stops it there; trials.csv shows 1 epoch (stopped_early) against 4."""
    config = tiny_spanet2_search(
        tmp_path / "search.yaml",
        files,
        num_samples=2,
        epochs=4,
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        space={"learning_rate": {"uniform": [0.0, 0.01]}, "dropout": {"uniform": [0.0, 0.3]}},
        points_to_evaluate=[{"learning_rate": 0.005, "dropout": 0.0}, {"learning_rate": 0.0, "dropout": 0.0}],
    )
    output = tmp_path / "out"
    rc, _, err = run_cli("tune", config, "--output", output)
    assert rc == 0, err
    rows = {float(r["learning_rate"]): r for r in _rows(output)}
    good, bad = rows[0.005], rows[0.0]
    assert good["status"] == bad["status"] == "TERMINATED"
    assert good["epochs"] == "4" and good["stopped_early"] == "False"
    assert int(bad["epochs"]) < 4 and bad["stopped_early"] == "True"
    assert bad["epochs"] == "1"  # stopped at the first rung
    good_history = _metrics(good)
    bad_history = _metrics(bad)
    assert bad_history[0]["val_loss"] > good_history[0]["val_loss"]  # why it was stopped
    assert len(good_history) == 4 and len(bad_history) < 4  # the trainer itself stopped early too
    print(f"epochs trained: good {good['epochs']}, bad (lr 0) {bad['epochs']} of 4")


def _metrics(row: dict) -> list[dict]:
    lines = (Path(row["log_dir"]) / "version_0" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
