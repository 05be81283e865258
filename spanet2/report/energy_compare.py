"""13 vs 14 TeV kinematics with a 14/13 ratio panel (note Figs. 11–13)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spanet2.report.pca import _save

__all__ = ["plot_energy_comparison", "energy_ratio_summary"]


def _normalised_hist(values: np.ndarray, weights: np.ndarray | None, edges: np.ndarray):
    h, _ = np.histogram(values, bins=edges, weights=weights)
    w2, _ = np.histogram(values, bins=edges, weights=None if weights is None else weights**2)
    total = h.sum()
    if total <= 0:
        return np.zeros_like(h, dtype=float), np.zeros_like(h, dtype=float)
    widths = np.diff(edges)
    return h / total / widths, np.sqrt(w2) / total / widths


def energy_ratio_summary(panels: Mapping[str, dict]) -> dict[str, float]:
    """Per panel: the mean over populated bins of |14/13 − 1| (a one-number 'looks alike' check)."""
    out = {}
    for name, p in panels.items():
        edges = np.asarray(p["edges"], dtype=float)
        h13, _ = _normalised_hist(np.asarray(p["v13"]), p.get("w13"), edges)
        h14, _ = _normalised_hist(np.asarray(p["v14"]), p.get("w14"), edges)
        ok = (h13 > 0) & (h14 > 0)
        out[name] = float(np.mean(np.abs(h14[ok] / h13[ok] - 1))) if ok.any() else float("nan")
    return out


def plot_energy_comparison(panels: Mapping[str, dict], path_stem: Path, *, title: str = "") -> list[Path]:
    """panels: {label: {"v13": values, "v14": values, "edges": bin edges, "xlabel": str, optional "w13"/"w14"}}.

    Each panel shows the unit-normalised 13 and 14 TeV distributions and below them the 14/13 ratio.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 4.6), sharex="col",
                             gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for col, (name, p) in enumerate(panels.items()):
        edges = np.asarray(p["edges"], dtype=float)
        centres = 0.5 * (edges[1:] + edges[:-1])
        h13, e13 = _normalised_hist(np.asarray(p["v13"]), p.get("w13"), edges)
        h14, e14 = _normalised_hist(np.asarray(p["v14"]), p.get("w14"), edges)
        top, bottom = axes[0, col], axes[1, col]
        top.stairs(h13, edges, label="13 TeV", color="tab:blue")
        top.stairs(h14, edges, label="14 TeV", color="tab:red")
        top.set_ylabel("normalised")
        top.set_title(name, fontsize=10)
        top.legend(fontsize=8)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(h13 > 0, h14 / h13, np.nan)
            err = np.where((h13 > 0) & (h14 > 0), ratio * np.hypot(e13 / h13, e14 / h14), np.nan)
        bottom.errorbar(centres, ratio, yerr=err, fmt="o", ms=3, color="k")
        bottom.axhline(1.0, color="gray", lw=0.8)
        bottom.set_ylim(0.5, 1.5)
        bottom.set_ylabel("14/13")
        bottom.set_xlabel(p.get("xlabel", name))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path_stem)
