"""The `test` numbers of a trained run on a test file: assignment table, ACC/AUC, pairing efficiency per κλ."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from spanet2.errors import DataError
from spanet2.training.inference import load_run, predict_arrays

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
) -> dict[str, Any]:
    """The `test` command's numbers for a run directory on a test file (the training file is not needed).

    Returns {"n_events", "assignment_table" {row: {event_fraction, event_efficiency, higgs_efficiency}},
    "accuracy", "auc", "pairing_efficiency_by_kappa" {κλ: eff}, "checkpoint", "test_file"}.
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
    if labels:
        y, s = np.concatenate(labels), np.concatenate(scores)
        valid = y >= 0
        result["accuracy"] = finite_or_none(M.accuracy(y[valid], s[valid]))
        result["auc"] = (
            finite_or_none(M.roc_auc(y[valid], s[valid])) if len(np.unique(y[valid])) == 2 else None
        )
    if kappas:
        kappa = np.concatenate(kappas)
        by_kappa = M.pairing_efficiency_by_kappa(pred, target, kappa)
        result["pairing_efficiency_by_kappa"] = {
            f"{float(k):g}": finite_or_none(v) for k, v in by_kappa.items()
        }
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
        lines.append(f"ACC = {acc:.4f}" if acc is not None else "ACC = n/a")
        lines.append(f"AUC = {auc:.4f}" if auc is not None else "AUC = n/a (one class only)")
        lines.append("")
    if result.get("pairing_efficiency_by_kappa"):
        lines += ["| kappa_lambda | pairing efficiency |", "|---:|---:|"]
        for kappa, eff in result["pairing_efficiency_by_kappa"].items():
            lines.append(f"| {kappa} | {eff:.4f} |" if eff is not None else f"| {kappa} | n/a |")
    return "\n".join(lines) + "\n"
