"""Engines on CPU: DDP (gloo) and DeepSpeed under torchrun with 2 processes, DeepSpeed single process + resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trainer_data as td

import spanet2
from spanet2.training import logdir
from spanet2.training.engines import free_port, torch_extensions_dir

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture
def setup(tmp_path):
    event_file = td.write_topology(tmp_path / "event.yaml")
    train_file = td.write_event_file(tmp_path / "train.h5", 256, seed=3)
    options_file = td.write_options(
        tmp_path / "options.json", event_file=event_file, training_file=train_file, epochs=2
    )
    return tmp_path, options_file


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(OMP_NUM_THREADS="1", TORCH_EXTENSIONS_DIR=str(torch_extensions_dir()), PYTHONUNBUFFERED="1")
    # the package importable from the temporary cwd even when it is not installed (e.g. on a bare GPU image)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(spanet2.__file__).resolve().parent.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def _run(args: list[str], cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _torchrun(n: int) -> list[str]:
    launcher = [str(TORCHRUN)] if TORCHRUN.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [
        *launcher,
        "--nproc_per_node",
        str(n),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "spanet2.train",
    ]


def _check_run(run: Path, epochs: list[int], world_size: int, engine: str) -> dict:
    records = logdir.read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == epochs
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == epochs[-1] and state["world_size"] == world_size and state["engine"] == engine
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    return state


# Engines that learn the same: one set of data, options and seed; dropout 0 (its masks are per-process random).
# 512 training events, batch 64, 3 epochs = 24 optimiser steps at learning rate 0.01: the validation loss
# falls by ~0.6 (1.79 -> 1.19). Data-parallel ranks see the same global batches (trainer._shard), but DDP
# averages per-rank losses whose terms are normalised by each rank's own weight sums (losses.py), so it is not
# bit-identical to one process: measured |val_loss(DDP) - val_loss(single)| = 0.004 (0.35 %) after 24 steps,
# DeepSpeed ZeRO-2 equal to DDP to 1e-6. Tolerance: 2 % of the loss and 10 % of what the loss fell by.
EQUIVALENCE_REL_TOL = 0.02
EQUIVALENCE_OF_DECREASE = 0.10


@pytest.fixture(scope="module")
def single_reference(tmp_path_factory):
    """Options, data and the single-process run every multi-process engine must match."""
    from spanet2.training.options import load_options
    from spanet2.training.trainer import train

    root = tmp_path_factory.mktemp("engines_equal")
    event_file = td.write_topology(root / "event.yaml")
    train_file = td.write_event_file(root / "train.h5", 640, seed=3)
    options_file = td.write_options(
        root / "options.json",
        event_file=event_file,
        training_file=train_file,
        epochs=3,
        dropout=0.0,
        learning_rate=0.01,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1)
    try:
        result = train(load_options(options_file), log_dir=root / "logs", name="single", progress=False)
    finally:
        torch.set_num_threads(threads)
    return root, options_file, result.history


def _assert_learns_like_single(history: list[dict], reference: list[dict]) -> None:
    assert len(history) == len(reference) == 3
    fell = reference[0]["val_loss"] - reference[-1]["val_loss"]
    assert fell > 0.2  # the reference really learned: the comparison means something
    for key in ("train_loss", "val_loss"):
        for mine, ref in zip(history, reference, strict=True):
            assert mine[key] == pytest.approx(ref[key], rel=EQUIVALENCE_REL_TOL), (key, mine["epoch"])
        gap = abs(history[-1][key] - reference[-1][key])
        assert gap < EQUIVALENCE_OF_DECREASE * fell, (key, gap, fell)
    print(
        f"val_loss after 24 steps: {history[-1]['val_loss']:.5f} vs single process "
        f"{reference[-1]['val_loss']:.5f} (fell by {fell:.3f})"
    )


def test_ddp_two_processes_gloo_learns_like_one_process(single_reference):
    root, options_file, reference = single_reference
    proc = _run(
        _torchrun(2)
        + ["-of", str(options_file), "--log_dir", "logs", "--name", "ddp", "--engine", "ddp", "--quiet"],
        cwd=root,
    )
    runs = sorted((root / "logs" / "ddp").iterdir())
    assert [r.name for r in runs] == ["version_0"], "rank 1 must not create a run directory"
    assert proc.stdout.count("run directory:") == 1
    _check_run(runs[0], [1, 2, 3], 2, "ddp")
    _assert_learns_like_single(logdir.read_metrics(runs[0] / "metrics.jsonl"), reference)


@pytest.mark.slow  # ~30-45 s on 2 loaded cores (DeepSpeed start-up twice); 2.5 min more on the first JIT build
def test_deepspeed_single_process_and_resume(setup):
    """No launcher: the engine fills MASTER_ADDR/PORT, RANK, WORLD_SIZE itself; resume restores DeepSpeed's state."""
    root, options_file = setup
    args = [
        sys.executable,
        "-m",
        "spanet2.train",
        "-of",
        str(options_file),
        "--log_dir",
        "logs",
        "--name",
        "ds",
        "--engine",
        "deepspeed",
        "--quiet",
    ]
    _run(args + ["-e", "1"], cwd=root)
    run = root / "logs" / "ds" / "version_0"
    _check_run(run, [1], 1, "deepspeed")
    assert (run / "checkpoints" / "deepspeed" / "last").is_dir()
    _run(args + ["-e", "2", "-cf", str(run / "checkpoints" / "last.pt")], cwd=root)
    state = _check_run(run, [1, 2], 1, "deepspeed")
    assert state["scheduler"]["last_epoch"] == 2 * 4  # 205 training events / 64 per batch = 4 steps an epoch
    assert not (root / "logs" / "ds" / "version_1").exists()


@pytest.mark.slow
def test_deepspeed_two_processes_zero2_learns_like_one_process(single_reference):
    root, options_file, reference = single_reference
    ds_config = root / "ds.json"
    ds_config.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 2},
                # torch's AdamW with the options' learning rate and weight decay, as the single engine
                "optimizer": {
                    "type": "AdamW",
                    "params": {"lr": 0.01, "weight_decay": td.OPTIONS["l2_penalty"], "torch_adam": True},
                },
            }
        )
    )
    _run(
        _torchrun(2)
        + [
            "-of",
            str(options_file),
            "--log_dir",
            "logs",
            "--name",
            "ds2",
            "--engine",
            "deepspeed",
            "--deepspeed_config",
            str(ds_config),
            "--quiet",
        ],
        cwd=root,
    )
    run = root / "logs" / "ds2" / "version_0"
    _check_run(run, [1, 2, 3], 2, "deepspeed")
    shards = sorted(p.name for p in (run / "checkpoints" / "deepspeed" / "last").iterdir())
    assert sum("optim_states" in s for s in shards) == 2  # ZeRO-2: optimiser state partitioned over 2 ranks
    _assert_learns_like_single(logdir.read_metrics(run / "metrics.jsonl"), reference)


def test_ddp_without_a_launcher_is_a_clear_error(setup, run_cli, monkeypatch):
    root, options_file = setup
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    rc, out, err = run_cli(
        "train", "-of", options_file, "--log_dir", root / "logs", "--name", "x", "--engine", "ddp"
    )
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "torchrun" in err
    assert not (root / "logs").exists()


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_single_engine_on_gpu_with_autocast(setup, precision):
    from spanet2.training.options import load_options
    from spanet2.training.trainer import load_run, train

    root, options_file = setup
    options = load_options(options_file).replace(epochs=1, num_gpu=1, precision=precision)
    result = train(options, log_dir=root / "logs", name=f"gpu{precision}", progress=False)
    state = _check_run(result.run_dir, [1], 1, "single")
    assert all(v.device.type == "cpu" for v in state["model"].values())  # checkpoints load anywhere
    assert result.history[0]["val_loss"] < 10
    loaded = load_run(result.run_dir, gpu=True)
    assert loaded.device.type == "cuda"


@pytest.mark.gpu
def test_deepspeed_bf16_on_gpu(setup):
    pytest.importorskip("deepspeed")
    root, options_file = setup
    _run(
        [
            sys.executable,
            "-m",
            "spanet2.train",
            "-of",
            str(options_file),
            "--log_dir",
            "logs",
            "--name",
            "dsgpu",
            "--engine",
            "deepspeed",
            "--zero_stage",
            "2",
            "--precision",
            "bf16",
            "--gpus",
            "1",
            "-e",
            "1",
            "--quiet",
        ],
        cwd=root,
    )
    _check_run(root / "logs" / "dsgpu" / "version_0", [1], 1, "deepspeed")
