"""Trainer: log directory, checkpoints, seeds (bit for bit), resume, schedules, any validation size."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import trainer_data as td

from spanet2.errors import ConfigError, DataError, InputError
from spanet2.training import logdir
from spanet2.training.engines import build_optimizer, lr_factor, parameter_groups
from spanet2.training.options import load_options
from spanet2.training.trainer import TrainResult, load_run, train

EPOCH_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "val_auc",
    "val_accuracy",
    "val_pairing_efficiency",
    "val_pairing_efficiency_err",
    "val_auc_err",
    "lr",
    "epoch_seconds",
    "train_seconds",
    "train_events_per_second",
    "best",
}


@pytest.fixture(autouse=True)
def one_thread():
    """2 cores shared by several jobs: one intra-op thread is much faster than two here (and deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small(tmp_path):
    event_file = td.write_topology(tmp_path / "event.yaml")
    train_file = td.write_event_file(tmp_path / "train.h5", 240, seed=5)
    options_file = td.write_options(
        tmp_path / "options.json", event_file=event_file, training_file=train_file, epochs=1
    )
    return {
        "root": tmp_path,
        "event_file": event_file,
        "train_file": train_file,
        "options": load_options(options_file),
    }


def _state(run_dir, which="last"):
    return torch.load(run_dir / "checkpoints" / f"{which}.pt", weights_only=True)


def test_train_writes_the_run_directory(small):
    records = []
    result = train(
        small["options"].replace(epochs=2),
        log_dir=small["root"] / "logs",
        name="run",
        epoch_callback=records.append,
        progress=False,
    )
    assert isinstance(result, TrainResult)
    run = result.run_dir
    assert run == small["root"] / "logs" / "run" / "version_0"
    for name in (
        "options.json",
        "event.yaml",
        "normalization.json",
        "metrics.jsonl",
        "provenance.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    # options.json is the resolved options and loads back equal
    assert load_options(run / "options.json") == small["options"].replace(epochs=2)
    assert (run / "event.yaml").read_text() == small["event_file"].read_text()
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["seed"] == small["options"].seed and "versions" in provenance and "commit" in provenance
    # one record per epoch, in the callback and in metrics.jsonl
    assert [r["epoch"] for r in records] == [1, 2]
    assert EPOCH_KEYS <= set(records[0])
    assert logdir.read_metrics(run / "metrics.jsonl") == json.loads(json.dumps(records))
    assert result.history == records
    assert result.best_metrics["val_loss"] == min(r["val_loss"] for r in records)
    for r in records:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
        assert 0.0 <= r["val_pairing_efficiency"] <= 1.0 and 0.0 <= r["val_auc"] <= 1.0
        # their σs: Wilson and DeLong on a few dozen validation events — positive, below the binomial maximum
        assert 0.0 < r["val_pairing_efficiency_err"] < 0.5 and 0.0 < r["val_auc_err"] < 0.5
    # checkpoints: weights_only-loadable, self-describing
    last = _state(run)
    assert last["epoch"] == 2 and last["options"]["epochs"] == 2
    assert {"model", "optimizer", "scheduler", "normalization", "rng", "history"} <= set(last)
    assert last["scheduler"]["last_epoch"] == 2 * math.ceil(192 / 64)  # per-step schedule: 3 steps an epoch
    # a second run gets the next version
    again = train(small["options"], log_dir=small["root"] / "logs", name="run", progress=False)
    assert again.run_dir.name == "version_1"


def test_training_learns_the_pairing(tmp_path):
    """Loss falls and the symmetry-aware pairing efficiency rises well above its first-epoch value."""
    event_file = td.write_topology(tmp_path / "event.yaml")
    train_file = td.write_event_file(tmp_path / "train.h5", 1500, seed=21)
    options = load_options(
        td.write_options(
            tmp_path / "o.json",
            event_file=event_file,
            training_file=train_file,
            epochs=4,
            batch_size=100,
            learning_rate=0.005,
        )
    )
    result = train(options, log_dir=tmp_path / "logs", name="learn", progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"] - 0.3
    assert last["val_pairing_efficiency"] > 0.3 > first["val_pairing_efficiency"] - 0.05
    assert last["val_auc"] > 0.6


def test_same_seed_same_weights_bit_for_bit(small):
    runs = [
        train(small["options"], log_dir=small["root"] / "logs", name="seed", progress=False) for _ in range(2)
    ]
    other = train(small["options"], log_dir=small["root"] / "logs", name="seed", seed=2, progress=False)
    a, b, c = (_state(r.run_dir)["model"] for r in (*runs, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].history[0]["val_loss"] == runs[1].history[0]["val_loss"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


class _Stop(Exception):
    pass


def test_resume_continues_at_the_next_epoch_and_matches_an_uninterrupted_run(small):
    options = small["options"].replace(epochs=3)
    full = train(options, log_dir=small["root"] / "logs", name="full", progress=False)

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train(
            options,
            log_dir=small["root"] / "logs",
            name="cut",
            epoch_callback=stop_after_first,
            progress=False,
        )
    cut = small["root"] / "logs" / "cut" / "version_0"
    assert _state(cut)["epoch"] == 1
    seen = []
    resumed = train(
        options,
        log_dir=small["root"] / "logs",
        name="cut",
        checkpoint=cut / "checkpoints" / "last.pt",
        epoch_callback=seen.append,
        progress=False,
    )
    assert resumed.run_dir == cut  # continued in place, no new version
    assert [r["epoch"] for r in seen] == [2, 3]
    assert [r["epoch"] for r in logdir.read_metrics(cut / "metrics.jsonl")] == [1, 2, 3]
    assert _state(cut)["epoch"] == 3
    a, b = _state(full.run_dir)["model"], _state(cut)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    # resuming a finished run trains nothing more
    again = train(
        options,
        log_dir=small["root"] / "logs",
        name="cut",
        checkpoint=cut / "checkpoints" / "last.pt",
        progress=False,
    )
    assert [r["epoch"] for r in again.history] == [1, 2, 3]


def test_validation_file_of_one_event(small):
    val_file = td.write_event_file(small["root"] / "val1.h5", 1, seed=9)
    result = train(
        small["options"], log_dir=small["root"] / "logs", name="one", validation_file=val_file, progress=False
    )
    record = result.history[0]
    assert math.isfinite(record["val_loss"])
    assert record["val_auc"] is None  # a single event has one class: AUC undefined, not a crash


def test_no_validation_events(small):
    result = train(
        small["options"].replace(train_validation_split=1.0, epochs=2),
        log_dir=small["root"] / "logs",
        name="noval",
        progress=False,
    )
    assert [r["val_loss"] for r in result.history] == [None, None]
    assert result.best_metrics["train_loss"] == min(r["train_loss"] for r in result.history)


def test_a_run_directory_rebuilds_without_the_training_file(small):
    result = train(small["options"], log_dir=small["root"] / "logs", name="rebuild", progress=False)
    small["train_file"].unlink()
    loaded = load_run(result.run_dir)
    state = _state(result.run_dir, "best")
    assert all(torch.equal(v, state["model"][k]) for k, v in loaded.model.state_dict().items())


def test_checkpoint_with_other_architecture_is_a_clear_error(small):
    result = train(small["options"], log_dir=small["root"] / "logs", name="arch", progress=False)
    with pytest.raises(DataError, match="does not fit these options"):
        train(
            small["options"].replace(hidden_dim=32, epochs=2),
            log_dir=small["root"] / "logs",
            name="arch",
            checkpoint=result.run_dir / "checkpoints" / "last.pt",
            progress=False,
        )


def test_corrupt_checkpoint_is_a_data_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="last.pt"):
        logdir.load_checkpoint(bad)


def test_missing_training_file_option(small):
    with pytest.raises(ConfigError, match="training_file"):
        train(
            small["options"].replace(training_file=""),
            log_dir=small["root"] / "logs",
            name="x",
            progress=False,
        )
    assert not (small["root"] / "logs").exists()


# ------------------------------------------------------------------------- schedules and optimisers
def test_lr_schedule_warmup_then_linear_decay():
    factors = [lr_factor(s, total_steps=10, warmup_steps=4) for s in range(10)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(1 / 6)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert lr_factor(10, total_steps=10, warmup_steps=4) == 0.0


def test_lr_schedule_cosine_with_restarts():
    cyc = [lr_factor(s, total_steps=12, warmup_steps=2, cycles=2) for s in range(2, 12)]
    assert cyc[0] == pytest.approx(1.0) and cyc[5] == pytest.approx(1.0)  # restart half-way
    assert cyc[4] < 0.2 and cyc[9] < 0.2
    one = [lr_factor(s, total_steps=12, warmup_steps=2, schedule="cosine") for s in range(2, 12)]
    assert one[0] == pytest.approx(1.0) and all(a > b for a, b in zip(one, one[1:], strict=False))


def test_weight_decay_skips_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    decay, plain = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(plain["params"]) == 4  # two biases + LayerNorm weight and bias


def test_any_torch_optimiser_by_name():
    model = torch.nn.Linear(2, 1)
    assert isinstance(build_optimizer(model, "SGD", 0.1, 0.0), torch.optim.SGD)
    assert isinstance(build_optimizer(model, "AdamW", 0.1, 0.01), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="optimizer"):
        build_optimizer(model, "NoSuchOptimiser", 0.1, 0.0)


def test_new_run_dir_numbers_versions(tmp_path):
    dirs = [logdir.new_run_dir(tmp_path, "n").path.name for _ in range(3)]
    assert dirs == ["version_0", "version_1", "version_2"]
    assert (tmp_path / "n" / "version_2" / "checkpoints").is_dir()
    with pytest.raises(InputError, match="plain directory name"):
        logdir.new_run_dir(tmp_path, "a/b")


def test_metrics_helpers_round_trip(tmp_path):
    path = tmp_path / "m.jsonl"
    logdir.append_metrics(path, {"epoch": 1, "x": np.float32(0.5)})
    logdir.append_metrics(path, {"epoch": 2, "x": 0.25})
    assert logdir.read_metrics(path) == [{"epoch": 1, "x": 0.5}, {"epoch": 2, "x": 0.25}]


def test_validation_sharding_round_trips_any_size():
    """Ranks hold events r, r + W, ... (padded to a multiple of W): gathering restores the file order."""
    from spanet2.training.trainer import _interleave, _shard

    for n in (1, 2, 5, 51):
        for world in (1, 2, 3):
            padded = np.concatenate([np.arange(n), np.zeros((-n) % world, dtype=np.int64)])
            pieces = []
            for rank in range(world):
                mine = _shard(padded, rank, world, equal=False)
                keep = np.arange(rank, len(padded), world) < n
                pieces.append({"x": mine[keep] * 10})
            np.testing.assert_array_equal(_interleave(pieces, n)["x"], np.arange(n) * 10)


def test_early_stopping_on_the_validation_loss_and_learning_curves(small):
    # learning rate 0: the validation loss never improves after epoch 1, so patience 2 stops after epoch 3
    result = train(
        small["options"].replace(epochs=6, learning_rate=0.0, patience=2),
        log_dir=small["root"] / "logs",
        name="stop",
        progress=False,
    )
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [r["best"] for r in result.history] == [True, False, False]
    png = (result.run_dir / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # patience 0 is off: every epoch runs
    full = train(small["options"].replace(epochs=3, learning_rate=0.0), log_dir=small["root"] / "logs",
                 name="full", progress=False)  # fmt: skip
    assert len(full.history) == 3


def test_epochs_since_best():
    from spanet2.training.trainer import epochs_since_best

    assert epochs_since_best([]) == 0
    assert epochs_since_best([{"best": False}, {"best": False}]) == 2
    assert epochs_since_best([{"best": True}, {"best": False}, {"best": True}]) == 0
    assert epochs_since_best([{"best": True}, {"best": False}, {"best": False}]) == 2
