"""Hand-built parton events for the GEN-DET tests: HH → 4b with isotropic decays (no generator needed)."""

from __future__ import annotations

import numpy as np

from spanet2.generate.partons import PartonEvents

__all__ = ["toy_signal_partons"]


def _boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost (..., 4) four-momenta by velocity beta (..., 3)."""
    b2 = np.sum(beta**2, axis=-1, keepdims=True)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p4[..., 1:], axis=-1, keepdims=True)
    gamma2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    e = gamma * (p4[..., :1] + bp)
    p = p4[..., 1:] + gamma2 * bp * beta + gamma * beta * p4[..., :1]
    return np.concatenate([e, p], axis=-1)


def toy_signal_partons(
    n: int,
    rng: np.random.Generator,
    *,
    m_hh_mean: float = 420.0,
    kappa: float = 1.0,
    sqrt_s_tev: float = 13.0,
) -> PartonEvents:
    """N toy HH → bb̄bb̄ events: m_HH ~ 250 + Gamma, Higgs pair back-to-back with random y, isotropic decays."""
    mh, mb = 125.0, 4.7
    m_hh = 250.0 + rng.gamma(2.0, (m_hh_mean - 250.0) / 2.0, n)
    p_star = np.sqrt(m_hh**2 / 4 - mh**2)
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    p = p_star[:, None] * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    e = np.sqrt(p_star**2 + mh**2)[:, None]
    h1 = np.concatenate([e, p], axis=1)
    h2 = np.concatenate([e, -p], axis=1)
    y = rng.normal(0, 1.0, n)
    beta_z = np.tanh(y)
    beta = np.stack([np.zeros(n), np.zeros(n), beta_z], axis=1)
    higgs = _boost(np.stack([h1, h2], axis=1), beta[:, None, :])  # (N, 2, 4)
    pt_h = np.hypot(higgs[..., 1], higgs[..., 2])
    swap = pt_h[:, 1] > pt_h[:, 0]
    higgs[swap] = higgs[swap][:, ::-1]
    bs = []
    for k in range(2):
        ct = rng.uniform(-1, 1, n)
        ph = rng.uniform(-np.pi, np.pi, n)
        st = np.sqrt(1 - ct**2)
        q = np.sqrt(mh**2 / 4 - mb**2)
        d = q * np.stack([st * np.cos(ph), st * np.sin(ph), ct], axis=1)
        eb = np.full((n, 1), mh / 2)
        pair = np.stack([np.concatenate([eb, d], 1), np.concatenate([eb, -d], 1)], axis=1)  # (N, 2, 4)
        m = higgs[:, k]
        bvec = m[:, 1:] / m[:, :1]
        bs.append(_boost(pair, bvec[:, None, :]))
    b = np.concatenate(bs, axis=1)  # (N, 4, 4)
    w = np.full(n, 0.577 / n)
    return PartonEvents(
        b=b,
        weight=w,
        kappa_terms=np.stack([w, 0 * w, 0 * w], 1),
        kappa=np.full(n, kappa),
        process=np.ones(n, np.int8),
        x1=np.full(n, 0.1),
        x2=np.full(n, 0.1),
        scale=m_hh / 2,
        incoming=np.full((n, 2), 21),
        extra=None,
        extra_pdg=None,
        higgs=higgs,
        sqrt_s_tev=sqrt_s_tev,
    )
