"""QCD 4b background: normalisation (PHYSICS.md §5), generator cuts, energy scaling, no 125 GeV peak."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from spanet2.generate import background
from spanet2.generate.background import (
    SIGMA_4B_13TEV_FB,
    background_cross_section,
    generate_background_partons,
    model_cross_section,
)
from spanet2.generate.detector import fast_detector
from spanet2.generate.selection import finalize_events
from spanet2.physics.kinematics import p4_mass, p4_to_ptetaphim, ptetaphim_to_p4
from spanet2.physics.pairing import min_dr_pairing

sys.path.insert(0, str(Path(__file__).parent))
from gen_toy_partons import toy_signal_partons  # noqa: E402


def test_public_api():
    assert {"generate_background_partons", "background_cross_section", "model_cross_section"} <= set(
        background.__all__
    )


def test_events_pass_generator_cuts_and_sum_to_the_reference_cross_section():
    events = generate_background_partons(3000, sqrt_s_tev=13.0, rng=np.random.default_rng(0))
    assert len(events) == 3000
    pt, eta, _, _ = p4_to_ptetaphim(events.b)
    assert (pt > 25).all() and (np.abs(eta) < 2.5).all()
    assert (np.diff(pt, axis=1) <= 0).all()  # leading pT first
    assert events.weight.sum() == pytest.approx(SIGMA_4B_13TEV_FB, rel=1e-9)
    assert (events.weight > 0).all()
    # partial unweighting: most events share the reference weight
    assert np.mean(events.weight == events.weight.min()) > 0.5
    assert (events.process == 0).all() and np.isnan(events.kappa).all() and (events.kappa_terms == 0).all()
    assert set(np.unique(events.incoming)) <= {21, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5}
    assert np.mean(events.incoming[:, 0] == 21) > 0.8  # gg dominates at the LHC
    # four-momentum conservation with the incoming partons: Σ E ≤ (x1 + x2) √s / 2
    total = events.b.sum(axis=1)
    assert (total[:, 0] <= (events.x1 + events.x2) * 6500.0 * (1 + 1e-9)).all()


def test_same_seed_same_events():
    a = generate_background_partons(200, sqrt_s_tev=13.0, rng=np.random.default_rng(7))
    b = generate_background_partons(200, sqrt_s_tev=13.0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.b, b.b)
    np.testing.assert_array_equal(a.weight, b.weight)
    with pytest.raises(ValueError):
        generate_background_partons(-1, sqrt_s_tev=13.0, rng=np.random.default_rng(0))


def test_model_cross_section_and_energy_scaling():
    sigma13, err13 = model_cross_section(13.0)
    # the model's own LO estimate lands near the LO 2→4 number it is normalised to
    assert 0.75 * SIGMA_4B_13TEV_FB < sigma13 < 1.33 * SIGMA_4B_13TEV_FB
    assert err13 < 0.02 * sigma13
    ratio = background_cross_section(14.0) / background_cross_section(13.0)
    assert 1.05 < ratio < 1.30
    assert background_cross_section(13.0) == SIGMA_4B_13TEV_FB


def _leading_candidate_mass(events) -> np.ndarray:
    feats = [events[f"INPUTS/Source/{f}"] for f in ("pt", "eta", "phi", "mass", "btag", "MASK")]
    pairing = min_dr_pairing(*feats)
    p4 = ptetaphim_to_p4(*feats[:4])  # (N, J, 4)
    return p4_mass(np.take_along_axis(p4, pairing[:, :2, None], axis=1).sum(axis=1))


def _peak_ratio(mass: np.ndarray) -> float:
    """Events in 110-140 GeV over the mean of the two 30 GeV sidebands (80-110, 140-170)."""
    window = np.sum((mass > 110) & (mass < 140))
    sides = 0.5 * (np.sum((mass > 80) & (mass < 110)) + np.sum((mass > 140) & (mass < 170)))
    return window / max(sides, 1.0)


def test_no_125_gev_peak_after_the_four_tag_cut():
    rng = np.random.default_rng(3)
    partons = generate_background_partons(50_000, sqrt_s_tev=13.0, rng=rng)
    events = finalize_events(fast_detector(partons, rng), partons, kappa_input=np.ones(len(partons)))
    n_pass = len(events["TRUTH/process"])
    pass_rate = n_pass / len(partons)
    assert 0.002 < pass_rate < 0.03  # the note: ≈ 0.0096
    assert events["WEIGHTS/weight"].sum() == pytest.approx(SIGMA_4B_13TEV_FB * pass_rate, rel=0.35)
    assert (events["TARGETS/h1/b1"] == -1).all() and (events["CLASSIFICATIONS/EVENT/signal"] == 0).all()
    assert _peak_ratio(_leading_candidate_mass(events)) < 1.2
    # parton level, all six b-pair masses: smooth through 125 GeV
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    masses = np.concatenate([p4_mass(partons.b[:, i] + partons.b[:, j]) for i, j in pairs])
    assert _peak_ratio(masses) < 1.2
    # positive control: the same statistic sees the Higgs peak in signal
    sig = toy_signal_partons(20_000, np.random.default_rng(4))
    sig_events = finalize_events(fast_detector(sig, rng), sig, kappa_input=np.ones(len(sig)))
    assert _peak_ratio(_leading_candidate_mass(sig_events)) > 1.5
