"""Statistical uncertainties of the reported numbers (ground floor: numpy and scipy only).

- efficiencies: Wilson score intervals (68.3 % by default) and their half-width as the ± σ;
- one AUC: DeLong's variance (the AUC is a two-sample U statistic); two AUCs on the same events: DeLong's
  paired covariance, so the difference's σ accounts for the correlation;
- per-event 0/1 outcomes of two methods on the same events (pairing right or wrong): the paired difference;
- repeats: mean, sample std and the standard error of the mean;
- comparisons: |difference| ≥ 2σ is "resolved", otherwise "not resolved at this sample size".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "RESOLVED_SIGMAS",
    "binomial_error",
    "compare",
    "delong",
    "delong_paired",
    "fmt_pm",
    "mean_std_sem",
    "paired_difference",
    "wilson_interval",
]

RESOLVED_SIGMAS = 2.0  # a difference counts as resolved at |Δ| ≥ 2σ


def wilson_interval(k: Any, n: Any, z: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n trials at ±z (z = 1: 68.3 %); NaN where n = 0. Vectorised."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError(f"expected 0 <= k <= n, got k={k}, n={n}")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def binomial_error(k: Any, n: Any) -> np.ndarray | float:
    """σ of the efficiency k/n: half the width of its 68.3 % Wilson interval (> 0 even at k = 0 or n)."""
    lo, hi = wilson_interval(k, n)
    half = (hi - lo) / 2
    return float(half) if np.ndim(half) == 0 else half


def _midranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def _delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: V10 (one per positive), V01 (one per negative)."""
    pos, neg = scores[labels], scores[~labels]
    m, n = len(pos), len(neg)
    r_all = _midranks(np.concatenate([pos, neg]))
    v10 = (r_all[:m] - _midranks(pos)) / n  # share of negatives below each positive (ties ½)
    v01 = 1.0 - (r_all[m:] - _midranks(neg)) / m  # share of positives above each negative
    return v10, v01


def _check_binary(labels: Any, *scores: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    labels = np.asarray(labels).astype(bool)
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    if any(a.shape != labels.shape for a in arrays):
        raise ValueError("labels and scores must have the same length")
    return labels, arrays


def delong(labels: Any, scores: Any) -> tuple[float, float]:
    """(AUC, σ) by DeLong et al. (1988); (NaN, NaN) when a class has fewer than two events."""
    labels, (scores,) = _check_binary(labels, scores)
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        return float("nan"), float("nan")
    v10, v01 = _delong_components(labels, scores)
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return float(v10.mean()), float(math.sqrt(max(var, 0.0)))


def delong_paired(labels: Any, scores_a: Any, scores_b: Any) -> dict[str, float]:
    """Two classifiers on the same events: AUCs, their difference a − b and its σ (DeLong's covariance)."""
    labels, (sa, sb) = _check_binary(labels, scores_a, scores_b)
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        nan = float("nan")
        return {"a": nan, "b": nan, "difference": nan, "sigma": nan}
    a10, a01 = _delong_components(labels, sa)
    b10, b01 = _delong_components(labels, sb)
    s10 = np.cov(np.stack([a10, b10]))
    s01 = np.cov(np.stack([a01, b01]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return {
        "a": float(a10.mean()),
        "b": float(b10.mean()),
        "difference": float(a10.mean() - b10.mean()),
        "sigma": float(math.sqrt(max(var, 0.0))),
    }


def paired_difference(right_a: Any, right_b: Any) -> tuple[float, float]:
    """Mean of a − b over events where both methods were scored (0/1 or bool arrays) and its σ."""
    a = np.asarray(right_a, dtype=np.float64)
    b = np.asarray(right_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"expected outcomes on the same events, got shapes {a.shape} and {b.shape}")
    d = a - b
    if d.size < 2:
        return float("nan"), float("nan")
    sigma = d.std(ddof=1) / math.sqrt(d.size)
    if sigma == 0.0:  # every event agrees: bound the σ by the discordant-rate's Wilson width
        sigma = float(binomial_error(0, d.size))
    return float(d.mean()), float(sigma)


def mean_std_sem(values: Sequence[float]) -> dict[str, float]:
    """Over repeats: {"mean", "std" (sample, ddof 1), "sem" (std/√n), "n"}; std and sem NaN for n < 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    nan = float("nan")
    if v.size == 0:
        return {"mean": nan, "std": nan, "sem": nan, "n": 0}
    std = float(v.std(ddof=1)) if v.size > 1 else nan
    return {"mean": float(v.mean()), "std": std, "sem": std / math.sqrt(v.size) if v.size > 1 else nan,
            "n": int(v.size)}


def compare(difference: float, sigma: float, *, higher_is_better: bool = True) -> dict[str, Any]:
    """A comparison's verdict: {"difference", "sigma", "significance", "resolved", "statement"}."""
    if difference is None or sigma is None or not (np.isfinite(difference) and np.isfinite(sigma)):
        return {"difference": difference, "sigma": sigma, "significance": None, "resolved": False,
                "statement": "not computable"}
    z = abs(difference) / sigma if sigma > 0 else math.inf
    resolved = z >= RESOLVED_SIGMAS
    better = (difference > 0) == higher_is_better
    if resolved:
        statement = f"{'better' if better else 'worse'} ({z:.1f}σ)"
    else:
        statement = f"not resolved at this sample size ({z:.1f}σ)"
    return {"difference": float(difference), "sigma": float(sigma), "significance": float(z),
            "resolved": bool(resolved), "statement": statement}


def _digits(err: float) -> int:
    """Decimals that show two significant digits of the error (at least 0, at most 6)."""
    if not np.isfinite(err) or err <= 0:
        return 3
    return int(min(6, max(0, 1 - math.floor(math.log10(err)))))


def fmt_pm(value: float | None, err: float | None, digits: int | None = None) -> str:
    """"0.719 ± 0.015" (decimals from the error's two significant digits unless given); "—" for no value."""
    if value is None or not np.isfinite(value):
        return "—"
    if err is None or not np.isfinite(err):
        return f"{value:.{3 if digits is None else digits}f}"
    d = _digits(err) if digits is None else digits
    return f"{value:.{d}f} ± {err:.{d}f}"
