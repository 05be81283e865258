"""LO gg → HH cross sections against the authors' MadGraph table, the event sampler, the PDF reader."""

import numpy as np
import pytest

from spanet2.errors import DataError
from spanet2.generate import signal
from spanet2.generate.partons import PartonEvents
from spanet2.generate.pdf import alpha_s, default_pdf, load_lhapdf_grid
from spanet2.generate.signal import generate_signal_partons, signal_cross_section, signal_cross_section_terms
from spanet2.physics.xsec import BR_HBB, lo_madgraph_reference

N_POINTS = 400_000  # MC points: the error on σ(κλ)/σ(1) is < 0.5 % at every κλ of the table


@pytest.fixture(scope="module")
def terms_13():
    return signal_cross_section_terms(13.0, n_points=N_POINTS, seed=11)


@pytest.fixture(scope="module")
def terms_14():
    return signal_cross_section_terms(14.0, n_points=N_POINTS, seed=12)


def _sigma(terms, kappas):
    kappas = np.asarray(kappas, dtype=float)
    return terms[0] + kappas * terms[1] + kappas**2 * terms[2]


def test_lo_ratios_match_madgraph_13tev(terms_13):
    terms, _ = terms_13
    kappas, mg = lo_madgraph_reference(13.0)
    ours = _sigma(terms, kappas)
    ratio = (ours / ours[kappas == 1.0]) / (mg / mg[kappas == 1.0])
    np.testing.assert_allclose(ratio, 1.0, atol=0.03)


def test_lo_sm_normalisation_and_energy_scaling(terms_13, terms_14):
    sm13 = _sigma(terms_13[0], 1.0)
    sm14 = _sigma(terms_14[0], 1.0)
    assert sm13 == pytest.approx(20.27, rel=0.25)
    assert sm14 / sm13 == pytest.approx(24.05 / 20.27, rel=0.05)
    kappas, mg14 = lo_madgraph_reference(14.0)
    ours = _sigma(terms_14[0], kappas)
    np.testing.assert_allclose((ours / sm14) / (mg14 / 24.05), 1.0, atol=0.03)


def test_minimum_of_sigma_near_2p4(terms_13):
    terms, cov = terms_13
    assert terms[2] > 0
    kappa_min = -terms[1] / (2 * terms[2])
    assert 2.2 < kappa_min < 2.6
    # MC errors are small and the covariance is a covariance
    assert np.all(np.sqrt(np.diag(cov)) < 0.01 * np.abs(terms))
    assert np.all(np.linalg.eigvalsh(cov) > -1e-12)


def test_mhh_half_scale_variant_is_sane():
    sigma, err = signal_cross_section(1.0, 13.0, n_points=200_000, seed=3, scale_choice="mhh_half")
    assert sigma == pytest.approx(20.27, rel=0.25)
    assert 0 < err < 0.01 * sigma
    with pytest.raises(ValueError, match="scale_choice"):
        signal_cross_section(1.0, 13.0, n_points=10, scale_choice="mu_zero")


@pytest.fixture(scope="module")
def sm_events():
    return generate_signal_partons(150_000, kappa=1.0, sqrt_s_tev=13.0, rng=np.random.default_rng(7))


@pytest.fixture(scope="module")
def k5_events():
    return generate_signal_partons(60_000, kappa=5.0, sqrt_s_tev=13.0, rng=np.random.default_rng(8))


def _m_hh(events: PartonEvents) -> np.ndarray:
    hh = events.higgs.sum(axis=1)
    return np.sqrt(hh[:, 0] ** 2 - np.sum(hh[:, 1:] ** 2, axis=-1))


def test_signal_events_kinematics_and_weights(sm_events):
    ev = sm_events
    n = len(ev)
    assert n == 150_000 and ev.b.shape == (n, 4, 4) and ev.higgs.shape == (n, 2, 4)
    mass = lambda p: np.sqrt(np.abs(p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1)))  # noqa: E731
    np.testing.assert_allclose(mass(ev.b), signal.M_B, rtol=1e-6)
    np.testing.assert_allclose(mass(ev.b[:, 0] + ev.b[:, 1]), 125.0, rtol=1e-9)  # [h1 b, h1 b̄]
    np.testing.assert_allclose(mass(ev.b[:, 2] + ev.b[:, 3]), 125.0, rtol=1e-9)
    np.testing.assert_allclose(ev.b[:, 0] + ev.b[:, 1], ev.higgs[:, 0], atol=1e-6)
    # the HH system has no transverse momentum at LO; x1 x2 s = m_HH²
    np.testing.assert_allclose(ev.higgs.sum(axis=1)[:, 1:3], 0.0, atol=1e-6)
    np.testing.assert_allclose(ev.x1 * ev.x2 * 13000.0**2, _m_hh(ev) ** 2, rtol=1e-9)
    pt = np.hypot(ev.higgs[..., 1], ev.higgs[..., 2])
    assert np.all(pt[:, 0] >= pt[:, 1])
    # weights: Σ w = σ(κλ = 1) × BR², and the κλ terms rebuild the weight
    sigma_ref, err = signal_cross_section(1.0, 13.0, n_points=200_000, seed=1)
    assert ev.weight.sum() == pytest.approx(sigma_ref * BR_HBB**2, rel=0.01)
    np.testing.assert_allclose(ev.kappa_terms @ [1.0, 1.0, 1.0], ev.weight, rtol=1e-12)
    assert np.all(ev.process == 1) and np.all(ev.kappa == 1.0) and np.all(ev.incoming == 21)
    assert ev.extra is None and np.all(ev.scale >= 125.0)


def test_sm_spectrum_peaks_near_400_and_kappa5_is_softer(sm_events, k5_events):
    hist, edges = np.histogram(_m_hh(sm_events), bins=np.arange(250.0, 800.0, 20.0))
    peak = 0.5 * (edges[hist.argmax()] + edges[hist.argmax() + 1])
    assert 350.0 <= peak <= 450.0
    assert _m_hh(k5_events).mean() < _m_hh(sm_events).mean() - 100.0


def test_reweighting_sm_to_kappa5_matches_direct_generation(sm_events, k5_events):
    # the SM amplitude nearly vanishes at threshold, so |M(5)|²/|M(1)|² has a heavy tail there: the SM
    # sample is 2.5× larger and the χ² cut sits at p ≈ 1e-3 for 11 bins
    bins = np.array([250.0, 275, 300, 325, 350, 375, 400, 450, 500, 600, 800, 1500])
    m_sm, m_k5 = _m_hh(sm_events), _m_hh(k5_events)
    w_rew = sm_events.kappa_terms @ [1.0, 5.0, 25.0]
    h_rew, _ = np.histogram(m_sm, bins, weights=w_rew)
    v_rew, _ = np.histogram(m_sm, bins, weights=w_rew**2)
    h_k5, _ = np.histogram(m_k5, bins, weights=k5_events.weight)
    v_k5, _ = np.histogram(m_k5, bins, weights=k5_events.weight**2)
    ok = (v_rew + v_k5) > 0
    chi2 = np.sum((h_rew - h_k5)[ok] ** 2 / (v_rew + v_k5)[ok])
    ndf = int(ok.sum())
    assert ndf == 11
    assert chi2 < ndf + 4 * np.sqrt(2 * ndf), (chi2, ndf)
    assert w_rew.sum() == pytest.approx(k5_events.weight.sum(), rel=0.03)
    # negative control: the SM sample without reweighting, scaled to the same total, has the wrong shape
    w_wrong = sm_events.weight * (k5_events.weight.sum() / sm_events.weight.sum())
    h_wrong, _ = np.histogram(m_sm, bins, weights=w_wrong)
    v_wrong, _ = np.histogram(m_sm, bins, weights=w_wrong**2)
    chi2_wrong = np.sum((h_wrong - h_k5)[ok] ** 2 / (v_wrong + v_k5)[ok])
    assert chi2_wrong > 100 * ndf, chi2_wrong


def test_generation_is_reproducible():
    a = generate_signal_partons(500, kappa=2.0, sqrt_s_tev=14.0, rng=np.random.default_rng(9))
    b = generate_signal_partons(500, kappa=2.0, sqrt_s_tev=14.0, rng=np.random.default_rng(9))
    c = generate_signal_partons(500, kappa=2.0, sqrt_s_tev=14.0, rng=np.random.default_rng(10))
    np.testing.assert_array_equal(a.b, b.b)
    np.testing.assert_array_equal(a.kappa_terms, b.kappa_terms)
    assert not np.array_equal(a.b, c.b)
    empty = generate_signal_partons(0, kappa=1.0, sqrt_s_tev=13.0, rng=np.random.default_rng(0))
    assert len(empty) == 0


def test_parton_events_take_and_concat(sm_events):
    a = sm_events.take(np.arange(10))
    b = sm_events.take(sm_events.weight > 0)
    assert len(a) == 10 and len(b) == len(sm_events)
    both = PartonEvents.concat([a, a])
    assert len(both) == 20 and both.higgs.shape == (20, 2, 4)
    np.testing.assert_array_equal(both.b[10:], a.b)
    with pytest.raises(ValueError, match="shape"):
        PartonEvents(**{**a.__dict__, "weight": np.zeros(3)})


def test_pdf_grid_reader(tmp_path):
    pdf = default_pdf()
    assert pdf.x.shape == (100,) and pdf.q.shape == (50,) and 21 in pdf.xf
    i, j = 60, 30  # at a knot the spline returns the tabulated value
    assert pdf.xfx(21, pdf.x[i], pdf.q[j]) == pytest.approx(pdf.xf[21][i, j], rel=1e-10)
    # gluon momentum fraction ∫ x g dx at Q = 100 GeV is ~ 0.4–0.5 for any modern PDF
    x = np.linspace(1e-6, 1.0, 200_001)
    frac = np.trapezoid(pdf.xfx(21, x, np.full_like(x, 100.0)), x)
    assert 0.38 < frac < 0.52
    assert float(alpha_s(91.1876)) == pytest.approx(0.130)
    assert 0.10 < float(alpha_s(250.0)) < float(alpha_s(125.0)) < 0.13
    bad = tmp_path / "bad.dat"
    bad.write_text("PdfType: central\nFormat: lhagrid1\n---\n1e-3 1e-2\n1 10\n21\n0.5 0.5 0.5\n---\n")
    with pytest.raises(DataError, match="bad.dat"):
        load_lhapdf_grid(bad)
    with pytest.raises(DataError, match="lhagrid1"):
        (tmp_path / "nofmt.dat").write_text("PdfType: central\n---\n")
        load_lhapdf_grid(tmp_path / "nofmt.dat")
    with pytest.raises(DataError, match="missing.dat"):
        load_lhapdf_grid(tmp_path / "missing.dat")
