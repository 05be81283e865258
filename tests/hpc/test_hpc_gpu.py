"""GPU path (skipped without CUDA): four trials share one GPU at 0.25 each, concurrently."""

from __future__ import annotations

import pytest
from hpc_data import tiny_files, tiny_spanet2_search

from spanet2.hpc.tune import read_ledger

pytestmark = pytest.mark.gpu


def test_four_quarter_gpu_trials_run_concurrently(ray_local, tmp_path, run_cli):
    files = tiny_files(tmp_path / "data", n_train=2000)
    config = tiny_spanet2_search(
        tmp_path / "search.yaml",
        files,
        num_samples=4,
        epochs=2,
        max_concurrent_trials=4,
        resources_per_trial={"cpu": 0.5, "gpu": 0.25},
        scheduler={"type": "fifo"},
    )
    rc, _, err = run_cli("tune", config, "--output", tmp_path / "out")
    assert rc == 0, err
    ledger = read_ledger(tmp_path / "out")
    starts = [r for r in ledger if r["event"] == "start"]
    assert len(starts) == 4 and all(r["cuda_visible_devices"] for r in starts)
    events = sorted(
        [(r["time"], 1) for r in starts] + [(r["time"], -1) for r in ledger if r["event"] == "complete"]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 4
