"""LO gg → HH with exact top loops: form factors F_△, F_□, G_□ and dσ̂/dt̂ split into its three κλ terms."""
# The scalar integrals are analytic (spanet2.generate.loops), so F_□, G_□ are exact to ~1e-10 at any
# (ŝ, t̂); for speed the event sampler uses them through a (m_HH, cos θ*) spline table built in memory
# on first use (~0.5 s), whose accuracy against the direct evaluation is pinned by the tests.

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.interpolate import RectBivariateSpline

from spanet2.generate.loops import c0, c0_0pq, c0_00s, d0, triangle_f

__all__ = [
    "M_H",
    "GAMMA_H",
    "M_T",
    "M_B_LOOP",
    "LOOP_QUARKS",
    "G_F",
    "GEV2_TO_FB",
    "triangle_form_factor",
    "triangle_form_factor_sum",
    "box_form_factors",
    "mandelstam_t",
    "dsigma_dt_terms",
    "FormFactorTable",
    "build_form_factor_table",
    "default_form_factor_table",
]

logger = logging.getLogger(__name__)

M_H = 125.0  # GeV
GAMMA_H = 4.07e-3  # GeV
M_T = 173.0  # GeV, pole mass
M_B_LOOP = 4.7  # GeV, b-quark mass (and Yukawa) in the loops, as in MadGraph's loop_sm default
LOOP_QUARKS = (M_T, M_B_LOOP)  # quarks running in the loops (Yukawa coupling = mass / v)
G_F = 1.1663787e-5  # GeV^-2
GEV2_TO_FB = 0.3893794e12  # 1 GeV^-2 in fb


def triangle_form_factor(s: npt.ArrayLike, m_top: float = M_T) -> np.ndarray:
    """F_△ = τ [1 + (1 - τ) f(τ)], τ = 4 m_t²/ŝ (complex, shape of ``s``); → 2/3 for m_t → ∞. ``s`` in GeV²."""
    tau = 4.0 * m_top**2 / np.asarray(s, dtype=np.float64)
    return tau * (1.0 + (1.0 - tau) * triangle_f(tau))


def triangle_form_factor_sum(s: npt.ArrayLike, quark_masses: tuple[float, ...] = LOOP_QUARKS) -> np.ndarray:
    """Σ_q F_△(τ_q) over the loop quarks (Yukawa = mass / v, so each enters with weight 1)."""
    return sum(triangle_form_factor(s, m_q) for m_q in quark_masses)


def mandelstam_t(
    s: npt.ArrayLike, cos_theta: npt.ArrayLike, m_h: float = M_H
) -> tuple[np.ndarray, np.ndarray]:
    """t̂, û (GeV²) for gg → HH at ŝ (GeV²) and the scattering angle cos θ* in the HH rest frame."""
    s = np.asarray(s, dtype=np.float64)
    beta = np.sqrt(np.clip(1.0 - 4.0 * m_h**2 / s, 0.0, None))
    t = m_h**2 - 0.5 * s * (1.0 - beta * cos_theta)
    u = 2.0 * m_h**2 - s - t
    return t, u


def box_form_factors(
    s: npt.ArrayLike, t: npt.ArrayLike, *, m_h: float = M_H, m_top: float = M_T
) -> tuple[np.ndarray, np.ndarray]:
    """Box form factors (F_□, G_□) (complex, broadcast shape of s, t) from the exact scalar integrals.

    Plehn–Spira–Zerwas (hep-ph/9603205) appendix, written in units of the loop-quark mass ``m_top``
    (S = ŝ/m_q², ρ = m_h²/m_q², C_ij → m_q² C_ij, D_ijk → m_q⁴ D_ijk); û = 2 m_h² - ŝ - t̂.
    Heavy-quark limit: F_□ → -2/3, G_□ → 0.
    About 8k points/s on one core (analytic C0, D0). Not defined exactly at ŝ = 4 m_t² (a measure-zero
    point where the dilogarithm arguments degenerate).
    """
    s, t = np.broadcast_arrays(np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64))
    mt2, mh2 = m_top**2, m_h**2
    u = 2.0 * mh2 - s - t
    zero = np.zeros_like(s)
    # scalar integrals in GeV units, then scaled by m_t
    c_ab = c0_00s(s, mt2) * mt2
    c_ac = c0_0pq(mh2 + zero, t, mt2) * mt2  # = C_bd = C0(0, m_h², t̂)
    c_bc = c0_0pq(mh2 + zero, u, mt2) * mt2  # = C_ad = C0(0, m_h², û)
    c_cd = c0(mh2 + zero, mh2 + zero, s, mt2) * mt2
    d_abc = d0(zero, zero, mh2 + zero, mh2 + zero, s, u, mt2) * mt2**2
    d_bac = d0(zero, zero, mh2 + zero, mh2 + zero, s, t, mt2) * mt2**2
    d_acb = d0(zero, mh2 + zero, zero, mh2 + zero, t, u, mt2) * mt2**2
    return _box_from_integrals(s / mt2, t / mt2, mh2 / mt2, c_ab, c_ac, c_bc, c_cd, d_abc, d_bac, d_acb)


def _box_from_integrals(S, T, rho, c_ab, c_ac, c_bc, c_cd, d_abc, d_bac, d_acb):
    """PSZ box combination with all quantities dimensionless (m_t = 1); both final-state masses = ρ."""
    U = 2.0 * rho - S - T
    T1, U1 = T - rho, U - rho
    d_sum = d_abc + d_bac + d_acb
    tu = T * U - rho**2  # = (p_T² ŝ) / m_t⁴ ≥ 0
    f_box = (
        4.0 * S
        + 8.0 * S * c_ab
        - 2.0 * S * (S + 2.0 * rho - 8.0) * d_sum
        + (2.0 * rho - 8.0) * (2.0 * T1 * c_ac + 2.0 * U1 * c_bc - tu * d_acb)
    ) / S**2
    tu_safe = np.where(np.abs(tu) > 1e-12 * S**2, tu, 1e-12 * S**2)  # p_T → 0 (cos θ = ±1): G_□ stays finite
    g_box = (
        (T**2 + rho**2 - 8.0 * T) * (S * c_ab + 2.0 * T1 * c_ac - S * T * d_bac)
        + (U**2 + rho**2 - 8.0 * U) * (S * c_ab + 2.0 * U1 * c_bc - S * U * d_abc)
        - (T**2 + U**2 - 2.0 * rho**2) * (T + U - 8.0) * c_cd
        - 2.0 * (T + U - 8.0) * tu * d_sum
    ) / (S * tu_safe)
    return f_box, g_box


def dsigma_dt_terms(
    s: npt.ArrayLike,
    f_box: np.ndarray,
    g_box: np.ndarray,
    f_tri: np.ndarray,
    *,
    m_h: float = M_H,
    gamma_h: float = GAMMA_H,
) -> np.ndarray:
    """dσ̂/dt̂ / α_s² split into its κλ terms (…, 3) in GeV⁻⁴: (box², interference, triangle²).

    dσ̂/dt̂ = G_F² α_s² / (512 (2π)³) {|κλ c F_△ + F_□|² + |G_□|²}, c = 3 m_h² / (ŝ - m_h² + i m_h Γ_h),
    so dσ̂/dt̂ = α_s² (T0 + κλ T1 + κλ² T2) exactly.
    """
    s = np.asarray(s, dtype=np.float64)
    c_tri = 3.0 * m_h**2 / (s - m_h**2 + 1j * m_h * gamma_h)
    tri = c_tri * f_tri
    norm = G_F**2 / (512.0 * (2.0 * np.pi) ** 3)
    t0 = np.abs(f_box) ** 2 + np.abs(g_box) ** 2
    t1 = 2.0 * np.real(tri * np.conj(f_box))
    t2 = np.abs(tri) ** 2
    return norm * np.stack([t0, t1, t2], axis=-1)


@dataclass(frozen=True)
class FormFactorTable:
    """F_□, G_□ tabulated on (m_HH, cos θ*) and interpolated with bicubic splines (real, imaginary parts).

    m_hh: (M,) GeV, ascending from 2 m_h; cos_theta: (C,) ascending in [-1, 1];
    f_box, g_box: (M, C) complex, summed over the loop quarks ``quark_masses`` (GeV). Valid for m_h as recorded.
    """

    m_hh: np.ndarray
    cos_theta: np.ndarray
    f_box: np.ndarray
    g_box: np.ndarray
    m_h: float
    quark_masses: tuple[float, ...]

    @property
    def m_hh_max(self) -> float:
        return float(self.m_hh[-1])

    def save(self, path: str | Path) -> None:
        """Write the table as a compressed .npz."""
        np.savez_compressed(
            path,
            m_hh=self.m_hh,
            cos_theta=self.cos_theta,
            f_box=self.f_box,
            g_box=self.g_box,
            m_h=self.m_h,
            quark_masses=np.asarray(self.quark_masses),
        )

    @classmethod
    def load(cls, path: str | Path) -> FormFactorTable:
        """Read a table written by :meth:`save` (``path`` a file path or a traversable resource)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                m_hh=data["m_hh"],
                cos_theta=data["cos_theta"],
                f_box=data["f_box"],
                g_box=data["g_box"],
                m_h=float(data["m_h"]),
                quark_masses=tuple(float(v) for v in data["quark_masses"]),
            )

    def __call__(self, m_hh: npt.ArrayLike, cos_theta: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated (F_□, G_□) at m_HH (GeV) and cos θ* (arrays of one shape); m_HH clipped to the table."""
        m = np.clip(np.asarray(m_hh, dtype=np.float64), self.m_hh[0], self.m_hh[-1])
        c = np.clip(np.asarray(cos_theta, dtype=np.float64), self.cos_theta[0], self.cos_theta[-1])
        fr, fi, gr, gi = self._splines()
        return fr.ev(m, c) + 1j * fi.ev(m, c), gr.ev(m, c) + 1j * gi.ev(m, c)

    def _splines(self):
        cached = self.__dict__.get("_spline_cache")
        if cached is None:
            cached = tuple(
                RectBivariateSpline(self.m_hh, self.cos_theta, part, kx=3, ky=3)
                for part in (self.f_box.real, self.f_box.imag, self.g_box.real, self.g_box.imag)
            )
            object.__setattr__(self, "_spline_cache", cached)
        return cached


def default_m_hh_grid() -> np.ndarray:
    """m_HH knots (GeV): dense near 2 m_h and around the top threshold 2 m_t = 346 GeV (never exactly on it)."""
    return np.unique(
        np.concatenate(
            [
                np.linspace(250.0, 340.0, 37),
                np.arange(340.25, 352.0, 0.5),
                np.arange(352.0, 450.0, 2.0),
                np.arange(450.0, 1000.0, 5.0),
                np.arange(1000.0, 2000.0, 20.0),
                np.arange(2000.0, 5000.001, 100.0),
            ]
        )
    )


def default_cos_grid() -> np.ndarray:
    """cos θ* knots: 25 Chebyshev–Lobatto points on [-1, 1] (the form factors are even in cos θ*)."""
    return np.cos(np.linspace(np.pi, 0.0, 25))


def build_form_factor_table(
    m_hh: np.ndarray | None = None,
    cos_theta: np.ndarray | None = None,
    *,
    m_h: float = M_H,
    quark_masses: tuple[float, ...] = LOOP_QUARKS,
) -> FormFactorTable:
    """Compute F_□, G_□ (summed over the loop quarks) on a grid (M, C) from the scalar integrals.

    Uses the t̂ ↔ û symmetry (only cos θ* ≥ 0 is computed).
    """
    m_hh = default_m_hh_grid() if m_hh is None else np.asarray(m_hh, dtype=np.float64)
    cos_theta = default_cos_grid() if cos_theta is None else np.asarray(cos_theta, dtype=np.float64)
    half = cos_theta >= 0.0
    c_half = cos_theta[half]
    mm, cc = np.meshgrid(m_hh, c_half, indexing="ij")  # (M, C+)
    # G_□ (helicity ±2) ∝ sin²θ* vanishes exactly at threshold (β = 0, S wave only) and at cos θ* = ±1,
    # where its formula is 0/0: set it to 0 there
    at_threshold = (mm <= 2.0 * m_h * (1.0 + 1e-9)) | (np.abs(cc) >= 1.0)
    # the D0 formula divides by √(Gram determinant) ∝ p_T: evaluate F_□ a hair inside the degenerate edges
    mm = np.maximum(mm, 2.0 * m_h * (1.0 + 1e-6))
    cc = np.clip(cc, -1.0 + 1e-6, 1.0 - 1e-6)
    s = mm**2
    t, _ = mandelstam_t(s, cc, m_h)
    f_half = np.zeros(s.shape, dtype=np.complex128)
    g_half = np.zeros(s.shape, dtype=np.complex128)
    for m_quark in quark_masses:
        f_q, g_q = box_form_factors(s, t, m_h=m_h, m_top=m_quark)
        f_half += f_q
        g_half += g_q
    g_half = np.where(at_threshold, 0.0, g_half)
    # fill negative cos θ* by symmetry F(ŝ, t̂, û) = F(ŝ, û, t̂)
    f_box = np.empty((len(m_hh), len(cos_theta)), dtype=np.complex128)
    g_box = np.empty_like(f_box)
    for j, c in enumerate(cos_theta):
        k = int(np.argmin(np.abs(c_half - abs(c))))
        if abs(c_half[k] - abs(c)) > 1e-12:
            raise ValueError("cos_theta grid must be symmetric about 0")
        f_box[:, j] = f_half[:, k]
        g_box[:, j] = g_half[:, k]
    return FormFactorTable(m_hh, cos_theta, f_box, g_box, m_h=m_h, quark_masses=tuple(quark_masses))


@lru_cache(maxsize=1)
def default_form_factor_table() -> FormFactorTable:
    """The table for m_h = 125 GeV with top (173) and bottom (4.7 GeV) loops, built once per process (~1 s)."""
    return build_form_factor_table()
