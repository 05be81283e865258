"""The κλ scan and the luminosity scan: store → templates → grid points on Dask (resumable) → intervals → files."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.atomic import atomic_path
from spanet2.events.errors import ConfigError, DataError, InputError
from spanet2.provenance import provenance
from spanet2.stats.config import ScanConfig
from spanet2.stats.histograms import Templates, score_edges_with, select_templates
from spanet2.stats.intervals import Interval, delta_twice_nll
from spanet2.stats.likelihood import KappaLikelihood
from spanet2.stats.luminosity import (
    EQUIVALENT_QUANTITIES,
    IntervalSettings,
    equivalent_luminosities,
    intervals_at,
)
from spanet2.stats.parallel import PointLog, dask_client, point_key, read_method_histograms, run_tasks
from spanet2.stats.signal_model import SM_SIGMA_RATIO_14_OVER_13, curve_coefficients, term_scale_factors

__all__ = [
    "ScanResult",
    "evaluate_grid_chunk",
    "format_interval_table",
    "format_equivalent_table",
    "prepare_templates",
    "run_lumi",
    "run_scan",
]

logger = logging.getLogger(__name__)

GRID_CHUNK = 16  # κλ points per Dask task (one JSONL line each)


@dataclass
class ScanResult:
    """What `spanet2 scan` / `spanet2 lumi` computed; `to_dict` is the JSON written to results.json."""

    kind: str
    config: ScanConfig
    templates: dict[str, Templates]
    intervals: dict[str, dict[float, dict[str, Interval]]]
    curves: dict[str, dict[float, dict[str, list[float]]]] = field(default_factory=dict)
    equivalent: dict[str, dict[float, dict[str, Any]]] = field(default_factory=dict)
    selection: dict[str, str] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(default_factory=dict)
    computed_points: int = 0
    reused_points: int = 0
    output_dir: Path | None = None

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "config": self.config.to_dict(),
            "normalisation": self.normalisation,
            "selection": self.selection,
            "templates": {m: t.to_dict() for m, t in self.templates.items()},
            "intervals": {
                m: {str(lumi): {s: iv.to_dict() for s, iv in per.items()} for lumi, per in by_l.items()}
                for m, by_l in self.intervals.items()
            },
            "equivalent_luminosity": {
                m: {str(lumi): v for lumi, v in by_l.items()} for m, by_l in self.equivalent.items()
            },
            "curves": {m: {str(lumi): v for lumi, v in by_l.items()} for m, by_l in self.curves.items()},
            "points": {"computed": self.computed_points, "reused": self.reused_points},
        }


# ------------------------------------------------------------------------------------------ templates
def _scale_factors(config: ScanConfig, info: dict) -> tuple[np.ndarray, dict]:
    spec = config.signal
    file = config.path or "<scan config>"
    store_sqrt_s = float(info["root_attrs"].get("sqrt_s_tev", 13.0))
    if spec.normalisation == "generated":
        factor = 1.0
        if abs(store_sqrt_s - config.sqrt_s_tev) > 1e-9:  # the study's 13 → 14 TeV: rescale σ only
            factor = (
                SM_SIGMA_RATIO_14_OVER_13
                if config.sqrt_s_tev > store_sqrt_s
                else 1 / SM_SIGMA_RATIO_14_OVER_13
            )
        return np.full(3, factor), {
            "mode": "generated",
            "store_sqrt_s_tev": store_sqrt_s,
            "sqrt_s_tev": config.sqrt_s_tev,
            "factors": [factor] * 3,
        }
    if spec.generated_curve == "store":
        gen = info["signal_attrs"].get("sigma_terms_fb")
        if gen is None:
            # the embedded generator reproduces LO MadGraph σ(κλ) (PHYSICS.md §6): its curve at the store's √s
            source = f"lo_madgraph_{int(round(store_sqrt_s))}"
            logger.info("signal sample has no sigma_terms_fb attribute: generated σ(κλ) taken as %s", source)
            if round(store_sqrt_s) not in (13, 14):
                raise ConfigError(
                    file,
                    "signal.generated_curve",
                    f"the store is at {store_sqrt_s:g} TeV and records no sigma_terms_fb; give the "
                    "generator's σ(κλ) curve name or coefficients",
                )
            gen_coeffs = curve_coefficients(source)
        elif np.asarray(gen).shape != (3,):
            raise ConfigError(
                file,
                "signal.generated_curve",
                f"is 'store' but the signal attribute sigma_terms_fb is {gen!r}, not 3 numbers (fb)",
            )
        else:
            source = "store attribute sigma_terms_fb"
            gen_coeffs = curve_coefficients(np.asarray(gen, dtype=np.float64).tolist())
    else:
        source = str(spec.generated_curve)
        gen_coeffs = curve_coefficients(spec.generated_curve, sqrt_s_tev=store_sqrt_s)
    ref = curve_coefficients(spec.reference_curve, sqrt_s_tev=config.sqrt_s_tev)
    factors = term_scale_factors(gen_coeffs, ref)
    return factors, {
        "mode": "reference",
        "reference_coefficients_fb": ref.tolist(),
        "generated_coefficients_fb": gen_coeffs.tolist(),
        "generated_source": source,
        "factors": factors.tolist(),
        "sqrt_s_tev": config.sqrt_s_tev,
        "store_sqrt_s_tev": store_sqrt_s,
    }


def prepare_templates(config: ScanConfig) -> tuple[dict[str, Templates], dict[str, str], dict]:
    """Read the store once (Dask), normalise the signal, apply each method's selection.

    Returns (templates per method, selection description per method, normalisation record).
    """
    thresholds = [m.threshold for m in config.methods if m.threshold != "best"]
    hists, info = read_method_histograms(
        config.store,
        [m.name for m in config.methods],
        signal_sample=config.signal.sample,
        signal_samples=config.signal.samples,
        background=config.background,
        score_edges=score_edges_with(thresholds),
        mhh_edges=np.asarray(config.mhh_edges),
    )
    factors, norm = _scale_factors(config, info)
    templates, selection = {}, {}
    for spec in config.methods:
        try:
            tpl, _choice = select_templates(
                hists[spec.name],
                spec.threshold,
                scale_factors=factors,
                lumi_ifb=config.selection_lumi_ifb,
                min_signal=config.min_signal,
                min_background=config.min_background,
                min_mc_events=config.min_mc_events,
                min_background_mc=config.min_background_mc,
            )
        except ValueError as exc:
            raise DataError(config.store, f"{spec.name}/score", f"empty selection: {exc}") from None
        templates[spec.name] = tpl
        selection[spec.name] = tpl.selection
        empty = np.flatnonzero((tpl.background <= 0) & np.any(tpl.signal_terms != 0, axis=0))
        if empty.size:
            logger.warning(
                "%s: m_HH bins %s have signal but no selected background MC: such bins exclude "
                "strongly; consider fewer bins or more background MC",
                spec.name,
                empty.tolist(),
            )
        logger.info(
            "%s: %s; %d signal / %d background MC events selected",
            spec.name,
            tpl.selection,
            tpl.n_signal_mc,
            tpl.n_background_mc,
        )
    return templates, selection, norm


# ------------------------------------------------------------------------------------------ dask tasks
def evaluate_grid_chunk(
    shared: dict, method: str, lumi_ifb: float, kappas: list[float], keys: list[str]
) -> list[dict]:
    """One Dask task: −2 ln L and CLs at a few κλ points of one method and luminosity → JSONL records."""
    model = KappaLikelihood(shared["templates"][method], lumi_ifb, shared["likelihood"])
    kappa = np.asarray(kappas, dtype=np.float64)
    nll = model.twice_nll(kappa)
    cls = model.cls(kappa) if "cls" in shared["statistics"] else np.full(kappa.size, np.nan)
    return [
        {
            "key": key,
            "method": method,
            "lumi_ifb": lumi_ifb,
            "kappa": float(k),
            "twice_nll": float(a),
            "cls": float(c),
        }
        for key, k, a, c in zip(keys, kappa, nll, cls, strict=True)
    ]


def evaluate_lumi_point(shared: dict, method: str, lumi_ifb: float, key: str) -> list[dict]:
    """One Dask task of a luminosity scan: both intervals of one method at one luminosity."""
    settings = IntervalSettings(
        shared["grid"],
        shared["likelihood"],
        pl_threshold=shared["pl_threshold"],
        cls_level=shared["cls_level"],
        statistics=shared["statistics"],
    )
    found = intervals_at(shared["templates"][method], lumi_ifb, settings)
    return [
        {
            "key": key,
            "method": method,
            "lumi_ifb": lumi_ifb,
            "intervals": {s: iv.to_dict() for s, iv in found.items()},
        }
    ]


def _interval_from_dict(d: dict) -> Interval:
    return Interval(d["statistic"], d["lower"], d["upper"], [tuple(p) for p in d["pieces"]], tuple(d["grid"]))


def _settings_key(config: ScanConfig) -> dict:
    return {"likelihood": repr(config.likelihood), "statistics": config.statistics}


def _interval_settings(config: ScanConfig) -> IntervalSettings:
    return IntervalSettings(
        config.kappa_grid,
        config.likelihood,
        pl_threshold=config.pl_threshold,
        cls_level=config.cls_level,
        statistics=config.statistics,
    )


def _require_closed(result: ScanResult) -> None:
    """A bound the grid never reached is reported as such: exit 2 with one clear line, no invented bound."""
    for method, by_lumi in result.intervals.items():
        for lumi, per in by_lumi.items():
            for stat, iv in per.items():
                if not iv.pieces:  # a result, not an error: e.g. CLs with background-only data at high L
                    logger.warning(
                        "%s at %g fb^-1: every κλ of the grid is excluded by %s", method, lumi, stat.upper()
                    )
                    continue
                if not iv.closed:
                    side = " and ".join(s for s, v in (("lower", iv.lower), ("upper", iv.upper)) if v is None)
                    raise InputError(
                        result.config.path,
                        "kappa_grid",
                        f"{method} at {lumi:g} fb^-1 ({stat.upper()}): the allowed region reaches the "
                        f"end of the grid [{iv.grid[0]:g}, {iv.grid[1]:g}], so the {side} bound is "
                        "not found; widen kappa_grid",
                    )


# ------------------------------------------------------------------------------------------ κλ scan
def run_scan(
    config: ScanConfig,
    *,
    output: str | Path | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    workspace_dir: str | Path | None = None,
    workspace_kappas: tuple[float, ...] = (1.0,),
    plots: bool = True,
) -> ScanResult:
    """`spanet2 scan`: intervals of every method at every configured luminosity (+ equivalent luminosity).

    Grid points are Dask tasks; each finished point is appended to <output>/points.jsonl and a rerun
    computes only the missing ones. Writes results.json (+ provenance), tables.md, plots, workspaces.
    """
    out_dir = Path(output or config.output)
    log = PointLog(out_dir / "points.jsonl")
    templates, selection, norm = prepare_templates(config)
    grid = np.asarray(config.kappa_grid)
    todo: list[tuple] = []
    expected: dict[tuple[str, float], list[str]] = {}
    for method, tpl in templates.items():
        for lumi in config.luminosities:
            keys = [point_key(tpl.fingerprint(), _settings_key(config), lumi, float(k)) for k in grid]
            expected[(method, lumi)] = keys
            missing = [(float(k), key) for k, key in zip(grid, keys, strict=True) if key not in log]
            for start in range(0, len(missing), GRID_CHUNK):
                block = missing[start : start + GRID_CHUNK]
                todo.append((method, lumi, [k for k, _ in block], [key for _, key in block]))
    n_total = sum(len(v) for v in expected.values())
    n_missing = sum(len(t[2]) for t in todo)
    result = ScanResult(
        "scan",
        config,
        templates,
        {},
        selection=selection,
        normalisation=norm,
        computed_points=n_missing,
        reused_points=n_total - n_missing,
    )
    logger.info(
        "scan: %d grid points, %d already finished, %d to compute", n_total, n_total - n_missing, n_missing
    )
    shared = {"templates": templates, "likelihood": config.likelihood, "statistics": config.statistics}
    if todo:
        with dask_client(scheduler, n_workers=n_workers) as client:
            run_tasks(client, evaluate_grid_chunk, shared, todo, log.append, description="κλ grid points")
    settings = _interval_settings(config)
    for (method, lumi), keys in expected.items():
        recs = [log.records[k] for k in keys]
        nll = np.array([r["twice_nll"] for r in recs])
        cls = np.array([r["cls"] for r in recs])
        result.intervals.setdefault(method, {})[lumi] = intervals_at(
            templates[method], lumi, settings, grid_values={"twice_nll": nll, "cls": cls}
        )
        model = KappaLikelihood(templates[method], lumi, config.likelihood)
        _, kappa_min, best = delta_twice_nll(model, grid, nll)
        # curves for the plots: 10 points per grid step where a point costs nothing (closed forms)
        fine = np.linspace(grid[0], grid[-1], 10 * (grid.size - 1) + 1)
        kappa_cls = grid if config.likelihood.cls_uses_pyhf() or "cls" not in config.statistics else fine
        result.curves.setdefault(method, {})[lumi] = {
            "kappa": fine.tolist(),
            "delta_twice_nll": (model.twice_nll(fine) - best).tolist(),
            "kappa_cls": kappa_cls.tolist(),
            "cls": (cls if kappa_cls is grid else model.cls(fine)).tolist(),
            "kappa_at_minimum": kappa_min,
        }
    _require_closed(result)
    if config.equivalent_reference:
        ref = config.equivalent_reference
        for method, tpl in templates.items():
            if method == ref:
                continue
            for lumi in config.luminosities:
                result.equivalent.setdefault(method, {})[lumi] = equivalent_luminosities(
                    templates[ref], tpl, lumi, settings
                )
    _write_outputs(result, out_dir, workspace_dir, workspace_kappas, plots)
    return result


# ------------------------------------------------------------------------------------------ L scan
def run_lumi(
    config: ScanConfig,
    *,
    output: str | Path | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    plots: bool = True,
) -> ScanResult:
    """`spanet2 lumi`: intervals of every method at every luminosity of `lumi_scan` (Δκλ vs L, Fig. 14),
    and the equivalent luminosity of each method against the reference at the configured luminosities.
    """
    out_dir = Path(output or config.output)
    log = PointLog(out_dir / "points.jsonl")
    templates, selection, norm = prepare_templates(config)
    grid_key = list(config.kappa_grid)
    lumis = sorted(set(config.lumi_scan) | set(config.luminosities))
    todo, expected = [], {}
    for method, tpl in templates.items():
        for lumi in lumis:
            key = point_key(
                "lumi",
                tpl.fingerprint(),
                _settings_key(config),
                grid_key,
                config.pl_threshold,
                config.cls_level,
                lumi,
            )
            expected[(method, lumi)] = key
            if key not in log:
                todo.append((method, lumi, key))
    result = ScanResult(
        "lumi",
        config,
        templates,
        {},
        selection=selection,
        normalisation=norm,
        computed_points=len(todo),
        reused_points=len(expected) - len(todo),
    )
    shared = {
        "templates": templates,
        "likelihood": config.likelihood,
        "statistics": config.statistics,
        "grid": grid_key,
        "pl_threshold": config.pl_threshold,
        "cls_level": config.cls_level,
    }
    if todo:
        with dask_client(scheduler, n_workers=n_workers) as client:
            run_tasks(client, evaluate_lumi_point, shared, todo, log.append, description="luminosity points")
    for (method, lumi), key in expected.items():
        per = {s: _interval_from_dict(d) for s, d in log.records[key]["intervals"].items()}
        result.intervals.setdefault(method, {})[lumi] = per
    _require_closed(result)
    if config.equivalent_reference:
        settings = _interval_settings(config)
        ref = config.equivalent_reference
        for method, tpl in templates.items():
            if method != ref:
                for lumi in config.luminosities:
                    result.equivalent.setdefault(method, {})[lumi] = equivalent_luminosities(
                        templates[ref], tpl, lumi, settings
                    )
    _write_outputs(result, out_dir, None, (), plots)
    return result


# ------------------------------------------------------------------------------------------ outputs
def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def format_interval_table(result: ScanResult, *, lumis: list[float] | None = None) -> str:
    """Markdown in the note's shape: method × L × {PL, CLs} × {lower, upper, Δκλ} (Table 27)."""
    stats = [s for s in ("pl", "cls") if s in result.config.statistics]
    names = {"pl": "PL", "cls": "CLs"}
    head = ["Method", "L (fb⁻¹)"] + [f"{names[s]} {c}" for s in stats for c in ("lower", "upper", "Δκλ")]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in result.config.methods:
        by_lumi = result.intervals[spec.name]
        for lumi in lumis or sorted(by_lumi):
            cells = [spec.label, f"{lumi:g}"]
            for s in stats:
                iv = by_lumi[lumi][s]
                cells += [_fmt(iv.lower), _fmt(iv.upper), _fmt(iv.width)]
            rows.append("| " + " | ".join(cells) + " |")
    pieces = [
        f"{m} {lumi:g} fb⁻¹ {s.upper()}: " + ", ".join(f"[{_fmt(a)}, {_fmt(b)}]" for a, b in iv.pieces)
        for m, by_l in result.intervals.items()
        for lumi, per in by_l.items()
        for s, iv in per.items()
        if len(iv.pieces) > 1
    ]
    if pieces:
        rows += ["", "Allowed regions made of several pieces:", *[f"- {p}" for p in pieces]]
    excluded = [
        f"{m} {lumi:g} fb⁻¹ {s.upper()}"
        for m, by_l in result.intervals.items()
        for lumi, per in by_l.items()
        for s, iv in per.items()
        if not iv.pieces
    ]
    if excluded:
        rows += ["", "Every κλ of the grid excluded (no allowed region): " + ", ".join(excluded)]
    return "\n".join(rows)


def format_equivalent_table(result: ScanResult) -> str:
    """Markdown: equivalent luminosity of each method against the reference (Tables 17 and 28).

    A cell without an L′ reads "— (n)"; note n below the table says why there is none.
    """
    if not result.equivalent:
        return ""
    ref = result.config.method(result.config.equivalent_reference).label
    stats = [s for s in ("pl", "cls") if s in result.config.statistics]
    names = {"pl": "PL", "cls": "CLs"}
    labels = {"width": "Δκλ", "lower": "lower", "upper": "upper"}
    head = ["Method", "L (fb⁻¹) of " + ref] + [
        f"{names[s]} L′ by {labels[w]}" for s in stats for w in EQUIVALENT_QUANTITIES
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for method, by_lumi in result.equivalent.items():
        label = result.config.method(method).label
        for lumi, entry in sorted(by_lumi.items()):
            cells = [label, f"{lumi:g}"]
            for s in stats:
                for w in EQUIVALENT_QUANTITIES:
                    value = entry[s][w]
                    if value is None:
                        why = entry[s].get("why", {}).get(w, "no L′ found")
                        notes.append(f"{label} at {lumi:g} fb⁻¹, {names[s]} by {labels[w]}: {why}")
                        cells.append(f"— ({len(notes)})")
                    else:
                        cells.append(_fmt(value, 0))
            rows.append("| " + " | ".join(cells) + " |")
    if notes:
        rows += ["", "No equivalent luminosity:", *[f"{i}. {n}" for i, n in enumerate(notes, 1)]]
    return "\n".join(rows)


def _write_outputs(
    result: ScanResult,
    out_dir: Path,
    workspace_dir: str | Path | None,
    workspace_kappas: tuple[float, ...],
    plots: bool,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    result.output_dir = out_dir
    record = result.to_dict()
    record["provenance"] = provenance(config_path=result.config.path, seed=result.config.seed)
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=float) + "\n")
    tables = format_interval_table(result)
    eq = format_equivalent_table(result)
    with atomic_path(out_dir / "tables.md") as tmp:
        tmp.write_text(tables + ("\n\n" + eq if eq else "") + "\n")
    with atomic_path(out_dir / "provenance.json") as tmp:
        tmp.write_text(json.dumps(record["provenance"], indent=2, sort_keys=True, default=str) + "\n")
    if workspace_dir is not None:
        ws_dir = Path(workspace_dir)
        ws_dir.mkdir(parents=True, exist_ok=True)
        for method, tpl in result.templates.items():
            for lumi in result.config.luminosities:
                model = KappaLikelihood(tpl, lumi, result.config.likelihood)
                for kappa in workspace_kappas:
                    with atomic_path(ws_dir / f"{method}_L{lumi:g}_k{kappa:g}.json") as tmp:
                        tmp.write_text(json.dumps(model.workspace(kappa), indent=1) + "\n")
    if plots:
        from spanet2.stats import plots as stats_plots

        if result.kind == "scan":
            stats_plots.plot_scan_curves(result, out_dir)
        else:
            stats_plots.plot_width_vs_lumi(result, out_dir)
