"""QCD pp → bb̄bb̄ at parton level: LO 2→2 QCD with PDFs, and collinear g → bb̄ / b → b g splittings.

The model (a leading-log approximation of the LO 2→4 process; what it does and does not include):

- Hard scattering: the LO 2→2 QCD matrix elements (Ellis–Stirling–Webber Table 7.1) convoluted with the
  NNPDF2.3 LO PDFs (``spanet2.generate.pdf``), μ_F = μ_R = pT of the hard legs, one-loop α_s:
  (A) gg → gg and qq̄ → gg (q = u, d, s, c, b) — both gluons split g* → bb̄;
  (B) gg → bb̄ and qq̄ → bb̄ — one of the two b legs radiates b* → b g*, and g* → bb̄.
- Each outgoing leg is given a virtuality drawn from the collinear (leading-log) density dm²/m² between
  the splitting threshold and the hard pT (the hard legs' momenta are rebuilt with their masses, so
  four-momentum is conserved exactly); the splitting probabilities (α_s/2π)·∫P(z)dz·ln(Q²_max/Q²_min)
  multiply the event weight. g* → bb̄ decays with the angular law of P_qg(z) = T_R[z² + (1 − z)²] in the
  collinear limit (1 + cos²θ* in the g* rest frame); b* → b g* with the gluon energy fraction drawn
  from P_gq(z) = C_F[1 + (1 − z)²]/z (z ≥ 0.05).
- Generator cuts on the four b partons: pT > 25 GeV, |η| < 2.5 (docs/physics.md §5).
- Normalisation: at 13 TeV the sample is scaled to the LO 2→4 cross section 6.29×10⁵ fb (docs/physics.md §5);
  other energies are scaled by this model's own σ(√s)/σ(13 TeV), computed once with a fixed-seed
  Monte Carlo. Only the shapes and the energy dependence come from the model.
- Not included: interference between topologies, flavour-excitation (gb → gb) and initial-state
  g → bb̄ topologies, multiple splittings beyond one per leg, soft-gluon coherence beyond the
  angular cutoff at the hard pT. Events are unweighted by accept–reject against a per-batch reference
  weight (events above it keep a larger weight), so most events carry equal weights.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from spanet2.generate.partons import PartonEvents
from spanet2.generate.pdf import alpha_s, default_pdf

__all__ = [
    "SIGMA_4B_13TEV_FB",
    "GEN_MIN_PT",
    "GEN_MAX_ETA",
    "background_cross_section",
    "model_cross_section",
    "generate_background_partons",
]

logger = logging.getLogger(__name__)

SIGMA_4B_13TEV_FB = 6.29e5  # LO pp → bb̄bb̄, pT^b > 25 GeV, |η^b| < 2.5 (docs/physics.md §5)
GEN_MIN_PT = 25.0
GEN_MAX_ETA = 2.5
GEV2_TO_FB = 0.3893794e12  # 1 GeV⁻² in fb
M_B = 4.7
T_R, C_F = 0.5, 4.0 / 3.0
_LEG_MIN_PT = 45.0  # hard-leg pT below which no event passes the generator cuts
_LEG_MAX_Y = 2.8
_PT_POWER = 3.0  # importance density for the hard pT: ∝ pT^-3
_Z_MIN = 0.05
_QUARKS = (1, 2, 3, 4, 5)


def _me_gg_gg(s, t, u):
    return 4.5 * (3.0 - t * u / s**2 - s * u / t**2 - s * t / u**2)


def _me_qqbar_gg(s, t, u):
    return 32.0 / 27.0 * (t**2 + u**2) / (t * u) - 8.0 / 3.0 * (t**2 + u**2) / s**2


def _me_gg_qqbar(s, t, u):
    return 1.0 / 6.0 * (t**2 + u**2) / (t * u) - 3.0 / 8.0 * (t**2 + u**2) / s**2


def _me_qqbar_qqbar_other(s, t, u):
    return 4.0 / 9.0 * (t**2 + u**2) / s**2


def _two_body_decay(
    parent: np.ndarray, m1: np.ndarray, m2: np.ndarray, cos_theta: np.ndarray, azimuth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Decay parent (N, 4) into masses m1, m2 at polar angle θ* (w.r.t. the parent flight direction)
    in the parent rest frame. Returns the two lab four-momenta (N, 4) each."""
    e = parent[:, 0]
    p = parent[:, 1:]
    m = np.sqrt(np.maximum(e**2 - np.sum(p**2, axis=1), 1e-12))
    q = np.sqrt(np.maximum((m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2), 0.0)) / (2 * m)
    p_abs = np.linalg.norm(p, axis=1)
    axis = p / np.maximum(p_abs, 1e-12)[:, None]
    helper = np.where(np.abs(axis[:, 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(axis, e1)
    sin_theta = np.sqrt(np.maximum(1 - cos_theta**2, 0.0))
    direction = cos_theta[:, None] * axis + sin_theta[:, None] * (
        np.cos(azimuth)[:, None] * e1 + np.sin(azimuth)[:, None] * e2
    )
    k = q[:, None] * direction  # (N, 3) daughter-1 momentum in the rest frame
    e1_rest = np.sqrt(q**2 + m1**2)
    e2_rest = np.sqrt(q**2 + m2**2)
    beta = p / e[:, None]  # (N, 3)
    gamma = e / m

    def boost(energy, mom):
        b2 = np.sum(beta**2, axis=1)
        factor = np.where(b2 > 0, (gamma - 1) / np.where(b2 > 0, b2, 1.0), 0.0)
        bm = np.sum(beta * mom, axis=1)
        new_e = gamma * (energy + bm)
        new_p = mom + (factor * bm + gamma * energy)[:, None] * beta
        return np.concatenate([new_e[:, None], new_p], axis=1)

    return boost(e1_rest, k), boost(e2_rest, -k)


def _sample_cos_1pc2(rng: np.random.Generator, n: int) -> np.ndarray:
    """cos θ with density ∝ 1 + cos²θ on [−1, 1] (P_qg in the collinear limit), by accept–reject."""
    c = rng.uniform(-1, 1, (6, n))
    ok = rng.random((6, n)) < 0.5 * (1 + c**2)
    return c[np.argmax(ok, axis=0), np.arange(n)]


def _sample_z_gq(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gluon energy fraction z ~ (1 + (1 − z)²)/z on [Z_MIN, 1 − Z_MIN], by accept–reject."""
    z = np.exp(rng.uniform(np.log(_Z_MIN), np.log(1 - _Z_MIN), (8, n)))
    ok = rng.random((8, n)) < 0.5 * (1 + (1 - z) ** 2)
    return z[np.argmax(ok, axis=0), np.arange(n)]


def _integral_pgq() -> float:
    zs = np.linspace(_Z_MIN, 1 - _Z_MIN, 20001)
    return float(np.trapezoid(C_F * (1 + (1 - zs) ** 2) / zs, zs))


_I_PGQ = _integral_pgq()
_I_PQG = T_R * 2.0 / 3.0


def _split_gluon(rng, leg: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    cos_t = _sample_cos_1pc2(rng, n)
    az = rng.uniform(-np.pi, np.pi, n)
    mb = np.full(n, M_B)
    return _two_body_decay(leg, mb, mb, cos_t, az)


def _weights(rng, s, x1c, x2c, dy, pt, jacobian, topology_b, m3_g, m4_g, l_g, m_bstar, l_b, m_ginner, l_gin):
    """Event weights (fb per trial) and incoming partons for trials that pass the cuts."""
    pdf = default_pdf()
    n = len(pt)
    shat = x1c * x2c * s
    that = -shat / (1 + np.exp(-dy))
    uhat = -shat - that
    mu = pt
    a_s = alpha_s(mu)
    flux = np.pi * a_s**2 / shat**2  # dσ̂/dt̂ = π α_s² |M|²/g⁴ / ŝ²

    g1, g2 = pdf.xfx(21, x1c, mu), pdf.xfx(21, x2c, mu)
    # q q̄ luminosity per incoming (q, q̄) assignment: columns (u ū, ū u, d d̄, ...), (N, 10)
    qq_lum = np.stack(
        [
            f
            for q in _QUARKS
            for f in (pdf.xfx(q, x1c, mu) * pdf.xfx(-q, x2c, mu), pdf.xfx(-q, x1c, mu) * pdf.xfx(q, x2c, mu))
        ],
        axis=1,
    )
    qqbar = qq_lum.sum(axis=1)
    # Topology A: both final gluons split; identical gluons -> 1/2 over the full (y3, y4) plane.
    lum_me_a = 0.5 * (g1 * g2 * _me_gg_gg(shat, that, uhat) + qqbar * _me_qqbar_gg(shat, that, uhat))
    split_a = (alpha_s(m3_g) / (2 * np.pi) * _I_PQG * l_g) * (alpha_s(m4_g) / (2 * np.pi) * _I_PQG * l_g)
    # Topology B: b b̄ final state (distinguishable); either leg radiates (factor 2 from the leg choice).
    # b b̄ from b b̄ annihilation (q = b) includes the s-channel only, the t-channel is flavour excitation.
    lum_me_b = g1 * g2 * _me_gg_qqbar(shat, that, uhat) + qqbar * _me_qqbar_qqbar_other(shat, that, uhat)
    split_b = (
        2.0
        * (alpha_s(m_bstar) / (2 * np.pi) * _I_PGQ * l_b)
        * (alpha_s(m_ginner) / (2 * np.pi) * _I_PQG * l_gin)
    )
    # Each topology is chosen with probability 1/2 -> factor 2.
    weight = 2.0 * np.where(topology_b, lum_me_b * split_b, lum_me_a * split_a) * flux * jacobian * GEV2_TO_FB

    # Incoming partons drawn in proportion to their share of the event's weight.
    me_gg = np.where(topology_b, _me_gg_qqbar(shat, that, uhat), 0.5 * _me_gg_gg(shat, that, uhat))
    me_qq = np.where(
        topology_b, _me_qqbar_qqbar_other(shat, that, uhat), 0.5 * _me_qqbar_gg(shat, that, uhat)
    )
    shares = np.concatenate([(g1 * g2 * me_gg)[:, None], qq_lum * me_qq[:, None]], axis=1)  # (N, 11)
    shares = np.maximum(np.nan_to_num(shares), 0.0).cumsum(axis=1)
    pick = (shares < rng.random(n)[:, None] * shares[:, -1:]).sum(axis=1).clip(0, 10)
    ids = np.array([[21, 21]] + [[q, -q] if k == 0 else [-q, q] for q in _QUARKS for k in (0, 1)])  # (11, 2)
    incoming = ids[pick].astype(np.int64)
    return weight, incoming


def _trial_events(
    n: int,
    sqrt_s_tev: float,
    rng: np.random.Generator,
    *,
    leg_min_pt: float = _LEG_MIN_PT,
    b_min_pt: float = GEN_MIN_PT,
) -> dict[str, np.ndarray]:
    """N weighted trial events (weights in fb per trial; zero outside the cuts on the four b partons:
    pT > b_min_pt, |η| < 2.5; hard legs with pT > leg_min_pt)."""
    s = (1e3 * sqrt_s_tev) ** 2
    pt_max = 0.5 * np.sqrt(s)
    # hard pT ~ pT^-POWER on [LEG_MIN_PT, pt_max]; y3, y4 uniform.
    a = 1.0 - _PT_POWER
    u = rng.random(n)
    pt = (leg_min_pt**a + u * (pt_max**a - leg_min_pt**a)) ** (1.0 / a)
    pt_density = pt ** (-_PT_POWER) * a / (pt_max**a - leg_min_pt**a)
    y3 = rng.uniform(-_LEG_MAX_Y, _LEG_MAX_Y, n)
    y4 = rng.uniform(-_LEG_MAX_Y, _LEG_MAX_Y, n)
    jacobian = 2 * pt / pt_density * (2 * _LEG_MAX_Y) ** 2  # d(pT²) dy3 dy4 per unit sample

    topology_b = rng.random(n) < 0.5  # (A) gg→gg/qq̄→gg with two g splittings, (B) →bb̄ with one b radiating
    # Virtualities: log-uniform in m² (the collinear dm²/m² density).
    q0_g = 2 * M_B + 0.1
    lmax = np.log(np.maximum(pt, q0_g * 1.01) ** 2)
    l_g = lmax - np.log(q0_g**2)
    m3_g = np.exp(0.5 * (np.log(q0_g**2) + rng.random(n) * l_g))
    m4_g = np.exp(0.5 * (np.log(q0_g**2) + rng.random(n) * l_g))
    q0_b = M_B + q0_g + 0.1
    l_b = np.maximum(lmax - np.log(q0_b**2), 0.0)
    m_bstar = np.exp(0.5 * (np.log(q0_b**2) + rng.random(n) * l_b))
    l_gin = np.maximum(np.log((m_bstar - M_B) ** 2) - np.log(q0_g**2), 0.0)
    m_ginner = np.exp(0.5 * (np.log(q0_g**2) + rng.random(n) * l_gin))
    radiating_leg3 = rng.random(n) < 0.5
    m3 = np.where(topology_b, np.where(radiating_leg3, m_bstar, M_B), m3_g)
    m4 = np.where(topology_b, np.where(radiating_leg3, M_B, m_bstar), m4_g)

    mt3 = np.sqrt(pt**2 + m3**2)
    mt4 = np.sqrt(pt**2 + m4**2)
    x1 = (mt3 * np.exp(y3) + mt4 * np.exp(y4)) / np.sqrt(s)
    x2 = (mt3 * np.exp(-y3) + mt4 * np.exp(-y4)) / np.sqrt(s)
    inside = (x1 < 1) & (x2 < 1)
    x1c, x2c = np.minimum(x1, 1 - 1e-9), np.minimum(x2, 1 - 1e-9)
    # Build the legs and decay them.
    phi = rng.uniform(-np.pi, np.pi, n)
    leg3 = np.stack([mt3 * np.cosh(y3), pt * np.cos(phi), pt * np.sin(phi), mt3 * np.sinh(y3)], axis=1)
    leg4 = np.stack([mt4 * np.cosh(y4), -pt * np.cos(phi), -pt * np.sin(phi), mt4 * np.sinh(y4)], axis=1)
    quarks = np.empty((n, 4, 4))  # (N, 4 quarks, 4)
    ia, ib = np.flatnonzero(~topology_b), np.flatnonzero(topology_b)
    # (A) each gluon leg -> b b̄
    a3b, a3bb = _split_gluon(rng, leg3[ia], len(ia))
    a4b, a4bb = _split_gluon(rng, leg4[ia], len(ia))
    quarks[ia] = np.stack([a3b, a3bb, a4b, a4bb], axis=1)
    # (B) the radiating b* -> b + g*, g* -> b b̄; the other leg is a plain b.
    rad = np.where(radiating_leg3[ib, None], leg3[ib], leg4[ib])
    plain = np.where(radiating_leg3[ib, None], leg4[ib], leg3[ib])
    z = _sample_z_gq(rng, len(ib))
    cos_gluon = 2 * z - 1  # the gluon's direction in the b* rest frame (collinear-limit map of z)
    g_star, b_after = _two_body_decay(
        rad, m_ginner[ib], np.full(len(ib), M_B), cos_gluon, rng.uniform(-np.pi, np.pi, len(ib))
    )
    gb, gbb = _split_gluon(rng, g_star, len(ib))
    quarks[ib] = np.stack([b_after, plain, gb, gbb], axis=1)

    b_pt = np.hypot(quarks[..., 1], quarks[..., 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        b_eta = np.arcsinh(quarks[..., 3] / np.maximum(b_pt, 1e-12))
    cuts = ((b_pt > b_min_pt) & (np.abs(b_eta) < GEN_MAX_ETA)).all(axis=1)
    order = np.argsort(-b_pt, axis=1)  # leading pT first
    quarks = np.take_along_axis(quarks, order[..., None], axis=1)

    # Matrix elements and PDFs only where the event passes the cuts (most trials do not).
    k = np.flatnonzero(cuts & inside)
    weight = np.zeros(n)
    incoming = np.full((n, 2), 21, dtype=np.int64)
    w_k, incoming_k = _weights(
        rng,
        s,
        x1c[k],
        x2c[k],
        y3[k] - y4[k],
        pt[k],
        jacobian[k],
        topology_b[k],
        m3_g[k],
        m4_g[k],
        l_g[k],
        m_bstar[k],
        l_b[k],
        m_ginner[k],
        l_gin[k],
    )
    weight[k] = np.where(np.isfinite(w_k), w_k, 0.0)
    incoming[k] = incoming_k
    return {"b": quarks, "weight": weight, "x1": x1c, "x2": x2c, "scale": pt, "incoming": incoming}


@lru_cache(maxsize=16)
def model_cross_section(sqrt_s_tev: float, n_trials: int = 400_000, seed: int = 12345) -> tuple[float, float]:
    """This model's own σ(pp → bb̄bb̄) after generator cuts (fb, with its MC error), fixed seed."""
    rng = np.random.default_rng(seed)
    w = np.concatenate(
        [_trial_events(100_000, sqrt_s_tev, rng)["weight"] for _ in range(n_trials // 100_000)]
    )
    return float(w.mean()), float(w.std() / np.sqrt(w.size))


def background_cross_section(sqrt_s_tev: float) -> float:
    """σ(pp → bb̄bb̄) after generator cuts, fb: 6.29×10⁵ at 13 TeV scaled by the model's σ(√s)/σ(13)."""
    if float(sqrt_s_tev) == 13.0:
        return SIGMA_4B_13TEV_FB
    return SIGMA_4B_13TEV_FB * model_cross_section(float(sqrt_s_tev))[0] / model_cross_section(13.0)[0]


def generate_background_partons(
    n_events: int, *, sqrt_s_tev: float, rng: np.random.Generator, batch_size: int = 50_000
) -> PartonEvents:
    """N unweighted QCD 4b parton events passing the generator cuts (see the module docstring).

    Weights (fb): Σ over the returned events = background_cross_section(√s); most events carry the same
    weight (partial unweighting against the 90 % quantile of the trial weights of each batch).
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    parts: list[dict[str, np.ndarray]] = []
    n_have = 0
    w_ref = None  # fixed by the first batch, so that most events of a call share one weight
    empty_batches = 0
    while n_have < n_events:
        trial = _trial_events(batch_size, sqrt_s_tev, rng)
        w = trial["weight"]
        positive = w[w > 0]
        if positive.size == 0:
            empty_batches += 1
            if empty_batches >= 50:
                raise ValueError(f"no trial event passes the generator cuts at √s = {sqrt_s_tev} TeV")
            continue
        if w_ref is None:
            w_ref = np.quantile(positive, 0.9)
        keep = (w > 0) & (rng.random(w.size) < np.minimum(w / w_ref, 1.0))
        part = {k: v[keep] for k, v in trial.items()}
        part["weight"] = np.maximum(w[keep], w_ref)
        parts.append(part)
        n_have += int(keep.sum())
    merged = {
        k: np.concatenate([p[k] for p in parts])[:n_events] if parts else None
        for k in ("b", "weight", "x1", "x2", "scale", "incoming")
    }
    n = n_events
    if not parts:
        merged = {
            "b": np.zeros((0, 4, 4)),
            "weight": np.zeros(0),
            "x1": np.zeros(0),
            "x2": np.zeros(0),
            "scale": np.zeros(0),
            "incoming": np.zeros((0, 2), dtype=np.int64),
        }
    weight = merged["weight"]
    if n:
        weight = weight / weight.sum() * background_cross_section(sqrt_s_tev)
    return PartonEvents(
        b=merged["b"],
        weight=weight,
        kappa_terms=np.zeros((n, 3)),
        kappa=np.full(n, np.nan),
        process=np.zeros(n, dtype=np.int8),
        x1=merged["x1"],
        x2=merged["x2"],
        scale=merged["scale"],
        incoming=merged["incoming"],
        extra=None,
        extra_pdg=None,
        higgs=None,
        sqrt_s_tev=float(sqrt_s_tev),
    )
