"""Learning curves of a run: train/validation loss, validation AUC and pairing efficiency vs epoch (with their
σ as error bars where the history records `<key>_err`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from spanet2.atomic import atomic_path

__all__ = ["write_learning_curves"]

PANELS = (
    ("loss", (("train_loss", "training"), ("val_loss", "validation"))),
    ("validation AUC", (("val_auc", "AUC"),)),
    ("validation pairing efficiency", (("val_pairing_efficiency", "2h events"),)),
)


def write_learning_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> None:
    """One PNG with a panel per quantity the history carries (epochs on x; the best epoch marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (label, [(key, name) for key, name in series if any(r.get(key) is not None for r in history)])
        for label, series in PANELS
    ]
    panels = [(label, series) for label, series in panels if series]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    best = [int(r["epoch"]) for r in history if r.get("best")]
    for ax, (label, series) in zip(axes[0], panels, strict=True):
        for key, name in series:
            rows = [r for r in history if r.get(key) is not None]
            epochs, values = [int(r["epoch"]) for r in rows], [float(r[key]) for r in rows]
            errors = [r.get(f"{key}_err") for r in rows]  # validation AUC: DeLong σ; pairing: Wilson σ
            if all(e is not None and math.isfinite(e) for e in errors):
                ax.errorbar(epochs, values, yerr=errors, marker="o", markersize=3, capsize=2, label=name)
            else:
                ax.plot(epochs, values, marker="o", markersize=3, label=name)
        if best:
            ax.axvline(best[-1], color="0.6", linestyle=":", linewidth=1, label=f"best epoch ({best[-1]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
