"""Event selection on a classifier score: a fixed threshold, or the threshold that maximises S/√B."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

__all__ = ["ThresholdChoice", "best_threshold", "best_threshold_from_histograms", "select_threshold"]

logger = logging.getLogger(__name__)


class ThresholdChoice(NamedTuple):
    """The chosen score threshold (select score > threshold), its S/√B, and why it was chosen."""

    threshold: float
    significance: float
    reason: str


def select_threshold(score: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask (N,) of events with `score > threshold` (the note's p_signal > p_th)."""
    return np.asarray(score) > threshold


def best_threshold_from_histograms(
    edges: np.ndarray,
    signal_yield: np.ndarray,
    background_yield: np.ndarray,
    *,
    signal_count: np.ndarray | None = None,
    background_count: np.ndarray | None = None,
    min_signal: float = 1.0,
    min_background: float = 1.0,
    min_mc_events: int = 10,
) -> ThresholdChoice:
    """Best S/√B over the bin edges of score histograms.

    edges: (K+1,) score bin edges; signal_yield / background_yield: (K,) expected events per score bin
    (already multiplied by the luminosity). The selection "score > edges[i]" keeps bins i.. K-1 (cuts sit
    on edges). signal_count / background_count: (K,) raw MC events per bin, to require at least
    `min_mc_events` selected MC events of each kind (a tight cut on a few events is noise, the reason the
    study did not always take the S/√B maximum). Candidates with S < min_signal or B < min_background
    expected events are refused. Returns the threshold edges[i] with the highest S/√B.
    """
    edges = np.asarray(edges, dtype=np.float64)
    sig_above = np.cumsum(np.asarray(signal_yield, dtype=np.float64)[::-1])[
        ::-1
    ]  # (K,) S for cut at edges[i]
    bkg_above = np.cumsum(np.asarray(background_yield, dtype=np.float64)[::-1])[::-1]
    allowed = (sig_above >= min_signal) & (bkg_above >= min_background)
    if signal_count is not None:
        allowed &= np.cumsum(np.asarray(signal_count)[::-1])[::-1] >= min_mc_events
    if background_count is not None:
        allowed &= np.cumsum(np.asarray(background_count)[::-1])[::-1] >= min_mc_events
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_significance = np.where(bkg_above > 0, sig_above / np.sqrt(bkg_above), 0.0)
    significance = np.where(allowed, raw_significance, -np.inf)
    if not np.isfinite(significance).any():
        return ThresholdChoice(
            float("nan"),
            float("nan"),
            f"no threshold leaves S >= {min_signal}, B >= {min_background} expected events "
            f"and >= {min_mc_events} MC events of each kind",
        )
    best = int(np.argmax(significance))
    unconstrained = int(np.argmax(raw_significance))
    limited = " (limited by the minimum-yield requirements)" if unconstrained != best else ""
    reason = (
        f"max S/sqrt(B) = {significance[best]:.4g} at score > {edges[best]:.4g}: "
        f"S = {sig_above[best]:.4g}, B = {bkg_above[best]:.4g} expected events{limited}"
    )
    logger.debug(reason)
    return ThresholdChoice(float(edges[best]), float(significance[best]), reason)


def best_threshold(
    sig_score: np.ndarray,
    sig_weight: np.ndarray,
    bkg_score: np.ndarray,
    bkg_weight: np.ndarray,
    *,
    lumi_ifb: float,
    min_signal: float = 1.0,
    min_background: float = 1.0,
    min_mc_events: int = 10,
) -> ThresholdChoice:
    """Threshold maximising S/√B with S = L·Σ w_sig, B = L·Σ w_bkg over events with score > threshold.

    sig_score, sig_weight: (Ns,) signal scores and weights (fb); bkg_score, bkg_weight: (Nb,) likewise;
    lumi_ifb: integrated luminosity (fb⁻¹). Every distinct score is a candidate (vectorised: one sort and
    cumulative sums). The returned threshold lies just below the lowest kept score, so
    `select_threshold(score, threshold)` keeps exactly the chosen events.
    """
    if lumi_ifb <= 0:
        raise ValueError(f"lumi_ifb must be positive, got {lumi_ifb}")
    sig_score = np.asarray(sig_score, dtype=np.float64)
    bkg_score = np.asarray(bkg_score, dtype=np.float64)
    scores = np.concatenate([sig_score, bkg_score])  # (Ns+Nb,)
    if scores.size == 0:
        return ThresholdChoice(float("nan"), float("nan"), "no events")
    candidates = np.unique(scores)  # (K,) ascending; a cut "score >= candidates[i]" keeps bins i..K-1
    sig_bin = np.searchsorted(candidates, sig_score)
    bkg_bin = np.searchsorted(candidates, bkg_score)
    k = candidates.size
    sig_yield = np.bincount(sig_bin, weights=lumi_ifb * np.asarray(sig_weight, np.float64), minlength=k)
    bkg_yield = np.bincount(bkg_bin, weights=lumi_ifb * np.asarray(bkg_weight, np.float64), minlength=k)
    # "score >= c_i" equals "score > t_i" with t_i just below c_i (the previous candidate's midpoint).
    lower = np.concatenate(
        [[candidates[0] - max(1e-12, abs(candidates[0]) * 1e-9)], 0.5 * (candidates[1:] + candidates[:-1])]
    )  # (K,)
    edges = np.concatenate([lower, [np.inf]])  # (K+1,)
    return best_threshold_from_histograms(
        edges,
        sig_yield,
        bkg_yield,
        signal_count=np.bincount(sig_bin, minlength=k),
        background_count=np.bincount(bkg_bin, minlength=k),
        min_signal=min_signal,
        min_background=min_background,
        min_mc_events=min_mc_events,
    )
