"""The DNN baseline: trains for real on toy events, early stopping, log-dir layout, reproducible, CLI, bad inputs."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from spanet2.errors import ConfigError
from spanet2.physics.features import FEATURE_NAMES, FEATURE_NAMES_NO_EXTRA
from spanet2.training.dnn import DNNOptions, evaluate_dnn, load_dnn_options, predict_dnn, train_dnn

FAST = DNNOptions(hidden_dim=32, n_layers=2, learning_rate=3e-3, batch_size=256, epochs=6, patience=3, seed=3)


def test_bl_shipped_dnn_configs_hold_the_notes_values():
    min_dr = load_dnn_options("configs/options/dnn_min_dr.json")
    spanet2 = load_dnn_options("configs/options/dnn_spanet2.json")
    assert (min_dr.learning_rate, min_dr.hidden_dim, min_dr.n_layers) == (0.00495, 256, 3)
    assert (spanet2.learning_rate, spanet2.hidden_dim, spanet2.n_layers) == (0.000948, 256, 2)
    assert DNNOptions.from_dict(min_dr.to_dict()) == min_dr  # exact JSON round trip


def test_bl_dnn_options_errors(tmp_path, caplog):
    with pytest.raises(ConfigError, match="learning_rate"):
        DNNOptions.from_dict({"learning_rate": -1.0})
    with pytest.raises(ConfigError, match="n_layers.*integer"):
        DNNOptions.from_dict({"n_layers": 2.5})
    DNNOptions.from_dict({"hiden_dim": 64})
    assert "hiden_dim" in caplog.text  # a typo is named, not silently accepted
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        load_dnn_options(bad)


def test_bl_dnn_trains_and_separates_toy_signal(toy_files, tmp_path):
    files, _ = toy_files
    seen = []
    result = train_dnn(FAST, log_dir=tmp_path / "logs", name="mindr", training_file=files["train"],
                       epoch_callback=seen.append, progress=False)  # fmt: skip
    run = result.run_dir
    assert run == tmp_path / "logs" / "mindr" / "version_0"
    for name in (
        "options.json",
        "normalization.json",
        "metrics.jsonl",
        "provenance.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    ):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records == seen == result.history and len(records) >= 1
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "val_auc"} <= set(records[0])
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    payload = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert payload["feature_names"] == list(FEATURE_NAMES) and "mean" in str(payload["model"].keys())
    norm = json.loads((run / "normalization.json").read_text())
    assert len(norm["mean"]) == 20 and all(s > 0 for s in norm["std"])
    metrics = evaluate_dnn(run, files["mixed"])
    assert metrics["events"] == 800 and metrics["auc"] > 0.8 and metrics["accuracy"] > 0.7
    assert result.best_metrics["val_loss"] == min(r["val_loss"] for r in records)


def test_bl_dnn_same_seed_same_result_and_resume(toy_files, tmp_path):
    files, _ = toy_files
    opts = FAST.replace(epochs=3, patience=0)
    a = train_dnn(opts, log_dir=tmp_path, name="a", training_file=files["train"], progress=False)
    b = train_dnn(opts, log_dir=tmp_path, name="a", training_file=files["train"], progress=False)
    assert b.run_dir.name == "version_1"
    assert a.history == b.history
    # 2 epochs, then resume to 3 from last.pt: identical to the uninterrupted run
    c = train_dnn(
        opts.replace(epochs=2), log_dir=tmp_path, name="c", training_file=files["train"], progress=False
    )
    d = train_dnn(opts, log_dir=tmp_path, name="c", training_file=files["train"],
                  checkpoint=c.run_dir / "checkpoints" / "last.pt", progress=False)  # fmt: skip
    assert [r["epoch"] for r in d.history] == [3]
    assert d.history[0]["val_loss"] == pytest.approx(a.history[2]["val_loss"], rel=1e-6)
    other = train_dnn(opts, log_dir=tmp_path, name="a", training_file=files["train"], seed=4, progress=False)
    assert other.history != a.history


def test_bl_dnn_early_stopping(toy_files, tmp_path):
    files, _ = toy_files
    # a far too large learning rate makes the validation loss stop improving quickly
    opts = FAST.replace(learning_rate=0.3, epochs=40, patience=2)
    result = train_dnn(opts, log_dir=tmp_path, name="es", training_file=files["train"], progress=False)
    epochs = [r["epoch"] for r in result.history]
    assert len(epochs) < 40
    best = min(range(len(epochs)), key=lambda i: result.history[i]["val_loss"])
    assert len(epochs) - 1 - best == 2  # stopped exactly `patience` epochs after the best


def test_bl_dnn_cli_train_test_predict(toy_files, tmp_path, run_cli):
    files, mixed = toy_files
    options = tmp_path / "opts.json"
    options.write_text(json.dumps({**FAST.to_dict(), "epochs": 2}))
    rc, out, err = run_cli("dnn", "train", "-of", options, "--log_dir", tmp_path / "logs", "--name", "n",
                           "-tf", files["noextra"], "--seed", 5, "--quiet")  # fmt: skip
    assert rc == 0, err
    run = tmp_path / "logs" / "n" / "version_0"
    assert f"run directory: {run}" in out
    assert json.loads((run / "provenance.json").read_text())["seed"] == 5
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["feature_names"] == list(
        FEATURE_NAMES_NO_EXTRA
    )
    rc, out, err = run_cli("dnn", "test", run, "-tf", files["mixed"], "--json", tmp_path / "m.json")
    assert rc == 0, err
    assert "| ACC | AUC |" in out
    assert json.loads((tmp_path / "m.json").read_text())["events"] == 800
    pred = tmp_path / "dnn_pred.h5"
    rc, out, err = run_cli("dnn", "predict", run, pred, "-tf", files["mixed"])
    assert rc == 0, err
    with h5py.File(pred) as h5:
        score = h5["CLASSIFICATIONS/EVENT/signal_probability"][:]
        assert score.shape == (800,) and ((score >= 0) & (score <= 1)).all()
        np.testing.assert_allclose(h5["CLASSIFICATIONS/EVENT/signal"][:, 1], score)
        assert h5["TARGETS/h1/b1"].shape == (800,) and "WEIGHTS/weight" in h5 and "INPUTS/Source/pt" in h5
        assert list(h5["FEATURES"].attrs["names"]) == list(FEATURE_NAMES_NO_EXTRA)


def test_bl_dnn_from_features_file_and_prediction_pairing(toy_files, tmp_path, run_cli):
    files, mixed = toy_files
    feats = tmp_path / "feats.h5"
    assert run_cli("features", files["train"], feats)[0] == 0
    result = train_dnn(
        FAST.replace(epochs=2), log_dir=tmp_path, name="f", training_file=feats, progress=False
    )
    direct = train_dnn(
        FAST.replace(epochs=2), log_dir=tmp_path, name="g", training_file=files["train"], progress=False
    )
    assert result.history == direct.history  # a features file trains exactly like the event file it came from
    # a DNN predictions file is itself a pairing source (TARGETS) for the next step
    pred = tmp_path / "p.h5"
    predict_dnn(result.run_dir, pred, files["mixed"])
    via_pred = evaluate_dnn(result.run_dir, files["mixed"], pairing=pred)
    assert via_pred == evaluate_dnn(result.run_dir, files["mixed"])


def test_bl_dnn_bad_inputs(toy_files, tmp_path, run_cli):
    files, mixed = toy_files
    options = tmp_path / "opts.json"
    options.write_text(json.dumps({**FAST.to_dict(), "epochs": 1}))
    base = ("dnn", "train", "-of", options, "--log_dir", tmp_path / "logs", "--quiet")
    short = tmp_path / "short.h5"
    with h5py.File(short, "w") as h5:
        for key in ("TARGETS/h1/b1", "TARGETS/h1/b2", "TARGETS/h2/b1", "TARGETS/h2/b2"):
            h5.create_dataset(key, data=np.zeros(10, np.int64))
    rc, _, err = run_cli(*base, "-tf", files["mixed"], "--pairing", short)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "short.h5" in err and "events" in err
    nolabel = tmp_path / "nolabel.h5"
    with h5py.File(files["mixed"]) as src, h5py.File(nolabel, "w") as dst:
        src.copy(src["INPUTS"], dst, name="INPUTS")
    rc, _, err = run_cli(*base, "-tf", nolabel)
    assert rc == 2 and "CLASSIFICATIONS/EVENT/signal" in err
    rc, _, err = run_cli("dnn", "test", tmp_path / "no_run", "-tf", files["mixed"])
    assert rc == 2 and "checkpoints/best.pt" in err
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("best.pt"))


def test_bl_dnn_feature_set_16_from_a_20_feature_file(toy_files, tmp_path, run_cli):
    files, _ = toy_files
    feats = tmp_path / "feats20.h5"
    assert run_cli("features", files["mixed"], feats)[0] == 0
    from spanet2.training.dnn import load_dnn_data

    data = load_dnn_data(feats, feature_set="16")
    assert data.names == FEATURE_NAMES_NO_EXTRA and data.features.shape == (800, 16)
