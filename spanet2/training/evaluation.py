"""The `test` numbers of a trained run on a test file: assignment table, ACC/AUC, pairing efficiency per κλ."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from spanet2.errors import DataError
from spanet2.training.inference import load_run, predict_arrays
from spanet2.uncertainty import fmt_pm

__all__ = ["evaluate", "format_evaluation", "table_row", "finite_or_none"]


def finite_or_none(value) -> float | None:
    """A float, or None for None, NaN and ±inf (JSON-safe metric values)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def table_row(table, row: str) -> dict[str, float]:
    """One row of a metrics.AssignmentTable as a plain dict (NaN → None)."""
    return {k: (finite_or_none(v) if k != "n_events" else int(v)) for k, v in table.as_dict()[row].items()}


def evaluate(
    run_dir: str | os.PathLike,
    test_file: str | os.PathLike,
    *,
    gpu: bool = False,
    batch_size: int | None = None,
    event_file: str | os.PathLike | None = None,
    chunk_size: int = 65536,
    per_event: bool = False,
) -> dict[str, Any]:
    """The `test` command's numbers for a run directory on a test file (the training file is not needed).

    Returns {"n_events", "assignment_table" {row: {event_fraction, event_efficiency, higgs_efficiency and
    their *_err σ}}, "accuracy", "accuracy_err", "auc", "auc_err" (DeLong), "pairing_efficiency_by_kappa"
    {κλ: eff}, "pairing_by_kappa" {κλ: {efficiency, err, correct, events}}, "checkpoint", "test_file"};
    per_event adds "events": per-event arrays (pairing_correct, two_higgs, kappa, labels, scores).
    """
    from spanet2.training import metrics as M
    from spanet2.training.dataset import iter_test_batches

    loaded = load_run(run_dir, gpu=gpu, event_file=event_file)
    batch_size = batch_size or loaded.options.batch_size
    preds, targets, n_jets, labels, scores, kappas = [], [], [], [], [], []
    for batch, truth in iter_test_batches(
        test_file, loaded.topology, loaded.normalization, batch_size=batch_size, chunk_size=chunk_size
    ):
        out = predict_arrays(loaded, batch)
        preds.append(out["assignment"].reshape(len(out["assignment"]), -1))  # (B, 2P)
        targets.append(truth["targets"].reshape(len(truth["targets"]), -1))  # (B, 2P)
        n_jets.append(truth["n_jets"])
        if "class:EVENT/signal" in out and "EVENT/signal" in truth.get("classifications", {}):
            labels.append(truth["classifications"]["EVENT/signal"])
            scores.append(
                out["class:EVENT/signal"][:, 1]
                if out["class:EVENT/signal"].shape[1] > 1
                else out["class:EVENT/signal"][:, 0]
            )
        if truth.get("kappa") is not None:
            kappas.append(truth["kappa"])
    if not preds:
        raise DataError(test_file, None, "no events in the test file")
    pred, target, jets = np.concatenate(preds), np.concatenate(targets), np.concatenate(n_jets)
    table = M.assignment_table(pred, target, jets)
    result: dict[str, Any] = {
        "test_file": str(test_file),
        "checkpoint": str(loaded.checkpoint),
        "n_events": int(len(pred)),
        "assignment_table": {row: table_row(table, row) for row in ("=4", "=5", ">=6", "Total")},
        "assignment_table_markdown": M.format_assignment_table(table),
    }
    y = s = kappa = None
    if labels:
        y, s = np.concatenate(labels), np.concatenate(scores)
        valid = y >= 0
        result.update({k: finite_or_none(v) for k, v in M.classification_metrics(y[valid], s[valid]).items()})
    if kappas:
        kappa = np.concatenate(kappas)
        by_kappa = M.pairing_by_kappa_with_errors(pred, target, kappa)
        result["pairing_efficiency_by_kappa"] = {k: finite_or_none(v["efficiency"]) for k, v in by_kappa.items()}
        result["pairing_by_kappa"] = by_kappa  # with the Wilson σ and the counts
    if per_event:  # not JSON: for paired comparisons on the same events
        result["events"] = {"pairing_correct": M.higgs_correct(pred, target).all(axis=1),
                            "two_higgs": (target >= 0).all(axis=1), "kappa": kappa, "labels": y, "scores": s}
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """Markdown: the assignment table, ACC/AUC and the pairing efficiency per κλ."""
    lines = [
        f"# {result['test_file']} ({result['n_events']} events; {result['checkpoint']})",
        "",
        result["assignment_table_markdown"].rstrip(),
        "",
    ]
    if "accuracy" in result:
        acc, auc = result["accuracy"], result.get("auc")
        lines.append(f"ACC = {fmt_pm(acc, result.get('accuracy_err'), 4)}" if acc is not None else "ACC = n/a")
        lines.append(f"AUC = {fmt_pm(auc, result.get('auc_err'), 4)} (± DeLong σ)" if auc is not None
                     else "AUC = n/a (one class only)")
        lines.append("")
    if result.get("pairing_by_kappa"):
        lines += ["| kappa_lambda | pairing efficiency | 2h events |", "|---:|---:|---:|"]
        for kappa, v in result["pairing_by_kappa"].items():
            lines.append(f"| {kappa} | {fmt_pm(v['efficiency'], v['err'], 4)} | {v['events']} |")
    return "\n".join(lines) + "\n"
