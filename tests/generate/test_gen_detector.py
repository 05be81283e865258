"""Fast detector: response, tagging, merging, acceptance, determinism, and the note's 2h fractions and
min-ΔR efficiencies (PHYSICS.md §8) with the real LO signal generator."""

from __future__ import annotations

import numpy as np
import pytest

from spanet2.generate.detector import DEFAULT_DETECTOR, DetectorParameters, apply_btagging, fast_detector
from spanet2.generate.partons import PartonEvents
from spanet2.generate.selection import finalize_events, match_jets_to_quarks
from spanet2.generate.signal import generate_signal_partons
from spanet2.physics.kinematics import ptetaphim_to_p4
from spanet2.physics.pairing import min_dr_pairing


def _four_b(pt, eta, phi):
    pt, eta, phi = (np.asarray(a, float) for a in (pt, eta, phi))
    n = len(pt)
    b = ptetaphim_to_p4(pt, eta, phi, np.full(pt.shape, 4.7))
    return PartonEvents(
        b=b,
        weight=np.ones(n),
        kappa_terms=np.zeros((n, 3)),
        kappa=np.full(n, np.nan),
        process=np.zeros(n, np.int8),
        x1=np.full(n, 0.1),
        x2=np.full(n, 0.1),
        scale=np.full(n, 100.0),
        incoming=np.full((n, 2), 21),
        extra=None,
        extra_pdg=None,
        higgs=None,
        sqrt_s_tev=13.0,
    )


QUIET = DetectorParameters(isr_rate=0.0, fsr_prob=0.0)  # no radiation: one jet per well-separated quark


def test_same_seed_same_jets_and_contract_shapes():
    rng = np.random.default_rng(0)
    n = 2000
    partons = _four_b(
        rng.uniform(30, 200, (n, 4)), rng.uniform(-3, 3, (n, 4)), rng.uniform(-np.pi, np.pi, (n, 4))
    )
    a = fast_detector(partons, np.random.default_rng(5))
    b = fast_detector(partons, np.random.default_rng(5))
    for name in ("pt", "eta", "phi", "mass", "btag", "mask", "met", "n_muons"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.pt.ndim == 2 and a.btag.dtype == bool and a.flavour.dtype == np.int8
    real = a.mask
    assert (a.pt[real] > 20).all() and (np.abs(a.eta[real]) < 2.5).all()
    assert (a.pt[~real] == 0).all() and not a.btag[~real].any()
    assert (np.diff(np.where(real, a.pt, -1), axis=1) <= 0).all()  # pT-ordered, padding last
    assert (np.abs(a.phi) <= np.pi).all()


def test_btag_rates_per_flavour():
    rng = np.random.default_rng(1)
    flavour = rng.choice(np.array([0, 4, 5], np.int8), size=(200_000,))
    tags = apply_btagging(flavour, np.ones(flavour.shape, bool), rng)
    for fl, eff in ((5, 0.77), (4, 0.204), (0, 0.0077)):
        sel = flavour == fl
        rate = tags[sel].mean()
        assert abs(rate - eff) < 4 * np.sqrt(eff * (1 - eff) / sel.sum()) + 1e-4
    assert not apply_btagging(flavour, np.zeros(flavour.shape, bool), rng).any()


def test_b_jet_response_mean_and_low_tail():
    rng = np.random.default_rng(2)
    n = 20_000
    phis = np.tile([0.0, 1.6, 3.1, -1.6], (n, 1))
    partons = _four_b(np.full((n, 4), 100.0), np.zeros((n, 4)), phis)
    jets = fast_detector(partons, rng, QUIET)
    matched = match_jets_to_quarks(jets.eta, jets.phi, jets.mask, np.zeros((n, 4)), phis)
    ok = matched >= 0
    response = np.take_along_axis(jets.pt, np.where(ok, matched, 0), axis=1)[ok] / 100.0
    assert 0.88 < response.mean() < 0.95
    assert np.mean(response < 0.7) > 0.04  # semileptonic / out-of-cone low tail
    # the core width follows σ_E = √((0.05E)² + 1.5²E) ≈ 0.16 at E = 100 GeV (plus the loss spread)
    assert 0.12 < np.std(response) < 0.25


def test_close_partons_merge_into_one_jet():
    rng = np.random.default_rng(3)
    n = 500
    # quarks 0 and 1 are 0.2 apart -> one jet carrying both, flavour b
    partons = _four_b(
        np.tile([150.0, 100.0, 120.0, 90.0], (n, 1)), np.zeros((n, 4)), np.tile([0.0, 0.2, 2.0, -2.0], (n, 1))
    )
    jets = fast_detector(partons, rng, QUIET)
    n_jets = jets.mask.sum(axis=1)
    assert (n_jets <= 3).all() and np.mean(n_jets == 3) > 0.95
    merged_pt = jets.pt[:, 0]  # the merged jet is the hardest
    assert np.median(merged_pt) > 180


def test_isr_adds_jets_and_acceptance_drops_forward_quarks():
    rng = np.random.default_rng(4)
    n = 5000
    central = _four_b(np.full((n, 4), 80.0), np.zeros((n, 4)), np.tile([0.0, 1.6, 3.1, -1.6], (n, 1)))
    no_isr = fast_detector(central, rng, QUIET).mask.sum(axis=1).mean()
    with_isr = fast_detector(central, rng, DEFAULT_DETECTOR).mask.sum(axis=1).mean()
    assert with_isr > no_isr + 0.3
    forward = _four_b(np.full((n, 4), 80.0), np.full((n, 4), 3.0), np.tile([0.0, 1.6, 3.1, -1.6], (n, 1)))
    assert fast_detector(forward, rng, QUIET).mask.sum() == 0


# PHYSICS.md §8: 2h fractions in N_jet = 4 / 5 / >= 6 after the four-tag cut, min-ΔR efficiency.
NOTE_2H = {1.0: (0.280, 0.287, 0.229), 5.0: (0.315, 0.255, 0.174)}
NOTE_MIN_DR = {-5.0: 0.644, 1.0: 0.809, 5.0: 0.395}


def _selected(kappa: float, n_partons: int, seed: int):
    rng = np.random.default_rng(seed)
    partons = generate_signal_partons(n_partons, kappa=kappa, sqrt_s_tev=13.0, rng=rng)
    jets = fast_detector(partons, rng)
    return finalize_events(jets, partons, kappa_input=np.full(len(partons), kappa))


def _min_dr_efficiency(events) -> float:
    two_h = events["TRUTH/n_higgs_matched"] == 2
    feats = [events[f"INPUTS/Source/{f}"] for f in ("pt", "eta", "phi", "mass", "btag", "MASK")]
    pred = np.sort(min_dr_pairing(*feats).reshape(-1, 2, 2), axis=2)
    truth = np.sort(
        np.stack([events[f"TARGETS/h{h}/b{k}"] for h in (1, 2) for k in (1, 2)], 1).reshape(-1, 2, 2), axis=2
    )
    right = (pred == truth).all(axis=(1, 2)) | (pred == truth[:, ::-1]).all(axis=(1, 2))
    return float(right[two_h].mean())


@pytest.mark.parametrize("kappa", [1.0, 5.0, -5.0])
def test_reproduces_note_fractions_and_min_dr_efficiency(kappa):
    events = _selected(kappa, 60_000, seed=11)
    n_jets, n_h = events["TRUTH/n_jets"], events["TRUTH/n_higgs_matched"]
    assert len(n_jets) > 1500
    if kappa in NOTE_2H:
        fractions = [
            np.mean((n_h == 2) & (n_jets == 4)),
            np.mean((n_h == 2) & (n_jets == 5)),
            np.mean((n_h == 2) & (n_jets >= 6)),
        ]
        np.testing.assert_allclose(fractions, NOTE_2H[kappa], atol=0.05)
    assert abs(_min_dr_efficiency(events) - NOTE_MIN_DR[kappa]) < 0.08
