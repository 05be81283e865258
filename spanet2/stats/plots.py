"""Plots of the κλ scans: −2Δln L and CLs vs κλ with the bounds marked; Δκλ vs luminosity (Fig. 14)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.atomic import atomic_path

__all__ = ["plot_scan_curves", "plot_width_vs_lumi"]

logger = logging.getLogger(__name__)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path_stem: Path) -> list[Path]:
    written = []
    for ext in ("png", "pdf"):
        target = path_stem.with_suffix(f".{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        written.append(target)
    return written


def _bounds(interval: Any) -> str:
    if not interval.pieces:
        return "all excluded"
    return " ∪ ".join(
        f"[{'…' if lo is None else f'{lo:.2f}'}, {'…' if hi is None else f'{hi:.2f}'}]"
        for lo, hi in interval.pieces
    )


def plot_scan_curves(result: Any, out_dir: str | Path) -> list[Path]:
    """One figure per luminosity: −2Δ ln L (left) and CLs (right) vs κλ for every method, bounds as lines.

    result: a ScanResult of kind "scan". Writes scan_L<lumi>.png and .pdf in out_dir; returns the paths.
    """
    plt = _figure()
    config = result.config
    written: list[Path] = []
    for lumi in config.luminosities:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for i, spec in enumerate(config.methods):
            curve = result.curves[spec.name][lumi]
            colour = f"C{i}"
            kappa = np.asarray(curve["kappa"])
            intervals = result.intervals[spec.name][lumi]
            if "pl" in intervals:
                iv = intervals["pl"]
                axes[0].plot(
                    kappa, curve["delta_twice_nll"], color=colour, label=f"{spec.label}: {_bounds(iv)}"
                )
                for lo, hi in iv.pieces:
                    for edge in (lo, hi):
                        if edge is not None:
                            axes[0].axvline(edge, color=colour, ls=":", lw=1)
            if "cls" in intervals:
                iv = intervals["cls"]
                axes[1].plot(
                    curve["kappa_cls"], curve["cls"], color=colour, label=f"{spec.label}: {_bounds(iv)}"
                )
                for lo, hi in iv.pieces:
                    for edge in (lo, hi):
                        if edge is not None:
                            axes[1].axvline(edge, color=colour, ls=":", lw=1)
        axes[0].axhline(
            config.pl_threshold, color="k", ls="--", lw=1, label=f"threshold {config.pl_threshold:g}"
        )
        axes[0].set_ylim(0, max(4 * config.pl_threshold, 10))
        axes[0].set_ylabel(r"$-2\Delta\ln L$")
        axes[1].axhline(config.cls_level, color="k", ls="--", lw=1, label=f"CLs = {config.cls_level:g}")
        axes[1].set_yscale("log")
        axes[1].set_ylim(1e-4, 1.2)
        axes[1].set_ylabel(r"median expected CL$_s$ ($\mu = 1$)")
        edges = [
            e
            for spec in config.methods
            for iv in result.intervals[spec.name][lumi].values()
            for piece in iv.pieces
            for e in piece
            if e is not None
        ]
        for ax in axes:
            if edges:  # zoom on the bounds, inside the scanned grid
                ax.set_xlim(
                    max(config.kappa_grid[0], min(edges) - 4), min(config.kappa_grid[-1], max(edges) + 4)
                )
            ax.set_xlabel(r"$\kappa_\lambda$")
            ax.legend(fontsize=8)
        fig.suptitle(f"{config.sqrt_s_tev:g} TeV, {lumi:g} fb$^{{-1}}$, Asimov: {config.likelihood.asimov}")
        written += _save(fig, Path(out_dir) / f"scan_L{lumi:g}")
        plt.close(fig)
    return written


def plot_width_vs_lumi(result: Any, out_dir: str | Path) -> list[Path]:
    """Δκλ = upper − lower vs luminosity (log x) per method and statistic (the note's Fig. 14)."""
    plt = _figure()
    config = result.config
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {"pl": "-", "cls": "--"}
    for i, spec in enumerate(config.methods):
        by_lumi = result.intervals[spec.name]
        lumis = sorted(by_lumi)
        for stat in config.statistics:
            points = [
                (lumi, by_lumi[lumi][stat].width) for lumi in lumis if by_lumi[lumi][stat].width is not None
            ]
            if not points:
                continue
            ax.plot(
                *zip(*points, strict=True),
                styles[stat],
                marker="o",
                ms=3,
                color=f"C{i}",
                label=f"{spec.label} ({'PL' if stat == 'pl' else 'CLs'})",
            )
    ax.set_xscale("log")
    ax.set_xlabel(r"$\mathcal{L}$ (fb$^{-1}$)")
    ax.set_ylabel(r"$\Delta\kappa_\lambda$")
    ax.set_title(f"{config.sqrt_s_tev:g} TeV, Asimov: {config.likelihood.asimov}")
    ax.legend(fontsize=8)
    written = _save(fig, Path(out_dir) / "delta_kappa_vs_lumi")
    plt.close(fig)
    return written
