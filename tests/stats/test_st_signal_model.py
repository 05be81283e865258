"""Signal model: morphing (exact with 3 samples, least squares beyond), reference curves, term scaling."""

from __future__ import annotations

import numpy as np
import pytest

from spanet2.physics import xsec
from spanet2.stats import signal_model as sm


def test_morphing_three_samples_is_exact_lagrange():
    rng = np.random.default_rng(0)
    box, tri = rng.uniform(0.5, 1.0, 10), -rng.uniform(0.1, 0.4, 10)  # amplitudes per bin
    terms = np.stack([box**2, 2 * box * tri, tri**2])  # (3, B): yields (box + κ tri)² ≥ 0
    kappas = [-2.0, 1.0, 5.0]
    hists = np.stack([sm.signal_yields(terms, k) for k in kappas])  # (3, B)
    assert np.allclose(sm.morph_terms(kappas, hists), terms, atol=1e-12)
    for k in (-7.0, 0.3, 2.4, 12.0):
        weights = sm.lagrange_weights(kappas, k)
        lagrange = [np.prod([(k - kj) / (ki - kj) for kj in kappas if kj != ki]) for ki in kappas]
        assert np.allclose(weights, lagrange)
        assert np.allclose(weights @ hists, terms[0] + k * terms[1] + k * k * terms[2])


def test_morphing_many_samples_is_least_squares():
    rng = np.random.default_rng(1)
    terms = np.array([[2.0, 1.0], [-1.5, -0.5], [0.3, 0.2]])  # (3, B=2)
    kappas = np.array([-5, -3, -1, 1, 2, 3, 5, 7, 9, 12], dtype=float)
    exact = np.stack([terms[0] + k * terms[1] + k * k * terms[2] for k in kappas])
    noisy = exact + rng.normal(0, 0.01, exact.shape)
    fitted = sm.morph_terms(kappas, noisy)
    design = np.stack([np.ones_like(kappas), kappas, kappas**2], axis=1)
    assert np.allclose(fitted, np.linalg.lstsq(design, noisy, rcond=None)[0])
    assert np.allclose(fitted, terms, atol=0.02)
    with pytest.raises(ValueError, match="at least 3"):
        sm.morphing_matrix([1.0, 1.0, 2.0])


def test_reference_curves_and_14_tev_scaling():
    nnlo13 = sm.curve_coefficients("lhchwg_nnlo_13")
    assert np.isclose(sm.sigma_of_kappa(nnlo13, 1.0), 31.05, atol=0.02)  # PHYSICS.md §5 SM value
    at14 = sm.curve_coefficients("lhchwg_nnlo_13", sqrt_s_tev=14)
    assert np.isclose(sm.sigma_of_kappa(at14, 1.0), 36.69, atol=0.03)
    assert np.allclose(at14, xsec.CURVES["lhchwg_nnlo_14_scaled"])
    lo = sm.curve_coefficients("lo_madgraph_13")
    assert np.allclose(sm.sigma_of_kappa(lo, xsec.LO_MADGRAPH_KAPPAS), xsec.LO_MADGRAPH_FB[13.0], rtol=0.02)
    kappa_min = -lo[1] / (2 * lo[2])
    assert 2.2 < kappa_min < 2.6  # the LO minimum near 2.4
    assert np.allclose(sm.curve_coefficients([1.0, 2.0, 3.0]), [1, 2, 3])
    with pytest.raises(KeyError):
        sm.curve_coefficients("no_such_curve")


def test_term_scaling_makes_the_total_follow_the_reference():
    generated = sm.curve_coefficients("lo_madgraph_13")
    reference = sm.curve_coefficients("heinrich_14")
    factors = sm.term_scale_factors(generated, reference)
    kappa = np.linspace(-10, 15, 26)
    assert np.allclose(sm.sigma_of_kappa(generated * factors, kappa), sm.sigma_of_kappa(reference, kappa))


def test_signal_yields_broadcast_and_clip():
    terms = np.array([[1.0, 0.0], [-2.0, 1.0], [1.0, 0.0]])  # bin 0: (1 - κ)², bin 1: κ
    out = sm.signal_yields(terms, np.array([1.0, -1.0]))
    assert out.shape == (2, 2)
    assert np.allclose(out, [[0.0, 1.0], [4.0, 0.0]])  # κ = -1 in bin 1 would be −1: clipped
