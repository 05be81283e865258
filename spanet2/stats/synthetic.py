"""An analytic HH → 4b event store (amplitude-level κλ terms, falling QCD m_HH) for tests and benchmarks."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from spanet2.events.store import EventStoreWriter
from spanet2.physics.xsec import BR_HBB, LO_MADGRAPH_FB

__all__ = ["MethodQuality", "write_analytic_store"]

logger = logging.getLogger(__name__)

M_THRESHOLD = 250.0  # GeV, 2 m_h
KAPPA_AT_MINIMUM = 2.4  # the LO σ(κλ) minimum (docs/physics.md §6)
SIGNAL_FB_AFTER_CUTS = 0.577  # SM σ × BR(4b) after the four-tag cut at 13 TeV (docs/physics.md §5)
BACKGROUND_FB_AFTER_CUTS = 6.06e3  # QCD 4b after the four-tag cut at 13 TeV


@dataclass(frozen=True)
class MethodQuality:
    """Score model of one method: signal ~ Beta(signal_a, 1), background ~ Beta(1, background_b);
    m_HH resolution: reconstructed = true × (1 + N(0, resolution))."""

    signal_a: float = 5.0
    background_b: float = 3.0
    resolution: float = 0.08


def _amplitudes(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real box and triangle amplitudes (arbitrary units) vs true m_HH (GeV): the box peaks near 430 GeV,
    the triangle sits near threshold, and their relative size puts the σ(κλ) minimum at κλ = 2.4."""
    x = np.clip(m - M_THRESHOLD, 0.0, None)
    box = np.sqrt(x**1.5 * np.exp(-x / 120.0))
    tri = np.sqrt(x**0.5 * np.exp(-x / 80.0))
    grid = np.linspace(M_THRESHOLD, 3000.0, 20001)
    gx = grid - M_THRESHOLD
    b_g, t_g = np.sqrt(gx**1.5 * np.exp(-gx / 120.0)), np.sqrt(gx**0.5 * np.exp(-gx / 80.0))
    alpha = np.trapezoid(b_g * t_g, grid) / (KAPPA_AT_MINIMUM * np.trapezoid(t_g**2, grid))
    return box, -alpha * tri


def _signal_terms(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True m_HH (n,) and per-event κλ terms (n, 3) in fb after cuts, σ(1) = SIGNAL_FB_AFTER_CUTS;
    also the generated (pre-BR, pre-cut) σ(κλ) coefficients (3,) in fb (LO 13 TeV SM normalisation)."""
    scale = 220.0  # proposal: m = 250 + Exp(220), importance-weighted by the amplitudes
    m = M_THRESHOLD + rng.exponential(scale, n)
    density = np.exp(-(m - M_THRESHOLD) / scale) / scale
    box, tri = _amplitudes(m)
    raw = np.stack([box**2, 2 * box * tri, tri**2], axis=1) / density[:, None] / n  # (n, 3)
    grid = np.linspace(M_THRESHOLD, 3000.0, 20001)
    gb, gt = _amplitudes(grid)
    exact = np.array([np.trapezoid(gb**2, grid), np.trapezoid(2 * gb * gt, grid), np.trapezoid(gt**2, grid)])
    norm = SIGNAL_FB_AFTER_CUTS / exact.sum()
    sigma_sm_lo = float(LO_MADGRAPH_FB[13.0][2])
    generated = exact / exact.sum() * sigma_sm_lo  # σ_gen(κλ) before BR and cuts, fb
    return m, raw * norm, generated


def write_analytic_store(
    path: str | os.PathLike,
    *,
    n_signal: int,
    n_background: int,
    methods: Mapping[str, MethodQuality],
    seed: int = 0,
    sqrt_s_tev: float = 13.0,
    kappa_samples: Sequence[float] = (),
    chunk_size: int = 262144,
    batch_size: int | None = None,
    pairing: bool = True,
) -> None:
    """Write a Zarr event store (the layout of events/store.py) with an analytic signal and background.

    Signal "signal": per-event kappa_terms (N, 3) fb whose m_HH dependence follows box/triangle
    amplitudes (w(κλ) = (A_box + κλ A_tri)² ≥ 0), Σ w(1) = 0.577 fb; attribute sigma_terms_fb = the
    generated σ(κλ) coefficients (LO SM normalisation). With kappa_samples, also one sample
    "signal_k<κλ>" per value: the same events with `weight` at that κλ and no kappa_terms (for morphing). Background "background":
    m_HH = 200 + Exp(350) GeV, Σ w = 6060 fb. Every method gets `<method>/score` (float32 in [0, 1]),
    `<method>/m_hh` and `<method>/pairing` (pairing=False leaves it out). Deterministic for a given seed.
    batch_size: generate and append that many events at a time (a big store in bounded memory; the events
    then differ from the unbatched ones of the same seed).
    """
    if batch_size is not None:
        _write_batched(
            path, n_signal, n_background, methods, seed, sqrt_s_tev, chunk_size, batch_size, pairing
        )
        return
    rng = np.random.default_rng(seed)
    with EventStoreWriter(
        path,
        attrs={"sqrt_s_tev": sqrt_s_tev, "generator": "spanet2.stats.synthetic", "seed": seed},
        chunk_size=chunk_size,
        overwrite=True,
    ) as writer:
        m_true, terms, generated = _signal_terms(rng, n_signal)
        columns: dict[str, np.ndarray] = {
            "weight": terms.sum(axis=1),
            "kappa_terms": terms,
            "label": np.ones(n_signal, np.int8),
            "n_jets": rng.integers(4, 9, n_signal).astype(np.int16),
            "kappa_input": np.ones(n_signal, np.float32),
        }
        _method_columns(columns, rng, m_true, methods, signal=True)
        writer.append("signal", columns)
        writer.set_sample_attrs("signal", {"sigma_terms_fb": generated.tolist(), "br_hbb": BR_HBB})
        for kappa in kappa_samples:  # the same events reweighted to κλ: morphing must reproduce the terms
            sample = {k: v for k, v in columns.items() if k != "kappa_terms"}
            sample["weight"] = terms @ np.array([1.0, kappa, kappa**2])
            sample["kappa_input"] = np.full(n_signal, kappa, np.float32)
            writer.append(f"signal_k{kappa:g}", sample)
            writer.set_sample_attrs(
                f"signal_k{kappa:g}", {"sigma_terms_fb": generated.tolist(), "kappa": kappa}
            )
        m_bkg = 200.0 + rng.exponential(350.0, n_background)
        columns = {
            "weight": np.full(n_background, BACKGROUND_FB_AFTER_CUTS / n_background),
            "label": np.zeros(n_background, np.int8),
            "n_jets": rng.integers(4, 9, n_background).astype(np.int16),
            "kappa_input": rng.choice([-5.0, -3, -1, 1, 2, 3, 5, 7, 9, 12], n_background).astype(np.float32),
        }
        _method_columns(columns, rng, m_bkg, methods, signal=False)
        writer.append("background", columns)
        writer.set_sample_attrs("background", {"cross_section_fb": BACKGROUND_FB_AFTER_CUTS})


def _write_batched(path, n_signal, n_background, methods, seed, sqrt_s_tev, chunk_size, batch_size, pairing):
    """write_analytic_store in batches (no kappa_samples): signal terms are importance weights over the
    whole sample, so each batch's are scaled by its share of the events."""
    rng = np.random.default_rng(seed)
    with EventStoreWriter(
        path,
        attrs={"sqrt_s_tev": sqrt_s_tev, "generator": "spanet2.stats.synthetic", "seed": seed},
        chunk_size=chunk_size,
        overwrite=True,
    ) as writer:
        generated = None
        for start in range(0, n_signal, batch_size):
            n = min(batch_size, n_signal - start)
            m_true, terms, generated = _signal_terms(rng, n)
            terms = terms * (n / n_signal)
            columns = {
                "weight": terms.sum(axis=1),
                "kappa_terms": terms,
                "label": np.ones(n, np.int8),
                "n_jets": rng.integers(4, 9, n).astype(np.int16),
                "kappa_input": np.ones(n, np.float32),
            }
            _method_columns(columns, rng, m_true, methods, signal=True, pairing=pairing)
            writer.append("signal", columns)
        writer.set_sample_attrs("signal", {"sigma_terms_fb": generated.tolist(), "br_hbb": BR_HBB})
        for start in range(0, n_background, batch_size):
            n = min(batch_size, n_background - start)
            columns = {
                "weight": np.full(n, BACKGROUND_FB_AFTER_CUTS / n_background),
                "label": np.zeros(n, np.int8),
                "n_jets": rng.integers(4, 9, n).astype(np.int16),
                "kappa_input": rng.choice([-5.0, -3, -1, 1, 2, 3, 5, 7, 9, 12], n).astype(np.float32),
            }
            _method_columns(
                columns, rng, 200.0 + rng.exponential(350.0, n), methods, signal=False, pairing=pairing
            )
            writer.append("background", columns)
        writer.set_sample_attrs("background", {"cross_section_fb": BACKGROUND_FB_AFTER_CUTS})


def _method_columns(
    columns: dict,
    rng: np.random.Generator,
    m_true: np.ndarray,
    methods: Mapping[str, MethodQuality],
    *,
    signal: bool,
    pairing: bool = True,
) -> None:
    """Scores, reconstructed m_HH and a pairing per method. Background scores are drawn uniformly and
    importance-weighted to Beta(1, b) (the weight column is shared, so the correction goes into one common
    factor per event: methods share the same uniform draw), which keeps thousands of MC events at high score
    where a tight cut selects, as a real weighted QCD sample would."""
    n = m_true.size
    uniform = rng.random(n) if not signal else None
    if not signal:
        b_ref = next(iter(methods.values())).background_b
        columns["weight"] = columns["weight"] * b_ref * (1.0 - uniform) ** (b_ref - 1.0)
    for name, q in methods.items():
        if signal:
            score = rng.beta(q.signal_a, 1.0, n)
        else:  # same event weight for every method: map the uniform draw through quantiles of Beta(1, b)/Beta(1, b_ref)
            score = 1.0 - (1.0 - uniform) ** (b_ref / q.background_b)
        columns[f"{name}/score"] = score.astype(np.float32)
        columns[f"{name}/m_hh"] = (m_true * (1.0 + q.resolution * rng.standard_normal(n))).astype(np.float32)
        if pairing:
            columns[f"{name}/pairing"] = np.argsort(rng.random((n, 4)), axis=1).astype(np.int64)  # (N, 4)
