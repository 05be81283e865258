"""Selection: fixed threshold mask, best S/√B against a brute-force scan, minimum-yield guards."""

from __future__ import annotations

import numpy as np

from spanet2.stats.selection import (
    ThresholdChoice,
    best_threshold,
    best_threshold_from_histograms,
    select_threshold,
)


def test_select_threshold_is_strict_greater():
    score = np.array([0.1, 0.5, 0.9, 0.95])
    assert select_threshold(score, 0.9).tolist() == [False, False, False, True]


def _brute_force(sig_s, sig_w, bkg_s, bkg_w, lumi, min_s, min_b, min_mc):
    best = (-np.inf, None)
    for cut in np.unique(np.concatenate([sig_s, bkg_s])):
        s_mask, b_mask = sig_s >= cut, bkg_s >= cut
        s, b = lumi * sig_w[s_mask].sum(), lumi * bkg_w[b_mask].sum()
        if s < min_s or b < min_b or s_mask.sum() < min_mc or b_mask.sum() < min_mc or b <= 0:
            continue
        if s / np.sqrt(b) > best[0]:
            best = (s / np.sqrt(b), cut)
    return best


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(3)
    sig_s, bkg_s = rng.beta(4, 1, 400), rng.beta(1, 3, 3000)
    sig_w, bkg_w = rng.uniform(0.5, 1.5, 400) * 1e-3, rng.uniform(0.5, 1.5, 3000) * 0.05
    choice = best_threshold(
        sig_s, sig_w, bkg_s, bkg_w, lumi_ifb=139, min_signal=1, min_background=5, min_mc_events=10
    )
    expected_sig, expected_cut = _brute_force(sig_s, sig_w, bkg_s, bkg_w, 139, 1, 5, 10)
    assert isinstance(choice, ThresholdChoice)
    assert np.isclose(choice.significance, expected_sig, rtol=1e-12)
    # the threshold keeps exactly the events with score >= the brute-force cut
    assert select_threshold(sig_s, choice.threshold).sum() == (sig_s >= expected_cut).sum()
    assert select_threshold(bkg_s, choice.threshold).sum() == (bkg_s >= expected_cut).sum()
    assert "S/sqrt(B)" in choice.reason


def test_minimum_background_moves_the_cut_and_says_so():
    rng = np.random.default_rng(4)
    sig_s, bkg_s = rng.beta(5, 1, 2000), rng.beta(1, 5, 20000)
    free = best_threshold(
        sig_s,
        np.full(2000, 1e-3),
        bkg_s,
        np.full(20000, 1e-2),
        lumi_ifb=139,
        min_signal=0,
        min_background=0,
        min_mc_events=1,
    )
    guarded = best_threshold(
        sig_s,
        np.full(2000, 1e-3),
        bkg_s,
        np.full(20000, 1e-2),
        lumi_ifb=139,
        min_signal=0,
        min_background=200,
        min_mc_events=1,
    )
    assert guarded.threshold < free.threshold
    assert guarded.significance <= free.significance
    assert "limited by the minimum-yield" in guarded.reason
    assert select_threshold(bkg_s, guarded.threshold).sum() * 1e-2 * 139 >= 200


def test_impossible_requirements_give_nan_and_a_reason():
    choice = best_threshold_from_histograms(
        np.array([0.0, 0.5, 1.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0]), min_signal=100.0
    )
    assert np.isnan(choice.threshold)
    assert "no threshold" in choice.reason
