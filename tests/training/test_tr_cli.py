"""CLI: `spanet2 train | test | predict` (and `python -m spanet2.train|test|predict`), outputs and bad inputs."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import trainer_data as td

from spanet2.cli.training import add_predict_arguments, add_test_arguments, add_train_arguments
from spanet2.training import metrics as M
from spanet2.training.trainer import evaluate


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def trained(tmp_path_factory):
    return td.trained_run(tmp_path_factory)


def _one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --------------------------------------------------------------------------------------------- train
def test_train_command_with_the_notes_flags(tmp_path, run_cli):
    event_file = td.write_topology(tmp_path / "event.yaml")
    train_file = td.write_event_file(tmp_path / "train.h5", 120, seed=1)
    val_file = td.write_event_file(tmp_path / "val.h5", 30, seed=2)
    options_file = td.write_options(tmp_path / "o.json", event_file="unused.yaml", training_file="unused.h5")
    rc, out, err = run_cli(
        "train",
        "-of",
        options_file,
        "--log_dir",
        tmp_path / "logs",
        "--name",
        "cli",
        "-ef",
        event_file,
        "-tf",
        train_file,
        "-vf",
        val_file,
        "-e",
        "1",
        "-b",
        "32",
        "--seed",
        "7",
        "--quiet",
    )
    assert rc == 0, err
    run = tmp_path / "logs" / "cli" / "version_0"
    assert f"run directory: {run}" in out and "best epoch: epoch=1" in out
    saved = json.loads((run / "options.json").read_text())
    assert (saved["epochs"], saved["batch_size"], saved["seed"]) == (1, 32, 7)
    assert saved["training_file"] == str(train_file) and saved["validation_file"] == str(val_file)


def test_module_entry_points_take_the_same_flags():
    import argparse

    from spanet2.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, add in (
        ("train", add_train_arguments),
        ("test", add_test_arguments),
        ("predict", add_predict_arguments),
    ):
        module_flags = {s for a in add(argparse.ArgumentParser())._actions for s in a.option_strings} - {
            "-h",
            "--help",
        }
        command_flags = {s for a in sub.choices[name]._actions for s in a.option_strings} - {"-h", "--help"}
        assert module_flags == command_flags, name
    for flag in (
        "-of",
        "--log_dir",
        "--name",
        "-ef",
        "-tf",
        "-vf",
        "-cf",
        "-e",
        "-b",
        "--gpus",
        "--seed",
        "--engine",
    ):
        assert flag in {s for a in sub.choices["train"]._actions for s in a.option_strings}


def test_python_m_spanet2_test_runs(trained, capsys):
    from spanet2.test import main

    assert main([str(trained["run_dir"]), "-tf", str(trained["test_file"])]) == 0
    assert "| =4 |" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- test
def test_test_command_prints_the_table_and_matches_a_direct_computation(trained, run_cli, tmp_path):
    out_json = tmp_path / "result.json"
    rc, out, err = run_cli("test", trained["run_dir"], "-tf", trained["test_file"], "--json", out_json)
    assert rc == 0, err
    for needle in ("| =4 |", "| =5 |", "| >=6 |", "| Total |", "ACC = ", "AUC = ", "| kappa_lambda |"):
        assert needle in out
    result = json.loads(out_json.read_text())
    assert result["n_events"] == 150
    # direct: predictions file -> metrics
    pred_file = tmp_path / "pred.h5"
    assert run_cli("predict", trained["run_dir"], pred_file, "-tf", trained["test_file"])[0] == 0
    with h5py.File(pred_file) as p, h5py.File(trained["test_file"]) as t:
        pred = np.stack([p[f"TARGETS/h{h}/b{b}"][:] for h in (1, 2) for b in (1, 2)], axis=1)
        target = np.stack([t[f"TARGETS/h{h}/b{b}"][:] for h in (1, 2) for b in (1, 2)], axis=1)
        n_jets = t["INPUTS/Source/MASK"][:].sum(1)
        labels = t["CLASSIFICATIONS/EVENT/signal"][:]
        score = p["CLASSIFICATIONS/EVENT/signal_probability"][:]
        kappa = t["INPUTS/Kappa/kappa"][:]
    table = M.assignment_table(pred, target, n_jets).as_dict()
    for row in ("=4", "=5", ">=6", "Total"):
        for col in ("event_fraction", "event_efficiency", "higgs_efficiency"):
            expected = table[row][col]
            got = result["assignment_table"][row][col]
            assert (got is None and np.isnan(expected)) or got == pytest.approx(expected), (row, col)
    assert result["accuracy"] == pytest.approx(M.accuracy(labels, score))
    assert result["auc"] == pytest.approx(M.roc_auc(labels, score))
    by_kappa = M.pairing_efficiency_by_kappa(pred, target, kappa)
    assert result["pairing_efficiency_by_kappa"] == {f"{k:g}": pytest.approx(v) for k, v in by_kappa.items()}


# ------------------------------------------------------------------------------------------- predict
def test_predict_writes_the_predictions_layout(trained, run_cli, tmp_path):
    out_file = tmp_path / "pred.h5"
    rc, out, err = run_cli(
        "predict",
        trained["run_dir"],
        out_file,
        "-tf",
        trained["test_file"],
        "--output_vectors",
        "--chunk_size",
        "64",
        "-b",
        "16",
    )
    assert rc == 0, err
    with h5py.File(out_file) as p, h5py.File(trained["test_file"]) as t:
        n = 150
        for key in (
            "INPUTS/Source/MASK",
            "INPUTS/Source/pt",
            "INPUTS/Source/btag",
            "INPUTS/Kappa/kappa",
            "WEIGHTS/weight",
            "TRUTH/n_jets",
        ):
            np.testing.assert_array_equal(p[key][:], t[key][:])
        mask = t["INPUTS/Source/MASK"][:]
        jets = []
        for h in ("h1", "h2"):
            b1, b2 = p[f"TARGETS/{h}/b1"][:], p[f"TARGETS/{h}/b2"][:]
            assert b1.dtype == np.int64 and b1.shape == (n,)
            assert (b1 < b2).all()  # every event has >= 4 jets: always assigned, daughters ascending
            assert mask[np.arange(n), b1].all() and mask[np.arange(n), b2].all()  # never a padded jet
            jets += [b1, b2]
            prob = p[f"TARGETS/{h}/assignment_probability"][:]
            assert prob.shape == (n,) and ((prob > 0) & (prob <= 1)).all()
            det = p[f"TARGETS/{h}/detection_probability"][:]
            assert ((det >= 0) & (det <= 1)).all()
            assert p[f"EMBEDDINGS/{h}/PARTICLE"].shape == (n, 16)
        assert (
            np.sort(np.stack(jets, 1), 1)[:, 1:] != np.sort(np.stack(jets, 1), 1)[:, :-1]
        ).all()  # no reuse
        scores = p["CLASSIFICATIONS/EVENT/signal"][:]
        assert scores.shape == (n, 2) and np.allclose(scores.sum(1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(p["CLASSIFICATIONS/EVENT/signal_probability"][:], scores[:, 1])
        assert p["EMBEDDINGS/EVENT"].shape == (n, 16)
        assert "SpecialKey.Targets" not in p and "provenance" in p.attrs
    # chunking changes nothing
    whole = tmp_path / "whole.h5"
    assert run_cli("predict", trained["run_dir"], whole, "-tf", trained["test_file"])[0] == 0
    with h5py.File(out_file) as a, h5py.File(whole) as b:
        np.testing.assert_array_equal(a["TARGETS/h1/b1"][:], b["TARGETS/h1/b1"][:])
        np.testing.assert_allclose(
            a["CLASSIFICATIONS/EVENT/signal"][:], b["CLASSIFICATIONS/EVENT/signal"][:], atol=1e-6
        )
    # the same numbers `test` reports
    result = evaluate(trained["run_dir"], trained["test_file"])
    assert result["n_events"] == 150


def test_predict_reads_specialkey_spellings_and_files_without_targets(trained, run_cli, tmp_path):
    odd = tmp_path / "odd.h5"
    with h5py.File(trained["test_file"]) as src, h5py.File(odd, "w") as dst:
        src.copy("INPUTS", dst, name="SpecialKey.Inputs")  # upstream on Python 3.11; no TARGETS at all
    rc, _, err = run_cli("predict", trained["run_dir"], tmp_path / "p.h5", "-tf", odd)
    assert rc == 0, err
    plain = tmp_path / "plain.h5"
    assert run_cli("predict", trained["run_dir"], plain, "-tf", trained["test_file"])[0] == 0
    with h5py.File(tmp_path / "p.h5") as a, h5py.File(plain) as b:
        assert "INPUTS" in a and "SpecialKey.Inputs" not in a
        np.testing.assert_array_equal(a["TARGETS/h2/b2"][:], b["TARGETS/h2/b2"][:])


# ---------------------------------------------------------------------------------------- bad inputs
def test_malformed_options_json(tmp_path, run_cli):
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": 2,,}')
    rc, _, err = run_cli("train", "-of", bad, "--log_dir", tmp_path / "logs", "--name", "x")
    _one_line_error(rc, err, str(bad), "not valid JSON")
    assert not (tmp_path / "logs").exists()


def test_option_with_wrong_type(tmp_path, run_cli):
    bad = td.write_options(tmp_path / "o.json", event_file="e.yaml", training_file="t.h5", batch_size="big")
    rc, _, err = run_cli("train", "-of", bad, "--log_dir", tmp_path / "logs", "--name", "x")
    _one_line_error(rc, err, str(bad), "batch_size")


def test_event_file_feature_missing_from_the_hdf5(tmp_path, run_cli):
    yaml = td.EVENT_YAML.replace("      btag: none\n", "      btag: none\n      energy: log_normalize\n")
    event_file = td.write_topology(tmp_path / "event.yaml", yaml)
    train_file = td.write_event_file(tmp_path / "train.h5", 40, seed=1)
    options = td.write_options(tmp_path / "o.json", event_file=event_file, training_file=train_file)
    rc, _, err = run_cli("train", "-of", options, "--log_dir", tmp_path / "logs", "--name", "x")
    _one_line_error(rc, err, str(train_file), "INPUTS/Source/energy")
    assert not list((tmp_path / "logs").glob("x/version_*")) if (tmp_path / "logs").exists() else True


@pytest.mark.parametrize("command", ["test", "predict", "export"])
def test_log_dir_without_checkpoint(trained, run_cli, tmp_path, command):
    empty = tmp_path / "logs" / "x" / "version_0"
    (empty / "checkpoints").mkdir(parents=True)
    for name in ("options.json", "event.yaml", "normalization.json"):
        (empty / name).write_bytes((trained["run_dir"] / name).read_bytes())
    out_file = tmp_path / "out.file"
    args = {
        "test": ("test", empty, "-tf", trained["test_file"]),
        "predict": ("predict", empty, out_file, "-tf", trained["test_file"]),
        "export": ("export", empty, out_file),
    }[command]
    rc, _, err = run_cli(*args)
    _one_line_error(rc, err, str(empty), "no checkpoint")
    assert not out_file.exists()
    rc, _, err = run_cli(*[a if a is not empty else tmp_path / "nowhere" for a in args])
    _one_line_error(rc, err, "log directory not found")


@pytest.mark.parametrize("command", ["test", "predict"])
def test_test_file_with_a_different_jet_padding(trained, run_cli, tmp_path, command):
    narrow = td.write_event_file(tmp_path / "narrow.h5", 20, seed=4, n_pad=8)
    out_file = tmp_path / "pred.h5"
    args = (
        ("test", trained["run_dir"], "-tf", narrow)
        if command == "test"
        else ("predict", trained["run_dir"], out_file, "-tf", narrow)
    )
    rc, _, err = run_cli(*args)
    _one_line_error(rc, err, str(narrow), "INPUTS/Source/MASK", "8 jets")
    assert not out_file.exists() and not list(tmp_path.glob(".pred.h5*"))


def test_predict_onto_its_own_input(trained, run_cli):
    rc, _, err = run_cli("predict", trained["run_dir"], trained["test_file"], "-tf", trained["test_file"])
    _one_line_error(rc, err, "must differ")


def test_missing_test_file(trained, run_cli, tmp_path):
    rc, _, err = run_cli("test", trained["run_dir"], "-tf", tmp_path / "absent.h5")
    _one_line_error(rc, err, "absent.h5", "not found")
