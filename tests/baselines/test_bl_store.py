"""`spanet2 store build`: the event store from test files + predictions/scores, chunked; bad inputs exit 2."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from spanet2.events.store import open_store
from spanet2.physics import features as hl
from spanet2.report.store_builder import StoreInput, build_store, parse_method


@pytest.fixture(scope="module")
def store_inputs(toy_files, tmp_path_factory, write_predictions):
    files, mixed = toy_files
    base = tmp_path_factory.mktemp("bl_store")
    label = mixed["CLASSIFICATIONS/EVENT/signal"]
    sig = {k: v[label == 1] for k, v in mixed.items()}
    bkg = {k: v[label == 0] for k, v in mixed.items()}
    out = dict(files)
    out["pred_mixed"] = write_predictions(base / "pred_mixed.h5", mixed, 1)
    out["pred_sig"] = write_predictions(base / "pred_sig.h5", sig, 2)
    out["pred_bkg"] = write_predictions(base / "pred_bkg.h5", bkg, 3)
    out["scores_sig"] = write_predictions(base / "scores_sig.h5", sig, 4, copy_inputs=False)
    out["scores_bkg"] = write_predictions(base / "scores_bkg.h5", bkg, 5, copy_inputs=False)
    out["pred_short"] = write_predictions(base / "pred_short.h5", mixed, 6, drop=5)
    out["pred_other"] = write_predictions(base / "pred_other.h5", {k: v[::-1] for k, v in mixed.items()}, 7)
    return out, mixed, sig, bkg


def test_bl_parse_method_grammar():
    spec = parse_method("m=min-dr:s.h5,p.h5", 2)
    assert spec.name == "m"
    assert [(s.pairing, s.scores) for s in spec.sources] == [("min-dr", "s.h5"), ("p.h5", None)]
    assert parse_method("spanet2=pred.h5:dnn.h5", 1).sources[0].scores == "dnn.h5"


def test_bl_store_build_signal_background(store_inputs, tmp_path, run_cli):
    files, mixed, sig, bkg = store_inputs
    out = tmp_path / "events.zarr"
    rc, stdout, stderr = run_cli(
        "store", "build", "--signal", files["signal"], "--background", files["background"],
        "--method", f"spanet2={files['pred_sig']},{files['pred_bkg']}",
        "--method", f"min_dr_dnn=min-dr:{files['scores_sig']},min-dr:{files['scores_bkg']}",
        "--output", out, "--chunk_size", 97, "--quiet",
    )  # fmt: skip
    assert rc == 0, stderr
    store = open_store(out)
    assert store.samples == ["background", "signal"]
    assert store.attrs["sqrt_s_tev"] == 13.0 and store.attrs["lumi_unit"] == "fb"
    assert set(store.methods("signal")) == {"spanet2", "min_dr_dnn"}
    assert "kappa_terms" in store.columns("signal") and "kappa_terms" not in store.columns("background")
    for sample, arrays in (("signal", sig), ("background", bkg)):
        np.testing.assert_allclose(store.numpy(sample, "weight"), arrays["WEIGHTS/weight"])
        np.testing.assert_array_equal(store.numpy(sample, "label"), arrays["CLASSIFICATIONS/EVENT/signal"])
        np.testing.assert_array_equal(store.numpy(sample, "n_jets"), arrays["INPUTS/Source/MASK"].sum(axis=1))
        np.testing.assert_array_equal(store.numpy(sample, "kappa_input"), arrays["INPUTS/Kappa/kappa"])
    # Σ w = σ after cuts: the toy's 0.577 fb signal and 6060 fb background
    assert store.numpy("signal", "weight").sum() == pytest.approx(0.577)
    assert store.sample_attrs("background")["cross_section_fb"] == pytest.approx(6060.0)
    np.testing.assert_allclose(store.numpy("signal", "kappa_terms"), sig["WEIGHTS/kappa_terms"])
    # the SPANet2 method: truth pairing in the predictions → features from it, score from the file
    with h5py.File(files["pred_sig"]) as h5:
        pairing = np.stack([h5[k][:] for k in hl.PAIRING_PATHS], axis=1)
        score = h5["CLASSIFICATIONS/EVENT/signal_probability"][:]
    jets = [sig[f"INPUTS/Source/{k}"] for k in ("pt", "eta", "phi", "mass", "btag", "MASK")]
    extras = {k: sig[f"GLOBAL_EXTRA/{k}"] for k in ("met", "met_phi", "n_electrons", "n_muons")}
    expected, ordered = hl.high_level_features(*jets[:5], pairing, mask=jets[5], **extras)
    np.testing.assert_array_equal(store.numpy("signal", "spanet2/features"), expected)
    np.testing.assert_array_equal(store.numpy("signal", "spanet2/pairing"), ordered)
    np.testing.assert_array_equal(
        store.numpy("signal", "spanet2/m_hh"), expected[:, hl.FEATURE_NAMES.index("hh_mass")]
    )
    np.testing.assert_array_equal(store.numpy("signal", "spanet2/score"), score)
    # min-dR: pairing computed from the jets, score from the separate score file
    from spanet2.physics.pairing import min_dr_pairing

    _, min_dr_ordered = hl.high_level_features(*jets[:5], min_dr_pairing(*jets), mask=jets[5], **extras)
    np.testing.assert_array_equal(store.numpy("signal", "min_dr_dnn/pairing"), min_dr_ordered)
    with h5py.File(files["scores_bkg"]) as h5:
        np.testing.assert_array_equal(
            store.numpy("background", "min_dr_dnn/score"), h5["CLASSIFICATIONS/EVENT/signal_probability"][:]
        )
    # the truth pairing is far better than min-dR on the toy signal at finding m_h = 125
    h1_m = hl.FEATURE_NAMES.index("h1_mass")
    near = lambda f: np.mean(np.abs(f[:, h1_m] - 125) < 15)  # noqa: E731
    assert near(store.numpy("signal", "spanet2/features")) > near(
        store.numpy("signal", "min_dr_dnn/features")
    )
    np.testing.assert_array_equal(store.numpy("signal", "targets")[:, 0], sig["TARGETS/h1/b1"])


def test_bl_store_build_single_labelled_file_is_chunk_independent(store_inputs, tmp_path):
    files, mixed, sig, bkg = store_inputs
    method = [f"spanet2={files['pred_mixed']}"]
    big = build_store(tmp_path / "big.zarr", [StoreInput(str(files["mixed"]))], method, progress=False)
    small = build_store(tmp_path / "small.zarr", [StoreInput(str(files["mixed"]))], method, chunk_size=53,
                        store_chunk=71, progress=False)  # fmt: skip
    assert big["events"] == small["events"] == {"signal": 400, "background": 400}
    a, b = open_store(tmp_path / "big.zarr"), open_store(tmp_path / "small.zarr")
    for sample in ("signal", "background"):
        assert a.columns(sample) == b.columns(sample)
        for column in a.columns(sample):
            np.testing.assert_array_equal(a.numpy(sample, column), b.numpy(sample, column))
    label = mixed["CLASSIFICATIONS/EVENT/signal"]
    np.testing.assert_allclose(a.numpy("signal", "weight"), mixed["WEIGHTS/weight"][label == 1])
    assert "kappa_terms" not in a.columns("background")


def _assert_one_line_error(rc, stderr, *needles):
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bl_store_build_bad_inputs(store_inputs, tmp_path, run_cli):
    files, mixed, _, _ = store_inputs
    out = tmp_path / "bad.zarr"
    base = ("store", "build", "--input", files["mixed"], "--output", out, "--quiet")
    rc, _, err = run_cli(*base, "--method", f"spanet2={files['pred_short']}")
    _assert_one_line_error(rc, err, "pred_short.h5", "events")
    rc, _, err = run_cli(
        *base, "--method", f"a={files['pred_mixed']}", "--method", f"a={files['pred_mixed']}"
    )
    _assert_one_line_error(rc, err, "--method", "given twice")
    rc, _, err = run_cli(*base, "--method", f"spanet2={files['pred_other']}")
    _assert_one_line_error(rc, err, "pred_other.h5", "differ")
    rc, _, err = run_cli(*base, "--method", "m=min-dr")
    _assert_one_line_error(rc, err, "--method", "score file")
    rc, _, err = run_cli(*base, "--method", f"m={files['pred_mixed']},{files['pred_mixed']}")
    _assert_one_line_error(rc, err, "--method", "input file")
    rc, _, err = run_cli(*base, "--method", f"weight={files['pred_mixed']}")
    _assert_one_line_error(rc, err, "reserved")
    rc, _, err = run_cli(*base, "--method", f"m={tmp_path / 'nope.h5'}")
    _assert_one_line_error(rc, err, "nope.h5", "not found")
    no_weights = tmp_path / "no_weights.h5"
    with h5py.File(files["mixed"]) as src, h5py.File(no_weights, "w") as dst:
        for group in ("INPUTS", "TARGETS", "CLASSIFICATIONS"):
            src.copy(src[group], dst, name=group)
    rc, _, err = run_cli(
        "store",
        "build",
        "--input",
        no_weights,
        "--output",
        out,
        "--quiet",
        "--method",
        f"spanet2={files['pred_mixed']}",
    )
    _assert_one_line_error(rc, err, "no_weights.h5", "WEIGHTS/weight", "missing")
    rc, _, err = run_cli(
        "store",
        "build",
        "--signal",
        files["mixed"],
        "--output",
        out,
        "--quiet",
        "--method",
        f"spanet2={files['pred_mixed']}",
    )
    _assert_one_line_error(rc, err, "mixed.h5", "label")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.zarr")]  # no temporary left behind


def test_every_per_event_column_is_reserved_from_method_names():
    """Both builders take the per-event columns from one table; a method may never shadow one of them."""
    from spanet2.events.store import EVENT_COLUMN_SOURCES
    from spanet2.report.store_builder import RESERVED_COLUMNS

    assert {*EVENT_COLUMN_SOURCES, "n_jets"} <= set(RESERVED_COLUMNS)
