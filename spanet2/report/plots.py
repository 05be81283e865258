"""The note's figures from an event store: Higgs-candidate mass planes, m_HH after selection, pairing efficiency vs κλ."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spanet2.atomic import atomic_path
from spanet2.errors import DataError, InputError
from spanet2.events.store import EventStore, open_store

__all__ = [
    "save_figure",
    "plot_mass_planes",
    "plot_mhh_after_selection",
    "pairing_efficiency_from_store",
    "plot_pairing_efficiency",
    "pairing_efficiency_figure",
    "plot_all",
    "plot_scaling",
    "binomial_uncertainty",
    "two_higgs_events_by_kappa",
    "METHOD_LABELS",
    "PAIRING_LABELS",
    "signal_weight",
]

logger = logging.getLogger(__name__)

MASS_RANGE_GEV = (0.0, 250.0)
MHH_EDGES_GEV = np.linspace(200.0, 1000.0, 11)  # docs/physics.md §9: 10 bins over 200–1000 GeV
_COLOURS = ("#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6", "#a96b59")


def _store(store: EventStore | str | os.PathLike) -> EventStore:
    return store if isinstance(store, EventStore) else open_store(store)


def save_figure(
    fig: Figure, out_stem: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Write `fig` as `<out_stem>.png` and `.pdf` (each atomically); return the paths."""
    FigureCanvasAgg(fig)
    paths = []
    for fmt in formats:
        path = Path(f"{out_stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
        paths.append(path)
    return paths


def _feature_columns(store: EventStore, sample: str, method: str, names: Sequence[str]) -> np.ndarray:
    """Selected feature columns (N, len(names)) of one method, read column-wise from the store."""
    feature_names = list(
        store.sample_attrs(sample).get("feature_names") or store.attrs.get("feature_names") or ()
    )
    missing = [n for n in names if n not in feature_names]
    if missing:
        raise DataError(store.path, f"{sample}/{method}/features", f"no feature {missing[0]!r} in the store's "
                        f"feature_names {feature_names}")  # fmt: skip
    array = store.array(sample, f"{method}/features")
    return np.stack([array[:, feature_names.index(n)] for n in names], axis=1)


def _methods(store: EventStore, methods: Sequence[str] | None, sample: str = "signal") -> list[str]:
    available = store.methods(sample)
    if methods is None:
        if not available:
            raise DataError(store.path, sample, "no per-method columns in the store")
        return available
    for method in methods:
        if method not in available:
            raise InputError(
                store.path, f"{sample}/{method}", f"no such method (methods: {', '.join(available)})"
            )
    return list(methods)


def plot_mass_planes(
    store: EventStore | str | os.PathLike,
    sample: str,
    out_stem: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    bins: int = 50,
    mass_range: tuple[float, float] = MASS_RANGE_GEV,
) -> list[Path]:
    """The note's Figs. 2–3: per method (one row each) the (m_h1, m_h2) plane and the two mass distributions.

    Unweighted event counts of `sample` (no selection), h1 = higher-pT candidate. Events without a valid
    pairing (NaN masses) are left out. Returns the PNG and PDF paths.
    """
    import matplotlib
    import mplhep

    store = _store(store)
    methods = _methods(store, methods, sample)
    edges = np.linspace(*mass_range, bins + 1)
    sqrt_s = store.attrs.get("sqrt_s_tev")
    with matplotlib.rc_context(mplhep.style.ATLAS):
        fig = Figure(figsize=(13, 5.2 * len(methods)))
        axes = fig.subplots(len(methods), 2, squeeze=False)
        for row, method in enumerate(methods):
            masses = _feature_columns(store, sample, method, ("h1_mass", "h2_mass"))
            masses = masses[np.isfinite(masses).all(axis=1)]
            plane, _, _ = np.histogram2d(masses[:, 0], masses[:, 1], bins=[edges, edges])
            # pcolormesh + fig.colorbar rather than mplhep.hist2dplot, which draws through pyplot's global figure
            mesh = axes[row, 0].pcolormesh(edges, edges, plane.T, cmap="viridis")  # plane[i, j]: (m_h1, m_h2 bin)
            fig.colorbar(mesh, ax=axes[row, 0], label="events")
            axes[row, 0].set_xlabel(r"$m_{h_1}$ [GeV]")
            axes[row, 0].set_ylabel(r"$m_{h_2}$ [GeV]")
            axes[row, 0].set_title(f"{sample}: {PAIRING_LABELS.get(method, method)} pairing", fontsize=12, pad=24)
            for i, label in enumerate((r"$h_1$", r"$h_2$")):
                counts, _ = np.histogram(masses[:, i], bins=edges)
                # Poisson error bars (√N) on the step histogram
                mplhep.histplot(counts, edges, ax=axes[row, 1], label=label, color=_COLOURS[i],
                                histtype="fill" if i == 0 else "step",
                                yerr=None if i == 0 else np.sqrt(counts), alpha=0.6 if i == 0 else 1.0,
                                linewidth=2)  # fmt: skip
            axes[row, 1].axvline(125.0, color="k", linestyle=":", linewidth=1)
            axes[row, 1].set_xlabel("Higgs-candidate mass [GeV]")
            axes[row, 1].set_ylabel("events / bin")
            axes[row, 1].set_title(f"{sample}: {PAIRING_LABELS.get(method, method)} ({len(masses)} events)",
                                   fontsize=12, pad=24)  # fmt: skip
            axes[row, 1].legend(fontsize=12, frameon=False)
            _experiment_label(axes[row, 1], sqrt_s_tev=float(sqrt_s) if sqrt_s is not None else None)
        fig.tight_layout()
        return save_figure(fig, out_stem)


def signal_weight(store: EventStore, kappa: float, sample: str = "signal") -> np.ndarray:
    """Per-event signal weights (N,) fb at κλ: t0 + κλ t1 + κλ² t2 (or `weight` without kappa_terms)."""
    if "kappa_terms" in store.columns(sample):
        terms = store.numpy(sample, "kappa_terms")
        return terms @ np.array([1.0, kappa, kappa**2])
    logger.warning("%s: no kappa_terms in %s; using the stored weight for every kappa", store.path, sample)
    return store.numpy(sample, "weight")


def plot_mhh_after_selection(
    store: EventStore | str | os.PathLike,
    out_stem: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    lumi_ifb: float = 300.0,
    kappa: float = 1.0,
    edges: np.ndarray = MHH_EDGES_GEV,
) -> tuple[list[Path], dict[str, float]]:
    """The note's Fig. 4: expected m_HH yields (L × Σ w) of signal (at κλ) and background after score > threshold,
    with their MC-statistical σ √(Σ w²) (error bars on the signal, a hatched band on the background).

    thresholds: per method; a method without one gets the S/√B-optimal threshold of
    `spanet2.stats.selection.best_threshold`. Returns (paths, thresholds used).
    """
    import mplhep

    from spanet2.stats.selection import best_threshold

    store = _store(store)
    methods = _methods(store, methods)
    used: dict[str, float] = {}
    fig = Figure(figsize=(8 * len(methods), 6.5))
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    w_sig = signal_weight(store, kappa)
    w_bkg = store.numpy("background", "weight")
    for ax, method in zip(axes, methods, strict=True):
        s_score = store.numpy("signal", f"{method}/score")
        b_score = store.numpy("background", f"{method}/score")
        if thresholds and method in thresholds:
            used[method] = float(thresholds[method])
        else:
            choice = best_threshold(s_score, w_sig, b_score, w_bkg, lumi_ifb=lumi_ifb)
            used[method] = float(choice.threshold) if np.isfinite(choice.threshold) else 0.5
            logger.info("%s: %s", method, choice.reason)
        s_sel, b_sel = s_score > used[method], b_score > used[method]
        s_yield, s_err = _weighted_histogram(store.numpy("signal", f"{method}/m_hh")[s_sel], w_sig[s_sel] * lumi_ifb,
                                             edges)  # fmt: skip
        b_yield, b_err = _weighted_histogram(store.numpy("background", f"{method}/m_hh")[b_sel],
                                             w_bkg[b_sel] * lumi_ifb, edges)  # fmt: skip
        mplhep.histplot(b_yield, edges, ax=ax, histtype="fill", color=_COLOURS[3], alpha=0.8, label="QCD 4b")
        positive = np.concatenate([s_yield[s_yield > 0], b_yield[b_yield > 0]])
        floor = 0.2 * float(np.min(positive, initial=1.0))  # a log axis needs > 0: the band stops there
        ax.stairs(b_yield + b_err, edges, baseline=np.clip(b_yield - b_err, floor, None), fill=True,
                  facecolor="none", edgecolor="0.25", hatch="////", linewidth=0, label="QCD 4b MC stat.")  # fmt: skip
        mplhep.histplot(s_yield, edges, yerr=s_err, ax=ax, histtype="step", color=_COLOURS[0], linewidth=2.5,
                        label=rf"HH ($\kappa_\lambda$ = {kappa:g})")  # fmt: skip
        mplhep.histplot(s_yield * 100, edges, ax=ax, histtype="step", color=_COLOURS[2], linewidth=2,
                        linestyle="--", label=r"HH $\times$ 100")  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set_xlabel(r"$m_{HH}$ [GeV]")
        ax.set_ylabel(f"expected events / bin ({lumi_ifb:g} fb$^{{-1}}$)")
        ax.set_title(f"{METHOD_LABELS.get(method, method)}: score > {used[method]:.3g}", fontsize=12, pad=22)
        ax.legend(fontsize=10)
        sqrt_s = store.attrs.get("sqrt_s_tev")
        _experiment_label(ax, sqrt_s_tev=float(sqrt_s) if sqrt_s is not None else None, lumi_ifb=lumi_ifb)
    fig.tight_layout()
    return save_figure(fig, out_stem), used


def _weighted_histogram(values: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ w per bin and its MC-statistical σ, √(Σ w²)."""
    total, _ = np.histogram(values, bins=edges, weights=weights)
    squares, _ = np.histogram(values, bins=edges, weights=weights**2)
    return total, np.sqrt(squares)


def pairing_efficiency_from_store(
    store: EventStore | str | os.PathLike, method: str, *, sample: str = "signal"
) -> dict[float, float]:
    """Event efficiency of the 2h signal events per κλ (the note's Fig. 1) for one method of the store.

    Needs the store's `targets` (true jet indices) and `kappa_input` columns.
    """
    from spanet2.training.metrics import pairing_efficiency_by_kappa

    store = _store(store)
    if "targets" not in store.columns(sample):
        raise DataError(store.path, f"{sample}/targets", "missing: build the store from files with TARGETS")
    return {float(k): float(v) for k, v in pairing_efficiency_by_kappa(
        store.numpy(sample, f"{method}/pairing"), store.numpy(sample, "targets"), store.numpy(sample, "kappa_input")
    ).items()}  # fmt: skip


def two_higgs_events_by_kappa(store: EventStore | str | os.PathLike, *, sample: str = "signal") -> dict[float, int]:
    """Number of fully matched (2h) signal events per κλ: the denominators of the pairing efficiencies."""
    store = _store(store)
    targets = store.numpy(sample, "targets")
    kappa = store.numpy(sample, "kappa_input").astype(np.float64)
    full = (targets >= 0).all(axis=1) & np.isfinite(kappa)
    values, counts = np.unique(kappa[full], return_counts=True)
    return {float(k): int(n) for k, n in zip(values, counts, strict=True)}


# Human names of the store's methods in legends (a pairing plot names the pairing; unknown names stay as they are)
METHOD_LABELS = {"min_dr_dnn": "min-ΔR + DNN", "kappa5_dnn": "κ5 SPANet + DNN",
                 "spanet2_dnn": "mixing-κλ SPANet2 + DNN", "spanet2": "mixing-κλ SPANet2", "min_dr": "min-ΔR"}
PAIRING_LABELS = {"min_dr_dnn": "min-ΔR", "min_dr": "min-ΔR", "kappa5_dnn": "κ5 SPANet", "kappa5": "κ5 SPANet",
                  "spanet2_dnn": "mixing-κλ SPANet2", "spanet2": "mixing-κλ SPANet2"}  # fmt: skip


def _experiment_label(ax, *, sqrt_s_tev: float | None, lumi_ifb: float | None = None) -> None:
    """The field's corner label: "SPANet2 Simulation" left, √s (and L) right."""
    import mplhep

    right = []
    if lumi_ifb is not None:
        right.append(f"{lumi_ifb:g} fb$^{{-1}}$")
    if sqrt_s_tev is not None:
        right.append(f"√s = {sqrt_s_tev:g} TeV")  # the glyph: mathtext's sqrt has no radical in the style's font
    mplhep.label.exp_label(exp="SPANet2", llabel="Simulation", rlabel=", ".join(right) or None, ax=ax,
                           fontsize=13)  # fmt: skip


def binomial_uncertainty(efficiency: np.ndarray, n: np.ndarray) -> np.ndarray:
    """σ of an efficiency from n events: half the 68 % Wilson interval of k = ε·n (0 where n = 0)."""
    from spanet2.uncertainty import binomial_error

    efficiency, n = np.asarray(efficiency, dtype=float), np.asarray(n, dtype=float)
    k = np.clip(np.round(efficiency * n), 0, n)
    return np.where(n > 0, np.nan_to_num(binomial_error(k, np.where(n > 0, n, 1))), 0.0)


def plot_scaling(result: Mapping, out_stem: str | os.PathLike) -> list[Path]:
    """AUC and pairing efficiency vs training events (the study's `scaling` stage): SPANet2 and the min-ΔR DNN
    with their σ as error bars; the min-ΔR pairing (no training) as a band. PNG and PDF; returns the paths."""
    import matplotlib
    import mplhep

    names = {"spanet2": "mixing-κλ SPANet2", "dnn_min_dr": "min-ΔR + DNN"}
    with matplotlib.rc_context(mplhep.style.ATLAS):
        fig = Figure(figsize=(13, 5.5))
        ax_auc, ax_pair = fig.subplots(1, 2)
        for i, (model, points) in enumerate(result["points"].items()):
            pts = [p for p in points if p.get("auc") is not None]
            if pts:
                ax_auc.errorbar([p["training_events"] for p in pts], [p["auc"] for p in pts],
                                yerr=[p.get("auc_err") or 0.0 for p in pts], fmt="os"[i % 2], linestyle="none",
                                color=_COLOURS[i], label=names.get(model, model), capsize=3)  # fmt: skip
            pts = [p for p in points if p.get("pairing") is not None]
            if pts:
                ax_pair.errorbar([p["training_events"] for p in pts], [p["pairing"] for p in pts],
                                 yerr=[p.get("pairing_err") or 0.0 for p in pts], fmt="os"[i % 2], linestyle="none",
                                 color=_COLOURS[i], label=names.get(model, model), capsize=3)  # fmt: skip
        base = result.get("min_dr_pairing") or {}
        if base.get("efficiency") is not None:
            err = base.get("err") or 0.0
            ax_pair.axhspan(base["efficiency"] - err, base["efficiency"] + err, color=_COLOURS[1], alpha=0.3,
                            label="min-ΔR (no training)")  # fmt: skip
        for ax, ylabel in ((ax_auc, "test AUC"), (ax_pair, "pairing efficiency (2h signal events)")):
            ax.set_xscale("log")
            ax.set_xlabel("training events (signal + background)")
            ax.set_ylabel(ylabel)
            ax.legend(loc="lower right", fontsize=11, frameon=False)
            _experiment_label(ax, sqrt_s_tev=None)
        fig.tight_layout()
        return save_figure(fig, out_stem)


def plot_pairing_efficiency(
    efficiencies: Mapping[str, Mapping[float, float]], out_stem: str | os.PathLike, **kwargs
) -> list[Path]:
    """`pairing_efficiency_figure(efficiencies, **kwargs)` written as PNG and PDF; returns the paths."""
    import matplotlib
    import mplhep

    with matplotlib.rc_context(mplhep.style.ATLAS):
        return save_figure(pairing_efficiency_figure(efficiencies, **kwargs), out_stem)


def pairing_efficiency_figure(
    efficiencies: Mapping[str, Mapping[float, float]],
    *,
    counts: Mapping[float, int] | Mapping[str, Mapping[float, int]] | None = None,
    labels: Mapping[str, str] | None = None,
    sqrt_s_tev: float | None = 13.0,
    title: str | None = None,
) -> Figure:
    """The note's Figs. 1 and 10: pairing efficiency vs κλ per method ({method: {κλ: eff}}), in the field's style.

    Points at the discrete κλ values with binomial error bars when `counts` (2h events per κλ, shared or per
    method) is given, not joined by lines, each method slightly offset so that the bars do not overlap; legend
    names from `labels` (default PAIRING_LABELS); methods with identical curves (the same pairing) drawn once.
    """
    import matplotlib
    import mplhep

    labels = {**PAIRING_LABELS, **(labels or {})}
    unique: dict[str, Mapping[float, float]] = {}
    for method, curve in efficiencies.items():
        if curve and not any(dict(curve) == dict(seen) for seen in unique.values()):
            unique[method] = curve
    with matplotlib.rc_context(mplhep.style.ATLAS):
        fig = Figure(figsize=(8, 6))
        ax = fig.subplots()
        markers = "osD^v<>"
        spread = 0.12 * (len(unique) - 1)
        for i, (method, curve) in enumerate(unique.items()):
            kappas = np.array(sorted(curve))
            values = np.array([curve[k] for k in kappas])
            per_method = counts.get(method) if counts and isinstance(next(iter(counts.values())), Mapping) else counts
            errors = None
            if per_method:
                errors = binomial_uncertainty(values, np.array([per_method.get(k, 0) for k in kappas]))
            offset = -spread / 2 + 0.12 * i
            ax.errorbar(kappas + offset, values, yerr=errors, fmt=markers[i % len(markers)], linestyle="none",
                        color=_COLOURS[i % len(_COLOURS)], label=labels.get(method, method), markersize=7,
                        capsize=3, elinewidth=1.5)  # fmt: skip
        ax.set_xlabel(r"$\kappa_\lambda$ (generated)")
        ax.set_ylabel("pairing efficiency (2h signal events)")
        ax.set_ylim(0, 1.15)
        if unique:
            ax.legend(loc="upper right", fontsize=12, frameon=False)
        _experiment_label(ax, sqrt_s_tev=sqrt_s_tev)
        if title:
            ax.set_title(title, fontsize=12, pad=24)
        fig.tight_layout()
        return fig


def plot_all(
    store: EventStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    lumi_ifb: float = 300.0,
) -> list[Path]:
    """Every figure of this module for a store: mass planes (signal, background), m_HH after selection and,
    when the store has true targets, pairing efficiency vs κλ. Returns all written paths."""
    store = _store(store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for sample in ("signal", "background"):
        if sample in store.samples:
            paths += plot_mass_planes(store, sample, out_dir / f"mass_plane_{sample}", methods=methods)
    if {"signal", "background"} <= set(store.samples):
        paths += plot_mhh_after_selection(store, out_dir / "mhh_selected", methods=methods, thresholds=thresholds,
                                          lumi_ifb=lumi_ifb)[0]  # fmt: skip
    if "signal" in store.samples and "targets" in store.columns("signal"):
        curves = {m: pairing_efficiency_from_store(store, m) for m in _methods(store, methods)}
        sqrt_s = store.attrs.get("sqrt_s_tev")
        paths += plot_pairing_efficiency(curves, out_dir / "pairing_efficiency_vs_kappa",
                                         counts=two_higgs_events_by_kappa(store),
                                         sqrt_s_tev=float(sqrt_s) if sqrt_s is not None else None)  # fmt: skip
    return paths
