"""Scalar integrals C0/D0, the dilogarithm, the gg → HH form factors and their spline table."""

import numpy as np
import pytest
from scipy import integrate

from spanet2.generate import hh_amplitude, loops
from spanet2.generate.hh_amplitude import (
    box_form_factors,
    default_form_factor_table,
    dsigma_dt_terms,
    mandelstam_t,
    triangle_form_factor,
    triangle_form_factor_sum,
)
from spanet2.generate.loops import c0, c0_0pq, c0_00s, c0_numeric, d0, d0_numeric, li2, triangle_f

MT2 = 173.0**2
MH2 = 125.0**2


def c0_feynman(p1, p2, p3, m2):
    """-∫ simplex 1/Δ by scipy adaptive quadrature (Euclidean kinematics only: Δ > 0)."""

    def f(x2, x1):
        x0 = 1.0 - x1 - x2
        return 1.0 / (m2 - x0 * x1 * p1 - x1 * x2 * p2 - x0 * x2 * p3)

    value, _ = integrate.dblquad(f, 0, 1, 0, lambda x1: 1 - x1, epsabs=0, epsrel=1e-10)
    return -value


def d0_feynman(p1, p2, p3, p4, s12, s23, m2):
    """∫ simplex 1/Δ² by scipy adaptive quadrature (Euclidean kinematics only)."""

    def f(x3, x2, x1):
        x0 = 1.0 - x1 - x2 - x3
        delta = m2 - x0 * x1 * p1 - x1 * x2 * p2 - x2 * x3 * p3 - x0 * x3 * p4 - x0 * x2 * s12 - x1 * x3 * s23
        return 1.0 / delta**2

    value, _ = integrate.tplquad(
        f, 0, 1, 0, lambda x1: 1 - x1, 0, lambda x1, x2: 1 - x1 - x2, epsabs=0, epsrel=1e-9
    )
    return value


def test_li2_known_values_and_identities():
    assert li2(1.0) == pytest.approx(np.pi**2 / 6, rel=1e-14)
    assert li2(-1.0) == pytest.approx(-(np.pi**2) / 12, rel=1e-14)
    assert li2(0.5) == pytest.approx(np.pi**2 / 12 - np.log(2) ** 2 / 2, rel=1e-14)
    z = np.array([0.3 + 0.4j, -2.0 + 1.0j, 3.0 - 0.5j, 0.9 + 0.01j])
    # Euler reflection and inversion (off the cut)
    np.testing.assert_allclose(li2(z) + li2(1 - z), np.pi**2 / 6 - np.log(z) * np.log(1 - z), rtol=1e-12)
    np.testing.assert_allclose(li2(z) + li2(1 / z), -(np.pi**2) / 6 - 0.5 * np.log(-z) ** 2, rtol=1e-12)
    # above the cut (z > 1 + i0): Im Li2 = π ln z
    assert li2(2.0 + 1e-18j).imag == pytest.approx(np.pi * np.log(2.0), rel=1e-12)


@pytest.mark.parametrize(
    "p",
    [(-1e4, -2e4, -5e4), (-MH2, -MH2, -3e5), (-500.0, -7e4, -2e3)],
)
def test_c0_euclidean_matches_feynman_parameter_integral(p):
    ref = c0_feynman(*p, MT2)
    assert abs(c0(*p, MT2) - ref) / abs(ref) < 1e-6
    assert abs(c0_numeric(*p, MT2) - ref) / abs(ref) < 1e-6


@pytest.mark.parametrize("s", [-3e5, -2e3])
def test_c0_closed_forms_euclidean(s):
    ref = c0_feynman(0.0, 0.0, s, MT2)
    assert abs(c0_00s(s, MT2) - ref) / abs(ref) < 1e-6
    ref = c0_feynman(0.0, -MH2, s, MT2)
    assert abs(c0_0pq(-MH2, s, MT2) - ref) / abs(ref) < 1e-6


@pytest.mark.parametrize(
    "p",
    [
        (0.0, 0.0, -MH2, -MH2, -2e5, -5e4),
        (-1e3, -2e4, -MH2, -3e3, -1e5, -7e4),
        (0.0, -MH2, 0.0, -MH2, -1e5, -1.5e5),
    ],
)
def test_d0_euclidean_matches_feynman_parameter_integral(p):
    ref = d0_feynman(*p, MT2)
    assert abs(d0(*p, MT2) - ref) / abs(ref) < 1e-6
    assert abs(d0_numeric(*p, MT2, n_nodes=24) - ref) / abs(ref) < 1e-6


def test_triangle_relation_c0_00s_is_the_higgs_triangle_function():
    # C0(0, 0, ŝ) = -(2/ŝ) f(4 m²/ŝ) below and above the top threshold, checked against the
    # contour-deformed Feynman-parameter integral (independent of the closed form)
    s = np.array([9e4, 1.5e5, 5e5])
    np.testing.assert_allclose(
        c0_numeric(0.0, 0.0, s, MT2, n_nodes=96), -2.0 / s * triangle_f(4 * MT2 / s), rtol=1e-6
    )
    # the C0(0, p², q²) difference formula at physical q² > 4 m²
    np.testing.assert_allclose(c0_numeric(0.0, MH2, s, MT2, n_nodes=96), c0_0pq(MH2, s, MT2), rtol=1e-6)
    # triangle_f is the textbook function: arcsin² below threshold, complex above
    assert triangle_f(2.0) == pytest.approx(np.arcsin(np.sqrt(0.5)) ** 2)
    assert triangle_f(0.5).imag > 0


@pytest.mark.parametrize(
    "p",
    [
        (0.0, 0.0, MH2, MH2, 3e5, -1e5),  # above the top threshold in s
        (0.0, 0.0, MH2, MH2, 2e5, -1e5),
        (0.0, 0.0, MH2, MH2, 1e5, -4e4),  # 0 < s12 < 4 m²: the analytic formula rotates the propagators
        (0.0, MH2, 0.0, MH2, -1e5, -1.5e5),
    ],
)
def test_d0_physical_matches_deformed_contour(p):
    analytic = d0(*p, MT2)
    numeric = d0_numeric(*p, MT2, n_nodes=40)
    assert abs(analytic - numeric) / abs(numeric) < 1e-6


@pytest.mark.parametrize("s", [6.26e4, 1.1e5, 1.3e5, 3e5])
def test_c0_two_massive_legs_physical(s):
    analytic = c0(MH2, MH2, s, MT2)
    numeric = c0_numeric(MH2, MH2, s, MT2, n_nodes=160)
    assert abs(analytic - numeric) / abs(numeric) < 1e-8
    assert (analytic.imag < 0) == (s > 4 * MT2)  # absorptive part only above the tt̄ threshold


def test_heavy_top_limit_of_form_factors():
    s = np.array([260.0**2, 400.0**2, 700.0**2])
    t, _ = mandelstam_t(s, 0.4)
    dev = {}
    for m_top in (1000.0, 3000.0, 10000.0):
        f_box, g_box = box_form_factors(s, t, m_top=m_top)
        f_tri = triangle_form_factor(s, m_top)
        dev[m_top] = (np.abs(f_tri - 2 / 3).max(), np.abs(f_box + 2 / 3).max(), np.abs(g_box).max())
    for k in range(3):
        assert dev[10000.0][k] < 5e-4
        # corrections fall like ŝ / m_t²: a factor ~9 from 1 to 3 TeV
        assert dev[3000.0][k] < dev[1000.0][k] / 5


def test_form_factors_match_a_known_point_and_are_symmetric_in_t_u():
    s = 600.0**2
    t, u = mandelstam_t(s, 0.6)
    f_tu, g_tu = box_form_factors(s, t)
    f_ut, g_ut = box_form_factors(s, u)
    assert abs(f_tu - f_ut) < 1e-9 and abs(g_tu - g_ut) < 1e-9
    # the same point evaluated with the purely numerical integrals (c0_numeric n=64, d0_numeric n=32),
    # an independent route to the analytic C0/D0 used here (top loop only)
    # (the numerical route is good to ~1e-6 on F_□ and ~1e-5 on G_□ at these node counts)
    assert f_tu == pytest.approx(-0.16707447876 - 0.65633878964j, abs=1e-6)
    assert g_tu == pytest.approx(-0.05343375238 - 0.11734778856j, abs=1e-5)


def test_kappa_terms_reassemble_the_squared_amplitude():
    s = np.array([300.0**2, 500.0**2])
    t, _ = mandelstam_t(s, -0.3)
    f_box, g_box = box_form_factors(s, t)
    f_tri = triangle_form_factor(s)
    terms = dsigma_dt_terms(s, f_box, g_box, f_tri)
    norm = hh_amplitude.G_F**2 / (512 * (2 * np.pi) ** 3)
    for kappa in (-3.0, 1.0, 5.0):
        c_tri = kappa * 3 * MH2 / (s - MH2 + 1j * 125.0 * hh_amplitude.GAMMA_H)
        direct = norm * (np.abs(c_tri * f_tri + f_box) ** 2 + np.abs(g_box) ** 2)
        np.testing.assert_allclose(terms @ [1, kappa, kappa**2], direct, rtol=1e-12)


def test_spline_table_reproduces_direct_evaluation():
    table = default_form_factor_table()
    rng = np.random.default_rng(3)
    n = 4000
    m = 250.0 + rng.random(n) ** 2 * 1750.0
    c = 2.0 * rng.random(n) - 1.0
    s = m**2
    t, _ = mandelstam_t(s, c)
    exact_f = np.zeros(n, complex)
    exact_g = np.zeros(n, complex)
    for m_q in table.quark_masses:
        f_q, g_q = box_form_factors(s, t, m_top=m_q)
        exact_f += f_q
        exact_g += g_q
    f_i, g_i = table(m, c)
    f_tri = triangle_form_factor_sum(s, table.quark_masses)
    for kappa in (1.0, 2.4, 5.0):
        v = np.array([1.0, kappa, kappa**2])
        exact = dsigma_dt_terms(s, exact_f, exact_g, f_tri) @ v
        interp = dsigma_dt_terms(s, f_i, g_i, f_tri) @ v
        assert np.abs(interp - exact).sum() / np.abs(exact).sum() < 1e-4
        assert np.max(np.abs(interp - exact) / np.abs(exact)) < 2e-2


def test_table_round_trip(tmp_path):
    table = hh_amplitude.build_form_factor_table(
        np.linspace(250.0, 600.0, 8), np.cos(np.linspace(np.pi, 0, 5))
    )
    table.save(tmp_path / "t.npz")
    loaded = hh_amplitude.FormFactorTable.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(loaded.f_box, table.f_box)
    assert loaded.quark_masses == table.quark_masses


def test_public_api():
    assert set(loops.__all__) >= {"c0", "d0", "li2", "c0_00s", "c0_0pq", "triangle_f"}
    assert set(hh_amplitude.__all__) >= {"box_form_factors", "triangle_form_factor", "dsigma_dt_terms"}
