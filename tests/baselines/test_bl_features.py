"""High-level observables: hand-computed values (incl. φ wrap-around), symmetry invariance, the features command."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from spanet2.physics import features as hl
from spanet2.physics.features import FEATURE_NAMES, FEATURE_NAMES_NO_EXTRA, high_level_features

# two massless pairs: (j0, j1) straddle φ = ±π, (j2, j3) back-to-back in η
PT = np.array([[100.0, 50.0, 80.0, 60.0, 30.0, 0.0]])
ETA = np.array([[0.0, 0.0, 1.0, -1.0, 0.3, 0.0]])
PHI = np.array([[3.1, -3.1, 0.0, 0.0, 1.0, 0.0]])
MASS = np.zeros((1, 6))
BTAG = np.array([[1, 0, 1, 1, 0, 0]], dtype=bool)
MASK = np.array([[1, 1, 1, 1, 1, 0]], dtype=bool)
EXTRA = dict(met=np.array([33.0]), met_phi=np.array([-2.0]), n_electrons=np.array([1]), n_muons=np.array([2]))


def _expected() -> dict[str, float]:
    h1_px, h1_py, h1_pz = 150 * math.cos(3.1), 50 * math.sin(3.1), 0.0
    h1_pt = math.hypot(h1_px, h1_py)
    h2_px, h2_py, h2_pz = 140.0, 0.0, 20 * math.sinh(1.0)
    e1, e2 = 150.0, 140 * math.cosh(1.0)
    hh_px, hh_py, hh_pz, hh_e = h1_px + h2_px, h1_py + h2_py, h1_pz + h2_pz, e1 + e2
    return {
        "h1_pt": h1_pt, "h1_eta": 0.0, "h1_phi": math.atan2(h1_py, h1_px),
        "h1_mass": math.sqrt(2 * 100 * 50 * (1 - math.cos(6.2))),
        "h2_pt": 140.0, "h2_eta": math.asinh(h2_pz / 140.0), "h2_phi": 0.0,
        "h2_mass": math.sqrt(2 * 80 * 60 * (math.cosh(2.0) - 1)),
        "h1_delta_r": 2 * math.pi - 6.2, "h2_delta_r": 2.0,
        "met": 33.0, "met_phi": -2.0, "n_electrons": 1.0, "n_muons": 2.0,
        "btag_1": 1.0, "btag_2": 0.0, "btag_3": 1.0, "btag_4": 1.0,
        "hh_pt": math.hypot(hh_px, hh_py),
        "hh_mass": math.sqrt(hh_e**2 - hh_px**2 - hh_py**2 - hh_pz**2),
    }  # fmt: skip


def test_bl_feature_names_exported():
    assert len(FEATURE_NAMES) == 20 and len(set(FEATURE_NAMES)) == 20
    assert len(FEATURE_NAMES_NO_EXTRA) == 16
    assert set(FEATURE_NAMES) - set(FEATURE_NAMES_NO_EXTRA) == set(hl.EXTRA_FEATURES)
    assert hl.M_HH in FEATURE_NAMES and hl.feature_names(False) == FEATURE_NAMES_NO_EXTRA


def test_bl_hand_computed_values_with_phi_wraparound():
    features, ordered = high_level_features(
        PT, ETA, PHI, MASS, BTAG, np.array([[0, 1, 2, 3]]), mask=MASK, **EXTRA
    )
    expected = _expected()
    got = dict(zip(FEATURE_NAMES, features[0].astype(float), strict=True))
    for name in FEATURE_NAMES:
        assert got[name] == pytest.approx(expected[name], rel=2e-5, abs=2e-5), name
    # the h1 candidate sits at φ ≈ π: the wrap must not put it near 0, and ΔR must use the short way round
    assert abs(got["h1_phi"]) > 3.0
    assert got["h1_delta_r"] < 0.1
    assert ordered.tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("pairing", [[2, 3, 0, 1], [1, 0, 3, 2], [3, 2, 1, 0], [1, 0, 2, 3]])
def test_bl_features_do_not_depend_on_symmetric_order(pairing):
    reference, ref_order = high_level_features(
        PT, ETA, PHI, MASS, BTAG, np.array([[0, 1, 2, 3]]), mask=MASK, **EXTRA
    )
    features, ordered = high_level_features(PT, ETA, PHI, MASS, BTAG, np.array([pairing]), mask=MASK, **EXTRA)
    np.testing.assert_array_equal(features, reference)
    np.testing.assert_array_equal(ordered, ref_order)


def test_bl_sixteen_feature_variant_and_invalid_pairings():
    pt, eta, phi, mass, btag, mask = (np.repeat(x, 4, axis=0) for x in (PT, ETA, PHI, MASS, BTAG, MASK))
    pairing = np.array(
        [[0, 1, 2, 3], [0, 1, 2, -1], [0, 0, 2, 3], [0, 1, 2, 5]]
    )  # ok, missing, repeated, padded
    f20, order = high_level_features(
        pt, eta, phi, mass, btag, pairing, mask=mask, **{k: np.repeat(v, 4) for k, v in EXTRA.items()}
    )
    f16, _ = high_level_features(pt, eta, phi, mass, btag, pairing, mask=mask)
    assert f16.shape == (4, 16) and f20.shape == (4, 20)
    keep = [FEATURE_NAMES.index(n) for n in FEATURE_NAMES_NO_EXTRA]
    np.testing.assert_array_equal(f16[0], f20[0, keep])
    assert np.isfinite(f20[0]).all() and np.isnan(f20[1:]).all()
    assert (order[1:] == -1).all()
    with pytest.raises(ValueError):
        high_level_features(pt, eta, phi, mass, btag, pairing, mask=mask, met=np.zeros(4))


def test_bl_toy_signal_peaks_at_higgs_mass_with_true_pairing(toy_files):
    _, arrays = toy_files
    signal = arrays["CLASSIFICATIONS/EVENT/signal"] == 1
    truth = np.stack([arrays[k] for k in hl.PAIRING_PATHS], axis=1)[signal]
    jets = [arrays[f"INPUTS/Source/{k}"][signal] for k in ("pt", "eta", "phi", "mass", "btag", "MASK")]
    features, _ = high_level_features(*jets[:5], truth, mask=jets[5])
    masses = features[:, [FEATURE_NAMES_NO_EXTRA.index("h1_mass"), FEATURE_NAMES_NO_EXTRA.index("h2_mass")]]
    assert np.median(masses) == pytest.approx(125.0, abs=3.0)


def test_bl_features_command_min_dr_and_predictions(toy_files, tmp_path, run_cli):
    files, arrays = toy_files
    out = tmp_path / "f_mindr.h5"
    rc, stdout, stderr = run_cli("features", files["mixed"], out, "--chunk_size", 300)
    assert rc == 0, stderr
    from spanet2.physics.pairing import min_dr_pairing

    jets = [arrays[f"INPUTS/Source/{k}"] for k in ("pt", "eta", "phi", "mass", "btag", "MASK")]
    pairing = min_dr_pairing(*jets)
    extras = {k: arrays[f"GLOBAL_EXTRA/{k}"] for k in ("met", "met_phi", "n_electrons", "n_muons")}
    expected, ordered = high_level_features(*jets[:5], pairing, mask=jets[5], **extras)
    with h5py.File(out) as h5:
        assert list(h5["FEATURES"].attrs["names"]) == list(FEATURE_NAMES)
        got = np.stack([h5["FEATURES"][n][:] for n in FEATURE_NAMES], axis=1)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(h5["FEATURES/pairing"][:], ordered)
        np.testing.assert_array_equal(
            h5["CLASSIFICATIONS/EVENT/signal"][:], arrays["CLASSIFICATIONS/EVENT/signal"]
        )
        assert "WEIGHTS/weight" in h5 and "INPUTS/Kappa/kappa" in h5

    # a "predictions" file carrying the true pairing (SpecialKey spelling, as upstream writes on py3.11)
    pred = tmp_path / "pred.h5"
    with h5py.File(pred, "w") as h5:
        for key in hl.PAIRING_PATHS:
            h5.create_dataset(key.replace("TARGETS", "SpecialKey.Targets"), data=np.maximum(arrays[key], 0))
    out2 = tmp_path / "f_pred.h5"
    rc, _, stderr = run_cli("features", files["mixed"], "--pairing", pred, out2, "--features", "16")
    assert rc == 0, stderr
    with h5py.File(out2) as h5:
        assert len(h5["FEATURES"].attrs["names"]) == 16
        assert h5["FEATURES/hh_mass"].shape == (len(pairing),)


def test_bl_features_command_bad_inputs(toy_files, tmp_path, run_cli, write_predictions):
    files, arrays = toy_files
    other = write_predictions(tmp_path / "other_pred.h5", {k: v[::-1] for k, v in arrays.items()}, 0)
    rc, _, stderr = run_cli("features", files["mixed"], "--pairing", other, tmp_path / "never.h5")
    assert (
        rc == 2 and "other_pred.h5" in stderr and "differ" in stderr and not (tmp_path / "never.h5").exists()
    )
    short = tmp_path / "short_pred.h5"
    with h5py.File(short, "w") as h5:
        for key in hl.PAIRING_PATHS:
            h5.create_dataset(key, data=arrays[key][:-3])
    out = tmp_path / "never.h5"
    rc, stdout, stderr = run_cli("features", files["mixed"], "--pairing", short, out)
    assert rc == 2 and not out.exists()
    assert len(stderr.strip().splitlines()) == 1 and "short_pred.h5" in stderr and "events" in stderr
    rc, _, stderr = run_cli("features", files["noextra"], out, "--features", "20")
    assert rc == 2 and not out.exists() and "GLOBAL_EXTRA/" in stderr
    rc, _, stderr = run_cli("features", tmp_path / "missing.h5", out)
    assert rc == 2 and "not found" in stderr and not out.exists()
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not hdf5")
    rc, _, stderr = run_cli("features", garbage, out)
    assert rc == 2 and "HDF5" in stderr and not out.exists()
