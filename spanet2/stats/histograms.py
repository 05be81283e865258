"""m_HH templates: (score × m_HH) histograms per method, then the selected 1-D signal terms and background."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np

from spanet2.stats.selection import ThresholdChoice, best_threshold_from_histograms
from spanet2.stats.signal_model import signal_yields

__all__ = [
    "MethodHistograms",
    "Templates",
    "histogram_score_mhh",
    "merge_groups",
    "score_edges_with",
    "select_templates",
]

logger = logging.getLogger(__name__)

N_SCORE_BINS = 2000  # selection resolution 5e-4 in the score; configured thresholds are added as exact edges


def score_edges_with(thresholds: list[float], n_bins: int = N_SCORE_BINS) -> np.ndarray:
    """Score bin edges on [0, 1] with every given threshold inserted as an exact edge. (K+1,)"""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    extra = [float(t) for t in thresholds if 0.0 < float(t) < 1.0]
    return np.unique(np.concatenate([edges, np.asarray(extra, dtype=np.float64)]))


def histogram_score_mhh(
    score: np.ndarray, mhh: np.ndarray, weights: np.ndarray, score_edges: np.ndarray, mhh_edges: np.ndarray
) -> np.ndarray:
    """Weighted 2-D histograms of (score, m_HH) for C weight columns at once.

    score, mhh: (N,); weights: (N, C); returns (C, K, B) with K score bins and B m_HH bins. Events outside
    the m_HH range, or without a finite m_HH or score, are dropped; score = 1 falls in the last score bin.
    """
    score = np.asarray(score, dtype=np.float64)
    mhh = np.asarray(mhh, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64).reshape(score.shape[0], -1)  # (N, C)
    k, b = score_edges.size - 1, mhh_edges.size - 1
    s_bin = np.clip(np.searchsorted(score_edges, score, side="right") - 1, 0, k - 1)
    m_bin = np.searchsorted(mhh_edges, mhh, side="right") - 1
    m_bin = np.where(mhh == mhh_edges[-1], b - 1, m_bin)
    inside = (m_bin >= 0) & (m_bin < b) & np.isfinite(mhh) & np.isfinite(score)  # no score: never selected
    flat = s_bin[inside] * b + m_bin[inside]  # (N_in,) index into the (K, B) grid
    out = np.empty((weights.shape[1], k, b))
    for c in range(weights.shape[1]):  # C ≤ 5 columns, not events
        out[c] = np.bincount(flat, weights=weights[inside, c], minlength=k * b).reshape(k, b)
    return out


@dataclass
class MethodHistograms:
    """Everything the statistics need from one method's events, before the score cut.

    signal_terms: (3, K, B) fb, per (score bin, m_HH bin), w(κλ) = T0 + κλ T1 + κλ² T2 (before any
    normalisation factors); background: (K, B) fb; background_sumw2: (K, B) fb²; signal_count,
    background_count: (K, B) raw MC events.
    """

    method: str
    score_edges: np.ndarray
    mhh_edges: np.ndarray
    signal_terms: np.ndarray
    background: np.ndarray
    background_sumw2: np.ndarray
    signal_count: np.ndarray
    background_count: np.ndarray


@dataclass
class Templates:
    """The fit input of one method after selection: m_HH histograms in fb (multiply by L for events).

    signal_terms: (3, B) fb; background: (B,) fb; mhh_edges: (B+1,) GeV.
    """

    method: str
    mhh_edges: np.ndarray
    signal_terms: np.ndarray
    background: np.ndarray
    threshold: float
    selection: str
    n_signal_mc: int
    n_background_mc: int
    background_sumw2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    signal_count_bins: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (B,) selected MC events
    background_count_bins: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def replica(self, rng: np.random.Generator, name: str) -> Templates:
        """A bootstrap replica: each bin's signal terms and background scaled by Gamma(n, 1)/n of its n selected
        MC events — the Bayesian bootstrap (Dirichlet event weights): mean 1 and variance 1/n like an event
        bootstrap's Poisson(n)/n, but never exactly 0, so a replica never empties a bin that holds signal (a
        background-free bin with signal would exclude every κλ). The selection is held fixed."""

        def factors(counts: np.ndarray) -> np.ndarray:
            counts = np.asarray(counts, dtype=np.float64)
            safe = np.where(counts > 0, counts, 1.0)
            return np.where(counts > 0, rng.gamma(safe) / safe, 1.0)

        fs, fb = factors(self.signal_count_bins), factors(self.background_count_bins)
        return Templates(name, self.mhh_edges, self.signal_terms * fs, self.background * fb, self.threshold,
                         self.selection, self.n_signal_mc, self.n_background_mc, self.background_sumw2 * fb ** 2,
                         self.signal_count_bins, self.background_count_bins)  # fmt: skip

    def signal(self, kappa: np.ndarray | float, lumi_ifb: float) -> np.ndarray:
        """Expected signal events per bin at κλ: (B,) or (K, B)."""
        return lumi_ifb * signal_yields(self.signal_terms, kappa)

    def fingerprint(self) -> str:
        """A short hash of the numbers (resumed scan points are reused only for identical templates)."""
        h = hashlib.sha256()
        for arr in (self.mhh_edges, self.signal_terms, self.background):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        h.update(json.dumps([self.method, self.threshold]).encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "mhh_edges": self.mhh_edges.tolist(),
            "signal_terms": self.signal_terms.tolist(),
            "background": self.background.tolist(),
            "threshold": self.threshold,
            "selection": self.selection,
            "n_signal_mc": self.n_signal_mc,
            "n_background_mc": self.n_background_mc,
        }


def select_templates(
    hists: MethodHistograms,
    threshold: float | str,
    *,
    scale_factors: np.ndarray,
    lumi_ifb: float,
    min_signal: float = 1.0,
    min_background: float = 1.0,
    min_mc_events: int = 10,
    min_background_mc: int = 0,
) -> tuple[Templates, ThresholdChoice | None]:
    """Apply the score cut (a number, or "best" = max S/√B of the SM signal at `lumi_ifb`).

    scale_factors: (3,) per-term normalisation applied to the signal terms. min_background_mc > 0 merges
    adjacent m_HH bins until each holds that many selected background MC events (a bin with signal and no
    background would exclude every κλ). Returns the templates and, for "best", the ThresholdChoice. Raises ValueError when nothing (signal or background) is selected.
    """
    terms = hists.signal_terms * np.asarray(scale_factors)[:, None, None]  # (3, K, B)
    choice = None
    if threshold == "best":
        sm_per_score = signal_yields(terms.sum(axis=2), 1.0)  # (K,) fb at κλ = 1
        choice = best_threshold_from_histograms(
            hists.score_edges,
            lumi_ifb * sm_per_score,
            lumi_ifb * hists.background.sum(axis=1),
            signal_count=hists.signal_count.sum(axis=1),
            background_count=hists.background_count.sum(axis=1),
            min_signal=min_signal,
            min_background=min_background,
            min_mc_events=min_mc_events,
        )
        if not np.isfinite(choice.threshold):
            raise ValueError(f"method {hists.method!r}: {choice.reason}")
        cut, how = choice.threshold, f"best S/sqrt(B): {choice.reason}"
    else:
        cut, how = float(threshold), f"score > {float(threshold):g}"
    first = int(np.argmin(np.abs(hists.score_edges - cut)))  # cuts sit on edges (score_edges_with)
    if abs(hists.score_edges[first] - cut) > 1e-9 and 0.0 < cut < 1.0:
        raise ValueError(f"method {hists.method!r}: threshold {cut} is not a score bin edge")
    keep = slice(first, None)
    signal_terms = terms[:, keep].sum(axis=1)  # (3, B)
    background = hists.background[keep].sum(axis=0)  # (B,)
    n_sig = int(hists.signal_count[keep].sum())
    n_bkg = int(hists.background_count[keep].sum())
    if n_sig == 0 or n_bkg == 0 or background.sum() <= 0:
        raise ValueError(
            f"method {hists.method!r}: the selection {how} keeps {n_sig} signal and {n_bkg} "
            f"background MC events in the m_HH range; both must be non-zero"
        )
    sumw2 = hists.background_sumw2[keep].sum(axis=0)
    sig_bins = hists.signal_count[keep].sum(axis=0).astype(np.float64)
    bkg_bins = hists.background_count[keep].sum(axis=0).astype(np.float64)
    edges = hists.mhh_edges
    if min_background_mc > 0:
        groups = merge_groups(hists.background_count[keep].sum(axis=0), min_background_mc)
        if len(groups) < background.size:
            logger.info(
                "%s: m_HH bins merged to %d so each holds >= %d background MC events",
                hists.method,
                len(groups),
                min_background_mc,
            )
            edges = np.array([edges[g[0]] for g in groups] + [edges[-1]])
            signal_terms = np.stack([signal_terms[:, g].sum(axis=1) for g in groups], axis=1)  # (3, B')
            background = np.array([background[g].sum() for g in groups])
            sumw2 = np.array([sumw2[g].sum() for g in groups])
            sig_bins = np.array([sig_bins[g].sum() for g in groups])
            bkg_bins = np.array([bkg_bins[g].sum() for g in groups])
    templates = Templates(hists.method, edges, signal_terms, background, cut, how, n_sig, n_bkg, sumw2, sig_bins,
                          bkg_bins)  # fmt: skip
    return templates, choice


def merge_groups(counts: np.ndarray, minimum: int) -> list[list[int]]:
    """Group adjacent bins (from the high-m_HH end, where background runs out) so that every group holds at
    least `minimum` counts; a short remainder at the low end joins its neighbour. Returns lists of bin indices."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in range(len(counts) - 1, -1, -1):  # B ≤ a few dozen bins
        current.insert(0, i)
        total += counts[i]
        if total >= minimum:
            groups.insert(0, current)
            current, total = [], 0
    if current:
        if groups:
            groups[0] = current + groups[0]
        else:
            groups = [current]
    return groups
