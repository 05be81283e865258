"""Parton-level gg → HH → bb̄bb̄ events at LO with the exact top-loop matrix element and per-event κλ terms."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from spanet2.generate.hh_amplitude import (
    GEV2_TO_FB,
    M_H,
    FormFactorTable,
    default_form_factor_table,
    dsigma_dt_terms,
    triangle_form_factor_sum,
)
from spanet2.generate.partons import PartonEvents
from spanet2.generate.pdf import PDFGrid, alpha_s, default_pdf
from spanet2.physics.xsec import BR_HBB

__all__ = [
    "M_B",
    "SCALE_CHOICES",
    "generate_signal_partons",
    "signal_cross_section",
    "signal_cross_section_terms",
    "generator_sigma_terms",
    "differential_terms",
    "factorisation_scale",
    "SignalSampler",
]

logger = logging.getLogger(__name__)

M_B = 4.7  # GeV, b-quark mass used in H → bb̄ (massive decay kinematics)
# μ_R = μ_F choices: "ht_half" = H_T/2 = Σ m_T(H)/2 = √(m_h² + p_T²) (MadGraph's default dynamical scale
# for this process; with it and b loops, σ(κλ)/σ(1) matches the authors' LO MadGraph table to < 0.5 %),
# "mhh_half" = m_HH / 2 (docs/physics.md §6).
SCALE_CHOICES = ("ht_half", "mhh_half")
DEFAULT_SCALE = "ht_half"
_BATCH = 200_000  # proposals per vectorised batch
_PILOT = 200_000  # proposals for the maximum-weight estimate
_MAX_WEIGHT_SAFETY = 1.2
_M_BIN_EDGES = np.concatenate(
    [np.arange(250.0, 1000.0, 2.5), np.arange(1000.0, 2000.0, 10.0), np.arange(2000.0, 5000.001, 50.0)]
)


def factorisation_scale(
    m_hh: np.ndarray, cos_theta: np.ndarray, scale_choice: str = DEFAULT_SCALE
) -> np.ndarray:
    """μ_R = μ_F (GeV) for the ``scale_choice`` (see ``SCALE_CHOICES``), shape of m_hh."""
    m = np.asarray(m_hh, dtype=np.float64)
    if scale_choice == "mhh_half":
        return 0.5 * m
    if scale_choice == "ht_half":
        p2 = np.clip(0.25 * m**2 - M_H**2, 0.0, None)  # |p_H|² in the HH frame
        return np.sqrt(M_H**2 + p2 * (1.0 - np.asarray(cos_theta) ** 2))
    raise ValueError(f"scale_choice must be one of {SCALE_CHOICES}, got {scale_choice!r}")


def differential_terms(
    m_hh: np.ndarray,
    y_hh: np.ndarray,
    cos_theta: np.ndarray,
    sqrt_s_tev: float,
    *,
    table: FormFactorTable | None = None,
    pdf: PDFGrid | None = None,
    scale_choice: str = DEFAULT_SCALE,
) -> np.ndarray:
    """dσ/(dm_HH dy_HH dcos θ*) split into κλ terms (N, 3) in fb/GeV: σ(κλ) density = t0 + κλ t1 + κλ² t2.

    m_hh (GeV), y_hh (rapidity of the HH system), cos θ* (HH rest frame, w.r.t. the beam) of shape (N,);
    μ_R = μ_F from ``scale_choice``; gg initial state only (LO). Zero outside the kinematic limits.
    """
    table = default_form_factor_table() if table is None else table
    pdf = default_pdf() if pdf is None else pdf
    sqrt_s = 1000.0 * sqrt_s_tev
    m = np.asarray(m_hh, dtype=np.float64)
    s_hat = m**2
    sqrt_tau = m / sqrt_s
    x1 = sqrt_tau * np.exp(y_hh)
    x2 = sqrt_tau * np.exp(-np.asarray(y_hh))
    inside = (m > 2.0 * M_H) & (x1 < 1.0) & (x2 < 1.0) & (m <= table.m_hh_max)
    mu = factorisation_scale(m, cos_theta, scale_choice)
    lumi = pdf.xfx(21, x1, mu) * pdf.xfx(21, x2, mu)  # x1 g(x1) · x2 g(x2)
    beta = np.sqrt(np.clip(1.0 - 4.0 * M_H**2 / s_hat, 0.0, None))
    f_box, g_box = table(m, cos_theta)
    f_tri = triangle_form_factor_sum(s_hat, table.quark_masses)
    terms = dsigma_dt_terms(s_hat, f_box, g_box, f_tri)  # (N, 3) GeV^-4 per α_s²
    # dσ = dτ dy g(x1) g(x2) dt̂ dσ̂/dt̂, dτ = 2 m dm / s, g g = (x1 g)(x2 g)/τ, dt̂ = ŝ β / 2 dcos θ*
    jac = m * beta * lumi * alpha_s(mu) ** 2 * GEV2_TO_FB  # (N,)
    return np.where(inside[:, None], terms * jac[:, None], 0.0)


@dataclass
class SignalSampler:
    """Importance sampler for (m_HH, y_HH, cos θ*) at one √s and κλ.

    Proposal: m_HH from a piecewise-constant density fitted to the κλ spectrum (98 %) mixed with a density
    uniform in m_HH up to 2 TeV (2 %, tails); y_HH uniform on its kinematic range; cos θ* uniform on [-1, 1].
    """

    sqrt_s_tev: float
    kappa: float
    table: FormFactorTable
    pdf: PDFGrid
    scale_choice: str = DEFAULT_SCALE

    def __post_init__(self) -> None:
        sqrt_s = 1000.0 * self.sqrt_s_tev
        edges = _M_BIN_EDGES[_M_BIN_EDGES < min(self.table.m_hh_max, 0.999 * sqrt_s)]
        self.edges = edges
        centres = 0.5 * (edges[1:] + edges[:-1])
        widths = np.diff(edges)
        # marginal dσ/dm at bin centres by Gauss–Legendre in y and cos θ* (no randomness)
        ny, nc = 24, 8
        gy, wy = np.polynomial.legendre.leggauss(ny)
        gc, wc = np.polynomial.legendre.leggauss(nc)
        ymax = np.log(sqrt_s / centres)  # (B,)
        yy = gy[None, :, None] * ymax[:, None, None]  # (B, ny, 1)
        mm = np.broadcast_to(centres[:, None, None], (len(centres), ny, nc))
        yy = np.broadcast_to(yy, mm.shape)
        cc = np.broadcast_to(gc[None, None, :], mm.shape)
        dens = self._density(mm.ravel(), yy.ravel(), cc.ravel()).reshape(mm.shape)  # (B, ny, nc)
        marginal = np.einsum("byc,y,c->b", dens, wy, wc) * ymax  # ∫ dy dcos over [-ymax, ymax] × [-1, 1]
        marginal = np.clip(marginal, 0.0, None)
        self.sigma_quadrature = float(np.sum(marginal * widths))
        prob = marginal * widths
        prob = prob / prob.sum()
        uniform_top = min(2000.0, edges[-1])
        uniform = np.clip(
            (np.minimum(edges[1:], uniform_top) - edges[:-1]) / (uniform_top - edges[0]), 0.0, None
        )
        self.bin_prob = 0.98 * prob + 0.02 * uniform / uniform.sum()  # (B,)
        self.bin_cdf = np.cumsum(self.bin_prob)
        self.bin_cdf[-1] = 1.0
        self.widths = widths

    def _density(self, m, y, c) -> np.ndarray:
        terms = differential_terms(
            m, y, c, self.sqrt_s_tev, table=self.table, pdf=self.pdf, scale_choice=self.scale_choice
        )
        return terms @ np.array([1.0, self.kappa, self.kappa**2])

    def propose(self, n: int, rng: np.random.Generator):
        """n proposals: m, y, cos θ* (N,), the three density terms (N, 3) and the proposal density q (N,)."""
        sqrt_s = 1000.0 * self.sqrt_s_tev
        b = np.searchsorted(self.bin_cdf, rng.random(n), side="right")
        b = np.minimum(b, len(self.widths) - 1)
        m = self.edges[b] + rng.random(n) * self.widths[b]
        ymax = np.log(sqrt_s / m)
        y = (2.0 * rng.random(n) - 1.0) * ymax
        c = 2.0 * rng.random(n) - 1.0
        q = self.bin_prob[b] / self.widths[b] / (2.0 * ymax) / 2.0
        terms = differential_terms(
            m, y, c, self.sqrt_s_tev, table=self.table, pdf=self.pdf, scale_choice=self.scale_choice
        )
        return m, y, c, terms, q


@lru_cache(maxsize=32)
def _sampler(kappa: float, sqrt_s_tev: float, scale_choice: str) -> SignalSampler:
    """The proposal for (κλ, √s, scale) — deterministic, so cached across calls (writers call per chunk)."""
    if scale_choice not in SCALE_CHOICES:
        raise ValueError(f"scale_choice must be one of {SCALE_CHOICES}, got {scale_choice!r}")
    return SignalSampler(
        float(sqrt_s_tev), float(kappa), default_form_factor_table(), default_pdf(), scale_choice
    )


def signal_cross_section_terms(
    sqrt_s_tev: float,
    *,
    n_points: int = 400_000,
    seed: int = 0,
    kappa_proposal: float = 1.0,
    scale_choice: str = DEFAULT_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """LO σ(gg → HH) κλ terms (3,) in fb and their MC covariance (3, 3): σ(κλ) = s0 + κλ s1 + κλ² s2.

    Importance-sampled Monte Carlo with ``n_points`` points (proposal tuned at ``kappa_proposal``).
    """
    rng = np.random.default_rng(seed)
    sampler = _sampler(float(kappa_proposal), float(sqrt_s_tev), scale_choice)
    sums = np.zeros(3)
    sums2 = np.zeros((3, 3))
    done = 0
    while done < n_points:
        n = min(_BATCH, n_points - done)
        _, _, _, terms, q = sampler.propose(n, rng)
        w = terms / q[:, None]  # (N, 3)
        sums += w.sum(axis=0)
        sums2 += w.T @ w
        done += n
    mean = sums / n_points
    cov = (sums2 / n_points - np.outer(mean, mean)) / n_points
    return mean, cov


@lru_cache(maxsize=4)
def generator_sigma_terms(sqrt_s_tev: float) -> tuple[float, float, float]:
    """The generator's own inclusive LO σ(gg → HH; κλ) terms (fb, before BR) that its signal weights follow: the
    400,000-point integral at seed 0, recorded in every signal file as the `sigma_terms_fb` attribute."""
    terms, _ = signal_cross_section_terms(float(sqrt_s_tev), n_points=400_000, seed=0)
    return tuple(float(t) for t in terms)


def signal_cross_section(
    kappa: float,
    sqrt_s_tev: float,
    *,
    n_points: int = 400_000,
    seed: int = 0,
    scale_choice: str = DEFAULT_SCALE,
) -> tuple[float, float]:
    """LO σ(gg → HH) in fb at κλ (before any branching ratio) and its MC error (fb)."""
    terms, cov = signal_cross_section_terms(
        sqrt_s_tev, n_points=n_points, seed=seed, kappa_proposal=kappa, scale_choice=scale_choice
    )
    v = np.array([1.0, kappa, kappa**2])
    return float(v @ terms), float(np.sqrt(max(v @ cov @ v, 0.0)))


def _boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost four-vectors p (..., 4) (E, px, py, pz) by velocity beta (..., 3)."""
    b2 = np.sum(beta**2, axis=-1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p[..., 1:], axis=-1)
    coef = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    e = gamma * (p[..., 0] + bp)
    vec = p[..., 1:] + (coef * bp + gamma * p[..., 0])[..., None] * beta
    return np.concatenate([e[..., None], vec], axis=-1)


def _isotropic_decay(parent: np.ndarray, m_daughter: float, rng: np.random.Generator) -> np.ndarray:
    """Two-body isotropic decay of parents (N, 4) into equal-mass daughters: (N, 2, 4) lab momenta."""
    n = len(parent)
    m_parent = np.sqrt(np.maximum(parent[:, 0] ** 2 - np.sum(parent[:, 1:] ** 2, axis=-1), 0.0))
    p_star = 0.5 * m_parent * np.sqrt(1.0 - 4.0 * m_daughter**2 / m_parent**2)
    cos_t = 2.0 * rng.random(n) - 1.0
    phi = 2.0 * np.pi * rng.random(n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    direction = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)  # (N, 3)
    e = np.sqrt(p_star**2 + m_daughter**2)
    d1 = np.concatenate([e[:, None], p_star[:, None] * direction], axis=-1)  # (N, 4)
    d2 = np.concatenate([e[:, None], -p_star[:, None] * direction], axis=-1)
    beta = parent[:, 1:] / parent[:, :1]
    return np.stack([_boost(d1, beta), _boost(d2, beta)], axis=1)  # (N, 2, 4)


def generate_signal_partons(
    n_events: int,
    *,
    kappa: float,
    sqrt_s_tev: float,
    rng: np.random.Generator,
    scale_choice: str = DEFAULT_SCALE,
) -> PartonEvents:
    """Unweighted LO gg → HH → bb̄bb̄ parton events at κλ = ``kappa``.

    Sampling: importance sampling of (m_HH, y_HH, cos θ*) and accept–reject against 1.2 × the largest
    pilot weight. μ_R = μ_F = H_T/2 by default (``scale_choice``; "mhh_half" for m_HH/2); top and
    bottom loops. Each H (m_h = 125 GeV, narrow) decays isotropically to b b̄ with
    m_b = 4.7 GeV. No generator cuts. Weights (fb): every event carries σ_LO(κλ) × BR(H→bb̄)² / N, with
    σ estimated from all proposals of the run (pilot included); kappa_terms = weight × (T0, T1, T2) / T(κλ)
    from the event's own matrix-element pieces, so Σ kappa_terms · (1, κ', κ'²) estimates σ(κ') × BR².
    h1 is the Higgs with the higher pT (at LO both have equal pT, so the choice is effectively random).
    """
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    sampler = _sampler(float(kappa), float(sqrt_s_tev), scale_choice)
    kv = np.array([1.0, kappa, kappa**2])
    # pilot: maximum weight and a first σ estimate (smaller for small requests)
    n_pilot = int(np.clip(20 * n_events, _PILOT // 4, _PILOT))
    _, _, _, terms, q = sampler.propose(n_pilot, rng)
    w = (terms @ kv) / q
    w_max = _MAX_WEIGHT_SAFETY * float(w.max())
    efficiency_guess = max(float(w.mean()) / w_max, 1e-3)
    sum_w, n_prop, n_over = float(w.sum()), n_pilot, 0
    kept_m, kept_y, kept_c, kept_terms = [], [], [], []
    n_kept = 0
    while n_kept < n_events:
        n_batch = int(np.clip(1.2 * (n_events - n_kept) / efficiency_guess, 10_000, _BATCH))
        m, y, c, terms, q = sampler.propose(n_batch, rng)
        w = (terms @ kv) / q
        sum_w += float(w.sum())
        n_prop += n_batch
        n_over += int(np.count_nonzero(w > w_max))
        accept = rng.random(n_batch) * w_max < w
        kept_m.append(m[accept])
        kept_y.append(y[accept])
        kept_c.append(c[accept])
        kept_terms.append(terms[accept])
        n_kept += int(accept.sum())
    if n_over:
        logger.warning("%d of %d proposals exceeded the maximum weight (capped)", n_over, n_prop)
    sigma_fb = sum_w / n_prop
    efficiency = n_kept / max(n_prop - n_pilot, 1)
    logger.info(
        "signal κλ=%g √s=%g TeV: σ_LO = %.4g fb, unweighting efficiency %.3f",
        kappa,
        sqrt_s_tev,
        sigma_fb,
        efficiency,
    )

    def cat(parts, shape):
        return np.concatenate(parts)[:n_events] if parts else np.zeros(shape)

    m = cat(kept_m, (0,))
    y = cat(kept_y, (0,))
    c = cat(kept_c, (0,))
    terms = cat(kept_terms, (0, 3))
    n = len(m)

    # Higgs four-momenta: HH rest frame, then a longitudinal boost by y_HH
    p = 0.5 * m * np.sqrt(np.clip(1.0 - 4.0 * M_H**2 / m**2, 0.0, None))
    phi = 2.0 * np.pi * rng.random(n)
    sin_t = np.sqrt(np.clip(1.0 - c**2, 0.0, None))
    pvec = p[:, None] * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), c], axis=-1)  # (N, 3)
    e = 0.5 * m
    ha = np.concatenate([e[:, None], pvec], axis=-1)  # (N, 4)
    hb = np.concatenate([e[:, None], -pvec], axis=-1)
    boost_z = np.stack([np.zeros(n), np.zeros(n), np.tanh(y)], axis=-1)  # (N, 3)
    higgs = np.stack([_boost(ha, boost_z), _boost(hb, boost_z)], axis=1)  # (N, 2, 4)
    pt = np.hypot(higgs[..., 1], higgs[..., 2])  # (N, 2)
    swap = pt[:, 1] > pt[:, 0]
    higgs[swap] = higgs[swap][:, ::-1]
    b = np.concatenate(
        [_isotropic_decay(higgs[:, 0], M_B, rng), _isotropic_decay(higgs[:, 1], M_B, rng)], axis=1
    )  # (N, 4, 4): [h1 b, h1 b̄, h2 b, h2 b̄]

    weight_each = sigma_fb * BR_HBB**2 / max(n, 1)
    weight = np.full(n, weight_each)
    total = terms @ kv
    kappa_terms = weight[:, None] * terms / total[:, None]
    sqrt_tau = m / (1000.0 * sqrt_s_tev)
    return PartonEvents(
        b=b,
        weight=weight,
        kappa_terms=kappa_terms,
        kappa=np.full(n, float(kappa)),
        process=np.ones(n, dtype=np.int8),
        x1=sqrt_tau * np.exp(y),
        x2=sqrt_tau * np.exp(-y),
        scale=factorisation_scale(m, c, scale_choice),
        incoming=np.full((n, 2), 21, dtype=np.int64),
        extra=None,
        extra_pdg=None,
        higgs=higgs,
        sqrt_s_tev=float(sqrt_s_tev),
    )
