"""Symmetry-aware jet-assignment metrics (the note's tables), accuracy and a rank-based ROC AUC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spanet2.uncertainty import binomial_error, delong, fmt_pm

__all__ = [
    "AssignmentRow",
    "AssignmentTable",
    "assignment_table",
    "higgs_correct",
    "pairing_by_kappa_with_errors",
    "pairing_counts_by_kappa",
    "pairing_efficiency_by_kappa",
    "accuracy",
    "classification_metrics",
    "roc_auc",
    "format_assignment_table",
    "ROW_LABELS",
]

ROW_LABELS = ("=4", "=5", ">=6", "Total")


@dataclass(frozen=True)
class AssignmentRow:
    """One row of the assignment table; efficiencies are NaN when the row has no 2h event. The *_err fields
    are the 68 % statistical σ: Wilson for the fraction and the event efficiency, the per-event spread of the
    found share (0, ½, 1) over √n for the Higgs efficiency (its two Higgs bosons are correlated)."""

    n_events: int  # 2h events in the row
    event_fraction: float
    event_efficiency: float
    higgs_efficiency: float
    event_fraction_err: float = float("nan")
    event_efficiency_err: float = float("nan")
    higgs_efficiency_err: float = float("nan")


@dataclass(frozen=True)
class AssignmentTable:
    """Rows "=4", "=5", ">=6", "Total" (real jets), each an AssignmentRow; n_total = all test events."""

    rows: dict[str, AssignmentRow]
    n_total: int

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            label: {
                "n_events": row.n_events,
                "event_fraction": row.event_fraction,
                "event_efficiency": row.event_efficiency,
                "higgs_efficiency": row.higgs_efficiency,
                "event_fraction_err": row.event_fraction_err,
                "event_efficiency_err": row.event_efficiency_err,
                "higgs_efficiency_err": row.higgs_efficiency_err,
            }
            for label, row in self.rows.items()
        }


def _unordered(pairs: np.ndarray) -> np.ndarray:
    """(..., 2) jet pairs → (..., 2) with the smaller index first."""
    return np.sort(pairs, axis=-1)


def higgs_correct(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, 4) predicted and true [h1b1, h1b2, h2b1, h2b2] → (N, 2) bool: is each *true* Higgs predicted?

    A true Higgs counts as found when one of the predicted Higgs pairs holds exactly its two jets
    (b1 ↔ b2 and h1 ↔ h2 symmetric). Unmatched true Higgs (a −1 index) are never found.
    """
    pred_pairs = _unordered(np.asarray(pred, dtype=np.int64).reshape(-1, 2, 2))  # (N, 2, 2)
    true_pairs = _unordered(np.asarray(target, dtype=np.int64).reshape(-1, 2, 2))  # (N, 2, 2)
    same = (true_pairs[:, :, None, :] == pred_pairs[:, None, :, :]).all(axis=-1)  # (N, true 2, pred 2)
    found = same.any(axis=2)  # (N, 2)
    return found & (true_pairs >= 0).all(axis=-1)


def assignment_table(
    pred: np.ndarray, target: np.ndarray, n_jets: np.ndarray, *, n_total: int | None = None
) -> AssignmentTable:
    """The note's assignment table (docs/physics.md §2) over 2h events.

    pred, target: (N, 4) jet indices [h1b1, h1b2, h2b1, h2b2] (−1 = none); n_jets: (N,) real jets
    (global inputs not counted); n_total: the number of test events the fractions are relative to
    (default N). Event fraction = 2h events in the bin / n_total; event efficiency = share of those
    with both Higgs right; Higgs efficiency = share of their Higgs bosons right.
    """
    pred = np.asarray(pred, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    n_jets = np.asarray(n_jets)
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != 4 or len(n_jets) != len(pred):
        raise ValueError(
            f"expected pred, target (N, 4) and n_jets (N,), got {pred.shape}, {target.shape}, {n_jets.shape}"
        )
    total = len(pred) if n_total is None else int(n_total)
    full = (target >= 0).all(axis=1)  # 2h events
    found = higgs_correct(pred, target)  # (N, 2)
    bins = {
        "=4": n_jets == 4,
        "=5": n_jets == 5,
        ">=6": n_jets >= 6,
        "Total": np.ones(len(pred), dtype=bool),
    }
    rows = {}
    for label, in_bin in bins.items():
        chosen = full & in_bin
        count = int(chosen.sum())
        nan = float("nan")
        event_eff = higgs_eff = event_err = higgs_err = nan
        if count:
            both = found[chosen].all(axis=1)
            share = found[chosen].mean(axis=1)  # (n,) 0, ½ or 1
            event_eff, higgs_eff = float(both.mean()), float(share.mean())
            event_err = binomial_error(int(both.sum()), count)
            spread = float(share.std(ddof=1)) / np.sqrt(count) if count > 1 else nan
            # never below the Wilson width of 2n independent trials (the spread is 0 when every event agrees)
            higgs_err = max(spread if np.isfinite(spread) else 0.0,
                            binomial_error(int(round(found[chosen].sum())), 2 * count))
        rows[label] = AssignmentRow(
            n_events=count,
            event_fraction=count / total if total else nan,
            event_efficiency=event_eff,
            higgs_efficiency=higgs_eff,
            event_fraction_err=binomial_error(count, total) if total else nan,
            event_efficiency_err=event_err,
            higgs_efficiency_err=higgs_err,
        )
    return AssignmentTable(rows=rows, n_total=total)


def pairing_counts_by_kappa(
    pred: np.ndarray, target: np.ndarray, kappa: np.ndarray
) -> dict[float, tuple[int, int]]:
    """At each κλ value: (2h events with both Higgs right, 2h events).

    pred, target (N, 4); kappa (N,) (NaN entries, e.g. background, are skipped).
    """
    pred = np.asarray(pred, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    kappa = np.asarray(kappa, dtype=np.float64)
    full = (target >= 0).all(axis=1) & np.isfinite(kappa)
    correct = higgs_correct(pred, target).all(axis=1)
    values, inverse = np.unique(kappa[full], return_inverse=True)
    n = np.bincount(inverse, minlength=len(values))
    hits = np.bincount(inverse, weights=correct[full].astype(np.float64), minlength=len(values))
    return {float(k): (int(round(h)), int(c)) for k, h, c in zip(values, hits, n, strict=True)}


def pairing_efficiency_by_kappa(
    pred: np.ndarray, target: np.ndarray, kappa: np.ndarray
) -> dict[float, float]:
    """Event efficiency of the 2h events at each κλ value: {κλ: fraction with both Higgs right}."""
    return {k: h / n for k, (h, n) in pairing_counts_by_kappa(pred, target, kappa).items()}


def pairing_by_kappa_with_errors(pred: np.ndarray, target: np.ndarray, kappa: np.ndarray) -> dict[str, dict]:
    """JSON-ready {"κλ": {"efficiency", "err" (Wilson 68 %), "correct", "events"}} for the 2h events."""
    return {
        f"{k:g}": {"efficiency": h / n, "err": binomial_error(h, n), "correct": h, "events": n}
        for k, (h, n) in pairing_counts_by_kappa(pred, target, kappa).items()
    }


def accuracy(
    labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, weights: np.ndarray | None = None
) -> float:
    """Share of events with (score ≥ threshold) == label (labels 0/1); weighted when `weights` is given."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    right = (predicted == labels).astype(np.float64)
    if weights is None:
        return float(right.mean()) if len(right) else float("nan")
    weights = np.asarray(weights, dtype=np.float64)
    return float((right * weights).sum() / weights.sum())


def roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve via ranks (ties count one half), optionally event-weighted.

    AUC = Σ_pos w [W_neg(score < s) + ½ W_neg(score = s)] / (W_pos W_neg); equals sklearn's
    roc_auc_score. NaN when one class is absent.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    unique, inverse = np.unique(scores, return_inverse=True)  # distinct scores ascending
    neg_by_score = np.bincount(inverse, weights=w * ~labels, minlength=len(unique))
    pos_by_score = np.bincount(inverse, weights=w * labels, minlength=len(unique))
    neg_below = np.cumsum(neg_by_score) - neg_by_score  # negatives strictly below each distinct score
    total_pos, total_neg = pos_by_score.sum(), neg_by_score.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    return float((pos_by_score * (neg_below + 0.5 * neg_by_score)).sum() / (total_pos * total_neg))


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """Unweighted ACC (threshold 0.5) ± binomial σ and AUC ± DeLong σ; AUC None when a class is absent."""
    labels = np.asarray(labels).astype(bool)
    acc = accuracy(labels, scores)
    n = len(labels)
    out: dict[str, float | None] = {
        "accuracy": acc if n else None,
        "accuracy_err": binomial_error(int(round(acc * n)), n) if n else None,
        "auc": None,
        "auc_err": None,
    }
    if len(np.unique(labels)) == 2:
        auc, err = delong(labels, scores)
        out["auc"] = roc_auc(labels, scores)
        out["auc_err"] = err if np.isfinite(err) else None
    return out


def format_assignment_table(table: AssignmentTable, *, title: str | None = None) -> str:
    """Markdown table with the note's columns (event fraction, event efficiency, Higgs efficiency)."""
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines += [
        "| N_jet | Event fraction | Event efficiency | Higgs efficiency |",
        "|---|---|---|---|",
    ]
    for label, row in table.rows.items():
        lines.append(
            f"| {label} | {fmt_pm(row.event_fraction, row.event_fraction_err, 3)} | "
            f"{fmt_pm(row.event_efficiency, row.event_efficiency_err, 3)} | "
            f"{fmt_pm(row.higgs_efficiency, row.higgs_efficiency_err, 3)} |"
        )
    return "\n".join(lines)
