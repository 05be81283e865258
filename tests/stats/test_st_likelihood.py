"""Likelihood and intervals against pyhf and the study's method (the acceptance checks of issue 7)."""

from __future__ import annotations

import numpy as np
import pytest

from spanet2.stats.intervals import (
    allowed_region,
    cls_interval,
    delta_twice_nll,
    profile_likelihood_interval,
    study_cls_interval,
)
from spanet2.stats.likelihood import KappaLikelihood, LikelihoodSettings
from spanet2.stats.luminosity import IntervalSettings, equivalent_luminosities, intervals_at

GRID = np.arange(-20.0, 25.01, 0.5)


@pytest.fixture
def templates(st_templates):
    return st_templates


def test_yields_are_like_the_note(templates):
    tpl = templates["spanet2"]
    signal_sm = 139 * tpl.signal(1.0, 1.0).sum()
    background = 139 * tpl.background.sum()
    assert 5 < signal_sm < 60
    assert 100 < background < 3000
    assert tpl.n_background_mc > 1000  # importance-weighted background keeps MC statistics after the cut


@pytest.mark.parametrize("asimov", ["background", "background+sm"])
def test_closed_form_twice_nll_equals_pyhf(templates, asimov):
    model = KappaLikelihood(templates["spanet2"], 300, LikelihoodSettings(asimov=asimov))
    kappas = np.array([-8.0, -2.0, 1.0, 2.4, 6.0, 12.0])
    ours, theirs = model.twice_nll(kappas), model.twice_nll_pyhf(kappas)
    assert np.allclose(ours - ours.min(), theirs - theirs.min(), atol=1e-6)


def test_profiled_nuisances_equal_pyhf_fits(templates):
    settings = LikelihoodSettings(background_norm_uncertainty=0.05, signal_theory_uncertainty=0.2)
    model = KappaLikelihood(templates["spanet2"], 300, settings)
    kappas = np.array([-10.0, -3.0, 1.0, 2.4, 7.0, 20.0])
    ours, theirs = model.twice_nll_newton(kappas), model.twice_nll(kappas)  # the scan's: pyhf fits
    assert np.allclose(ours - ours.min(), theirs - theirs.min(), atol=2e-3)
    plain = KappaLikelihood(templates["spanet2"], 300, LikelihoodSettings()).twice_nll(kappas)
    # nuisances can only loosen the constraint
    assert np.all((ours - ours.min()) <= (plain - plain.min()) + 1e-9)


@pytest.mark.parametrize("asimov", ["background", "background+sm"])
def test_closed_form_cls_equals_pyhf_hypotest(templates, asimov):
    model = KappaLikelihood(templates["min_dr_dnn"], 139, LikelihoodSettings(asimov=asimov))
    kappas = np.array([-6.0, -3.0, 0.0, 1.0, 2.4, 5.0, 8.0])
    assert np.allclose(model.cls(kappas), model.cls_pyhf(kappas), atol=1e-5)


def test_pl_interval_equals_pyhf_fit_scan(templates):
    """Acceptance: closed-form PL intervals = a pyhf-fit-based scan of the same model within 0.01."""
    for settings in (LikelihoodSettings(), LikelihoodSettings(background_norm_uncertainty=0.03)):
        model = KappaLikelihood(templates["spanet2"], 300, settings)
        ours = profile_likelihood_interval(model, GRID, threshold=3.84)
        values = model.twice_nll_pyhf(GRID)
        best = values.min()
        pyhf_iv = allowed_region(
            values - best,
            GRID,
            lambda k, m=model, b=best: float(m.twice_nll_pyhf(k)[0]) - b,
            3.84,
            allowed_below=True,
            statistic="pl",
        )
        assert abs(ours.lower - pyhf_iv.lower) < 0.01
        assert abs(ours.upper - pyhf_iv.upper) < 0.01


def test_cls_interval_equals_the_study_method(templates):
    """Acceptance: hypotest-at-μ=1 CLs interval = μ-scan upper_limit + spline crossings within 0.02."""
    model = KappaLikelihood(templates["spanet2"], 139, LikelihoodSettings())
    fast = cls_interval(model, GRID)
    study, limits = study_cls_interval(model)
    assert limits.shape == (26,)
    assert abs(fast.lower - study.lower) < 0.02
    assert abs(fast.upper - study.upper) < 0.02
    pyhf_engine = KappaLikelihood(templates["spanet2"], 139, LikelihoodSettings(cls_engine="pyhf"))
    slow = cls_interval(pyhf_engine, np.arange(-8.0, 14.01, 1.0))
    assert abs(slow.lower - fast.lower) < 1e-2 and abs(slow.upper - fast.upper) < 1e-2


def test_sm_asimov_contains_one_and_background_asimov_centres_on_the_minimum(templates):
    tpl = templates["spanet2"]
    for lumi in (139, 3000):
        sm = intervals_at(tpl, lumi, IntervalSettings(GRID, LikelihoodSettings(asimov="background+sm")))
        for iv in sm.values():
            assert any((lo is None or lo < 1.0) and (hi is None or hi > 1.0) for lo, hi in iv.pieces)
    model = KappaLikelihood(tpl, 3000, LikelihoodSettings())
    _, kappa_at_min, _ = delta_twice_nll(model, GRID)
    terms = tpl.signal_terms.sum(axis=1)
    kappa_sigma_min = -terms[1] / (2 * terms[2])  # minimum of the selected σ(κλ)
    assert abs(kappa_at_min - kappa_sigma_min) < 0.5
    bkg = intervals_at(tpl, 3000, IntervalSettings(GRID, LikelihoodSettings()))
    assert bkg["pl"].lower > 0  # the study's observation: the 3000 fb⁻¹ lower bound is positive
    assert bkg["pl"].lower < kappa_sigma_min < bkg["pl"].upper


def test_intervals_shrink_with_luminosity(templates):
    settings = IntervalSettings(GRID, LikelihoodSettings(), pl_threshold=3.92)
    widths = {stat: [] for stat in ("pl", "cls")}
    for lumi in (139, 300, 1000, 3000):
        for stat, iv in intervals_at(templates["min_dr_dnn"], lumi, settings).items():
            widths[stat].append(iv.width)
    for values in widths.values():
        assert all(a > b for a, b in zip(values[:-1], values[1:], strict=False))


def test_equivalent_luminosity_of_a_method_against_itself_is_l(templates):
    settings = IntervalSettings(GRID, LikelihoodSettings())
    for lumi in (139.0, 300.0):
        eq = equivalent_luminosities(templates["spanet2"], templates["spanet2"], lumi, settings)
        for stat in ("pl", "cls"):
            for what in ("width", "lower", "upper"):
                assert eq[stat][what] == pytest.approx(lumi, rel=2e-3)
    worse = equivalent_luminosities(templates["spanet2"], templates["min_dr_dnn"], 300.0, settings)
    assert worse["pl"]["width"] > 300.0  # the weaker method needs more data for the same Δκλ


def test_disjoint_pieces_are_all_reported():
    grid = np.linspace(-5.1, 7.1, 62)
    func = lambda k: np.sin(np.pi * np.asarray(k, dtype=float) / 2)  # noqa: E731  (< 0 on (−2, 0), (2, 4), ...)
    iv = allowed_region(func(grid), grid, lambda k: float(func(k)), 0.0, allowed_below=True, statistic="pl")
    assert len(iv.pieces) == 4
    assert iv.pieces[0][0] is None and iv.pieces[-1][1] is None  # open at both grid ends: no invented bound
    assert iv.pieces[0][1] == pytest.approx(-4.0, abs=1e-3)
    assert iv.pieces[1] == pytest.approx((-2.0, 0.0), abs=1e-3)
    assert iv.pieces[2] == pytest.approx((2.0, 4.0), abs=1e-3)
    assert iv.pieces[3][0] == pytest.approx(6.0, abs=1e-3)
    assert not iv.closed and iv.width is None
