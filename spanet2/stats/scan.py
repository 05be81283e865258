"""The κλ scan and the luminosity scan: client → store chunks on the workers → templates → grid points,
refinement and equivalent-luminosity solves as Dask tasks (resumable) → intervals → files."""

from __future__ import annotations

import json
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.atomic import atomic_path
from spanet2.errors import ConfigError, DataError, InputError
from spanet2.provenance import provenance
from spanet2.stats.config import ScanConfig
from spanet2.stats.histograms import Templates, score_edges_with, select_templates
from spanet2.stats.intervals import Interval, delta_twice_nll
from spanet2.stats.likelihood import KappaLikelihood
from spanet2.stats.luminosity import (
    EQUIVALENT_QUANTITIES,
    IntervalSettings,
    equivalent_entry,
    intervals_at,
    solve_equivalent,
    target_reason,
)
from spanet2.stats.parallel import (
    HistogramRequest,
    PointLog,
    TaskRunner,
    dask_client,
    point_key,
    read_histograms,
)
from spanet2.stats.signal_model import SM_SIGMA_RATIO_14_OVER_13, curve_coefficients, term_scale_factors
from spanet2.uncertainty import fmt_pm

__all__ = [
    "ScanResult",
    "equivalent_task",
    "evaluate_grid_chunk",
    "evaluate_lumi_point",
    "finish_point",
    "format_equivalent_table",
    "format_interval_table",
    "prepare_templates",
    "prepare_templates_batch",
    "run_lumi",
    "run_scan",
    "run_scans",
    "write_patchsets",
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
    uncertainties: dict[str, Any] = field(default_factory=dict)

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
            "uncertainties": _jsonable_uncertainties(self.uncertainties),
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
            # the embedded generator reproduces LO MadGraph σ(κλ) (docs/physics.md §6): its curve at the store's √s
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


def _histogram_request(config: ScanConfig) -> HistogramRequest:
    thresholds = [m.threshold for m in config.methods if m.threshold != "best"]
    return HistogramRequest(
        config.store,
        tuple(m.name for m in config.methods),
        config.signal.sample if not config.signal.samples else None,
        tuple(config.signal.samples),
        tuple(config.background),
        tuple(score_edges_with(thresholds).tolist()),
        tuple(float(x) for x in config.mhh_edges),
    )


def _select(config: ScanConfig, hists: dict, info: dict) -> tuple[dict[str, Templates], dict[str, str], dict]:
    """Normalise the signal and apply each method's selection (driver: small histograms only)."""
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
    norm["readers"] = info.get("readers", {})
    return templates, selection, norm


def prepare_templates_batch(
    configs: list[ScanConfig], runner: TaskRunner
) -> list[tuple[dict[str, Templates], dict[str, str], dict]]:
    """One pass over the stores' chunks (on the runner's workers) for every config, then each selection."""
    read = read_histograms([_histogram_request(c) for c in configs], runner)
    return [_select(config, hists, info) for config, (hists, info) in zip(configs, read, strict=True)]


def prepare_templates(
    config: ScanConfig, client: Any = None
) -> tuple[dict[str, Templates], dict[str, str], dict]:
    """Read the store (its chunks on `client`'s workers; here without one), normalise the signal, apply
    each method's selection. Returns (templates per method, selection description per method,
    normalisation record, which also names the processes that read the chunks under "readers")."""
    return prepare_templates_batch([config], TaskRunner(client))[0]


# ------------------------------------------------------------------------------------------ bootstrap
REPLICA = "@bootstrap"  # replica r of method m is the method "m@bootstrap<r>" until _fold_replicas


def _with_replicas(config: ScanConfig, templates: dict[str, Templates]) -> dict[str, Templates]:
    """The templates plus `config.bootstrap` bootstrap replicas of each (Templates.replica; seeded by the
    config's seed, the method and the replica): they are scanned, refined and solved like the methods themselves, as tasks."""
    if config.bootstrap < 2:
        return templates
    out = dict(templates)
    for method, tpl in templates.items():
        key = zlib.crc32(method.encode())
        for r in range(config.bootstrap):
            name = f"{method}{REPLICA}{r}"
            out[name] = tpl.replica(np.random.default_rng([config.seed, key, r]), name)
    return out


def _replica_spread(values: list[float | None]) -> tuple[float | None, int]:
    """σ of a quantity over the replicas that have it: half the central 68 % range (robust to the long tails
    of L′ when a replica's interval barely closes), and how many replicas had it."""
    finite = np.array([float(v) for v in values if v is not None and np.isfinite(v)])
    if finite.size < 2:
        return None, int(finite.size)
    lo, hi = np.percentile(finite, [15.865, 84.135])
    return float((hi - lo) / 2), int(finite.size)


def _fold_replicas(result: ScanResult) -> None:
    """Replace the replicas by the σ (half the central 68 % range over replicas) of each bound, Δκλ and L′ of
    their method."""
    n = result.config.bootstrap
    replicas = [m for m in result.templates if REPLICA in m]
    if not replicas:
        return
    intervals: dict[str, dict] = {}
    equivalent: dict[str, dict] = {}
    for method in [m for m in result.templates if REPLICA not in m]:
        names = [f"{method}{REPLICA}{r}" for r in range(n)]
        for lumi, per in result.intervals[method].items():
            for stat in per:
                ivs = [result.intervals[nm][lumi][stat] for nm in names]
                entry: dict[str, Any] = {}
                for what in ("lower", "upper", "width"):
                    entry[what], entry[f"{what}_replicas"] = _replica_spread([getattr(iv, what) for iv in ivs])
                intervals.setdefault(method, {}).setdefault(lumi, {})[stat] = entry
        for lumi, by_stat in result.equivalent.get(method, {}).items():
            for stat in by_stat:
                entry = {}
                for what in EQUIVALENT_QUANTITIES:
                    values = [result.equivalent[nm][lumi][stat].get(what) for nm in names]
                    entry[what], entry[f"{what}_replicas"] = _replica_spread(values)
                equivalent.setdefault(method, {}).setdefault(lumi, {})[stat] = entry
    for name in replicas:
        for table in (result.templates, result.intervals, result.curves, result.equivalent):
            table.pop(name, None)
    result.uncertainties = {
        "replicas": n,
        "how": "half the central 68 % range over Bayesian-bootstrap replicas of the selected templates (per-bin "
        "Gamma(n)/n factors of the n MC events; selection fixed)",
        "intervals": intervals,
        "equivalent_luminosity": equivalent,
    }


def _jsonable_uncertainties(unc: dict) -> dict:
    if not unc:
        return {}
    return {**unc, **{key: {m: {str(lumi): v for lumi, v in by_l.items()} for m, by_l in unc[key].items()}
                      for key in ("intervals", "equivalent_luminosity")}}  # fmt: skip


# ------------------------------------------------------------------------------------------ dask tasks
def _shared(config: ScanConfig, templates: dict[str, Templates]) -> dict:
    """What every task of one config needs (small: templates and settings); scattered once."""
    return {
        "templates": templates,
        "likelihood": config.likelihood,
        "statistics": config.statistics,
        "grid": list(config.kappa_grid),
        "pl_threshold": config.pl_threshold,
        "cls_level": config.cls_level,
    }


def _settings_from(shared: dict, statistics: tuple[str, ...] | None = None) -> IntervalSettings:
    return IntervalSettings(
        shared["grid"],
        shared["likelihood"],
        pl_threshold=shared["pl_threshold"],
        cls_level=shared["cls_level"],
        statistics=statistics or shared["statistics"],
    )


def evaluate_grid_chunk(
    shared: dict, method: str, lumi_ifb: float, kappas: list[float], keys: list[str]
) -> list[dict]:
    """One Dask task: −2 ln L and CLs at a few κλ points of one method and luminosity → JSONL records."""
    model = KappaLikelihood(shared["templates"][method], lumi_ifb, shared["likelihood"])
    kappa = np.asarray(kappas, dtype=np.float64)
    nll = model.twice_nll(kappa) if "pl" in shared["statistics"] else np.full(kappa.size, np.nan)
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


def finish_point(shared: dict, method: str, lumi_ifb: float, nll: list[float], cls: list[float]) -> dict:
    """One Dask task: from the grid values of one method and luminosity, the intervals (every crossing
    refined by root finding) and the curves for the plots (10 points per grid step where points are closed
    forms; the grid itself where each point is a pyhf fit)."""
    settings = _settings_from(shared)
    grid = settings.grid
    nll_a, cls_a = np.asarray(nll), np.asarray(cls)
    found = intervals_at(
        shared["templates"][method], lumi_ifb, settings, grid_values={"twice_nll": nll_a, "cls": cls_a}
    )
    intervals = {s: iv.to_dict() for s, iv in found.items()}
    if REPLICA in method:  # a bootstrap replica contributes its bounds only, no curves to plot
        return {"intervals": intervals, "curves": {}}
    model = KappaLikelihood(shared["templates"][method], lumi_ifb, shared["likelihood"])
    fine = np.linspace(grid[0], grid[-1], 10 * (grid.size - 1) + 1)
    curves: dict[str, Any] = {}
    if "pl" in settings.statistics:
        _, kappa_min, best = delta_twice_nll(model, grid, nll_a)
        kappa_pl = grid if model.uses_pyhf("pl") else fine
        curves.update(
            kappa=kappa_pl.tolist(),
            delta_twice_nll=((nll_a if kappa_pl is grid else model.twice_nll(fine)) - best).tolist(),
            kappa_at_minimum=kappa_min,
        )
    if "cls" in settings.statistics:
        kappa_cls = grid if model.uses_pyhf("cls") else fine
        curves.update(
            kappa_cls=kappa_cls.tolist(),
            cls=(cls_a if kappa_cls is grid else model.cls(fine)).tolist(),
        )
    return {"intervals": intervals, "curves": curves}


def evaluate_lumi_point(shared: dict, method: str, lumi_ifb: float, key: str) -> list[dict]:
    """One Dask task of a luminosity scan: both intervals of one method at one luminosity."""
    found = intervals_at(shared["templates"][method], lumi_ifb, _settings_from(shared))
    return [
        {
            "key": key,
            "method": method,
            "lumi_ifb": lumi_ifb,
            "intervals": {s: iv.to_dict() for s, iv in found.items()},
        }
    ]


def equivalent_task(
    shared: dict, method: str, lumi_ifb: float, stat: str, what: str, target: float | None, why: str | None
) -> tuple[float | None, str | None]:
    """One Dask task: one equivalent-luminosity solve (method × L × statistic × width/lower/upper)."""
    return solve_equivalent(
        shared["templates"][method], _settings_from(shared, (stat,)), lumi_ifb, stat, what, target, why
    )


def _interval_from_dict(d: dict) -> Interval:
    return Interval(d["statistic"], d["lower"], d["upper"], [tuple(p) for p in d["pieces"]], tuple(d["grid"]))


def _settings_key(config: ScanConfig) -> dict:
    return {"likelihood": repr(config.likelihood), "statistics": config.statistics}


def _require_closed(result: ScanResult) -> None:
    """A bound the grid never reached is reported as such: exit 2 with one clear line, no invented bound."""
    for method, by_lumi in result.intervals.items():
        if REPLICA in method:  # an open replica only widens its method's σ (counted in *_replicas)
            continue
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


# ------------------------------------------------------------------------------------------ batch
@dataclass
class _Job:
    """One config of a batch on the shared cluster: its result, point log and scattered inputs."""

    config: ScanConfig
    out_dir: Path
    log: PointLog
    result: ScanResult
    shared: Any = None


def _check_outputs(configs: list[ScanConfig], outputs: list[Path]) -> None:
    seen: dict[Path, str | None] = {}
    for config, out in zip(configs, outputs, strict=True):
        key = out.resolve()
        if key in seen:
            raise InputError(
                config.path,
                "output",
                f"{out} is also the output of {seen[key] or 'another config'}; give each config its own output",
            )
        seen[key] = config.path


def run_scans(
    configs: list[ScanConfig],
    *,
    kind: str = "scan",
    outputs: list[str | Path | None] | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    tls_dir: str | Path | None = None,
    workspace_dir: str | Path | None = None,
    workspace_kappas: tuple[float, ...] = (1.0,),
    patchset_dir: str | Path | None = None,
    hepdata: str | None = None,
    plots: bool = True,
) -> list[ScanResult]:
    """`spanet2 scan` / `spanet2 lumi` for many configs on one cluster with one pass over the store(s).

    The client is opened first; the stores' chunks are histogrammed on the workers for every method of
    every config; then grid points (resumable: <output>/points.jsonl), crossing refinement + curves, and
    every equivalent-luminosity solve run as tasks; the driver plans and collects. Each config writes its
    own results.json (+ provenance), tables.md, plots and, on request, workspaces and pyhf PatchSets
    (one folder per config under patchset_dir when there are several).
    """
    if patchset_dir is not None and (hepdata is None or not re.fullmatch(r"ins[0-9]{7}", hepdata)):
        raise InputError(
            "--hepdata-record",
            hepdata,
            "a PatchSet needs the INSPIRE id of its HEPData record ('ins' and 7 digits): pyhf's schema "
            "requires metadata.references",
        )
    outs = [Path(o or c.output) for o, c in zip(outputs or [None] * len(configs), configs, strict=True)]
    _check_outputs(configs, outs)
    with dask_client(scheduler, n_workers=n_workers, tls_dir=tls_dir) as client:
        runner = TaskRunner(client)
        prepared = prepare_templates_batch(configs, runner)
        jobs = []
        for config, out, (templates, selection, norm) in zip(configs, outs, prepared, strict=True):
            templates = _with_replicas(config, templates)
            result = ScanResult(kind, config, templates, {}, selection=selection, normalisation=norm)
            job = _Job(config, out, PointLog(out / "points.jsonl"), result)
            job.shared = runner.share(_shared(config, templates))
            jobs.append(job)
        if kind == "scan":
            _scan_phases(jobs, runner)
        else:
            _lumi_phases(jobs, runner)
        for job in jobs:
            _require_closed(job.result)
        _equivalent_phase(jobs, runner)
    for job in jobs:
        _fold_replicas(job.result)
    for i, job in enumerate(jobs):
        patch_dir = None
        if patchset_dir is not None:
            patch_dir = Path(patchset_dir) / (f"{i}_{job.out_dir.name}" if len(jobs) > 1 else "")
        _write_outputs(job.result, job.out_dir, workspace_dir, workspace_kappas, plots, patch_dir, hepdata)
    return [job.result for job in jobs]


def _scan_phases(jobs: list[_Job], runner: TaskRunner) -> None:
    calls, owners = [], []
    expected: list[dict[tuple[str, float], list[str]]] = []
    for j, job in enumerate(jobs):
        config, grid = job.config, np.asarray(job.config.kappa_grid)
        exp: dict[tuple[str, float], list[str]] = {}
        for method, tpl in job.result.templates.items():
            for lumi in config.luminosities:
                keys = [point_key(tpl.fingerprint(), _settings_key(config), lumi, float(k)) for k in grid]
                exp[(method, lumi)] = keys
                missing = [(float(k), key) for k, key in zip(grid, keys, strict=True) if key not in job.log]
                for start in range(0, len(missing), GRID_CHUNK):
                    block = missing[start : start + GRID_CHUNK]
                    calls.append((job.shared, method, lumi, [k for k, _ in block], [key for _, key in block]))
                    owners.append(j)
        expected.append(exp)
        n_total = sum(len(v) for v in exp.values())
        n_missing = sum(len(c[3]) for c, o in zip(calls, owners, strict=True) if o == j)
        job.result.computed_points, job.result.reused_points = n_missing, n_total - n_missing
        logger.info(
            "%s: %d grid points, %d already finished, %d to compute",
            config.path or job.out_dir,
            n_total,
            n_total - n_missing,
            n_missing,
        )
    runner.map(
        evaluate_grid_chunk,
        calls,
        on_done=lambda i, records: jobs[owners[i]].log.append(records),
        description="κλ grid points",
    )
    finish_calls, finish_keys = [], []
    for j, job in enumerate(jobs):
        for (method, lumi), keys in expected[j].items():
            recs = [job.log.records[k] for k in keys]
            finish_calls.append(
                (job.shared, method, lumi, [r["twice_nll"] for r in recs], [r["cls"] for r in recs])
            )
            finish_keys.append((j, method, lumi))
    finished = runner.map(finish_point, finish_calls, description="intervals and curves")
    for (j, method, lumi), done in zip(finish_keys, finished, strict=True):
        res = jobs[j].result
        res.intervals.setdefault(method, {})[lumi] = {
            s: _interval_from_dict(d) for s, d in done["intervals"].items()
        }
        res.curves.setdefault(method, {})[lumi] = done["curves"]


def _lumi_phases(jobs: list[_Job], runner: TaskRunner) -> None:
    calls, owners, expected = [], [], []
    for j, job in enumerate(jobs):
        config = job.config
        lumis = sorted(set(config.lumi_scan) | set(config.luminosities))
        exp = {}
        for method, tpl in job.result.templates.items():
            for lumi in lumis:
                key = point_key(
                    "lumi",
                    tpl.fingerprint(),
                    _settings_key(config),
                    list(config.kappa_grid),
                    config.pl_threshold,
                    config.cls_level,
                    lumi,
                )
                exp[(method, lumi)] = key
                if key not in job.log:
                    calls.append((job.shared, method, lumi, key))
                    owners.append(j)
        expected.append(exp)
        n_missing = owners.count(j)
        job.result.computed_points, job.result.reused_points = n_missing, len(exp) - n_missing
    runner.map(
        evaluate_lumi_point,
        calls,
        on_done=lambda i, records: jobs[owners[i]].log.append(records),
        description="luminosity points",
    )
    for j, job in enumerate(jobs):
        for (method, lumi), key in expected[j].items():
            per = {s: _interval_from_dict(d) for s, d in job.log.records[key]["intervals"].items()}
            job.result.intervals.setdefault(method, {})[lumi] = per


def _equivalent_phase(jobs: list[_Job], runner: TaskRunner) -> None:
    """Every equivalent-luminosity solve (method × L × statistic × width/lower/upper) as one task."""
    calls, where = [], []
    for j, job in enumerate(jobs):
        ref = job.config.equivalent_reference
        if not ref:
            continue
        for method in job.result.templates:
            base, sep, replica = method.partition(REPLICA)
            if base == ref:
                continue
            ref_name = ref + sep + replica  # a replica is compared with the same replica of the reference
            for lumi in job.config.luminosities:
                for stat, interval in job.result.intervals[ref_name][lumi].items():
                    for what in EQUIVALENT_QUANTITIES:
                        target = getattr(interval, what)
                        calls.append(
                            (
                                job.shared,
                                method,
                                lumi,
                                stat,
                                what,
                                target,
                                target_reason(interval, what, lumi),
                            )
                        )
                        where.append((j, method, ref_name, lumi, stat, what))
    solved = runner.map(equivalent_task, calls, description="equivalent luminosities")
    grouped: dict[tuple, dict[str, tuple]] = {}
    for (j, method, ref_name, lumi, stat, what), value in zip(where, solved, strict=True):
        grouped.setdefault((j, method, ref_name, lumi, stat), {})[what] = tuple(value)
    for (j, method, ref_name, lumi, stat), by_what in grouped.items():
        res = jobs[j].result
        ref_interval = res.intervals[ref_name][lumi][stat]
        res.equivalent.setdefault(method, {}).setdefault(lumi, {})[stat] = equivalent_entry(
            ref_interval, by_what
        )


# ------------------------------------------------------------------------------------------ κλ scan
def run_scan(
    config: ScanConfig,
    *,
    output: str | Path | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    tls_dir: str | Path | None = None,
    workspace_dir: str | Path | None = None,
    workspace_kappas: tuple[float, ...] = (1.0,),
    patchset_dir: str | Path | None = None,
    hepdata: str | None = None,
    plots: bool = True,
) -> ScanResult:
    """`spanet2 scan` for one config: intervals of every method at every configured luminosity
    (+ equivalent luminosity); see `run_scans`. Writes results.json (+ provenance), tables.md, plots,
    workspaces, PatchSets."""
    return run_scans(
        [config],
        kind="scan",
        outputs=[output],
        scheduler=scheduler,
        n_workers=n_workers,
        tls_dir=tls_dir,
        workspace_dir=workspace_dir,
        workspace_kappas=workspace_kappas,
        patchset_dir=patchset_dir,
        hepdata=hepdata,
        plots=plots,
    )[0]


# ------------------------------------------------------------------------------------------ L scan
def run_lumi(
    config: ScanConfig,
    *,
    output: str | Path | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    tls_dir: str | Path | None = None,
    plots: bool = True,
) -> ScanResult:
    """`spanet2 lumi` for one config: intervals of every method at every luminosity of `lumi_scan` (Δκλ vs
    L, Fig. 14), and the equivalent luminosity of each method against the reference at the configured
    luminosities; see `run_scans`."""
    return run_scans(
        [config],
        kind="lumi",
        outputs=[output],
        scheduler=scheduler,
        n_workers=n_workers,
        tls_dir=tls_dir,
        plots=plots,
    )[0]


# ------------------------------------------------------------------------------------------ outputs
def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _fmt_pm(x: float | None, err: float | None, digits: int = 2) -> str:
    """x ± σ (bootstrap) when the scan ran replicas, else x."""
    return _fmt(x, digits) if x is None or err is None else fmt_pm(x, err, digits)


def format_interval_table(result: ScanResult, *, lumis: list[float] | None = None) -> str:
    """Markdown in the note's shape: method × L × {PL, CLs} × {lower, upper, Δκλ} (Table 27); ± σ from the
    bootstrap replicas when the config asks for them."""
    stats = [s for s in ("pl", "cls") if s in result.config.statistics]
    names = {"pl": "PL", "cls": "CLs"}
    head = ["Method", "L (fb⁻¹)"] + [f"{names[s]} {c}" for s in stats for c in ("lower", "upper", "Δκλ")]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in result.config.methods:
        by_lumi = result.intervals[spec.name]
        for lumi in lumis or sorted(by_lumi):
            cells = [spec.label, f"{lumi:g}"]
            unc = result.uncertainties.get("intervals", {}).get(spec.name, {}).get(lumi, {})
            for s in stats:
                iv, err = by_lumi[lumi][s], unc.get(s, {})
                cells += [_fmt_pm(iv.lower, err.get("lower")), _fmt_pm(iv.upper, err.get("upper")),
                          _fmt_pm(iv.width, err.get("width"))]
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
                        err = (result.uncertainties.get("equivalent_luminosity", {}).get(method, {})
                               .get(lumi, {}).get(s, {}).get(w))  # fmt: skip
                        cells.append(_fmt_pm(value, err, 0))
            rows.append("| " + " | ".join(cells) + " |")
    if notes:
        rows += ["", "No equivalent luminosity:", *[f"{i}. {n}" for i, n in enumerate(notes, 1)]]
    return "\n".join(rows)


def write_patchsets(result: ScanResult, directory: str | Path, *, hepdata: str | None = None) -> list[Path]:
    """Per method and luminosity, <directory>/<method>_L<lumi>/{BkgOnly.json, patchset.json}: the pyhf
    background-only workspace and a PatchSet with one patch per κλ of the grid (HEPData's convention;
    hepdata: the record's INSPIRE id, see `KappaLikelihood.patchset`). Returns the folders written."""
    written = []
    for method, tpl in result.templates.items():
        for lumi in result.config.luminosities:
            model = KappaLikelihood(tpl, lumi, result.config.likelihood)
            folder = Path(directory) / f"{method}_L{lumi:g}"
            folder.mkdir(parents=True, exist_ok=True)
            patchset = model.patchset(
                np.asarray(result.config.kappa_grid),
                name=f"{method}_L{lumi:g}",
                description=f"{result.config.method(method).label}, {lumi:g} fb^-1, sqrt(s) = "
                f"{result.config.sqrt_s_tev:g} TeV, Asimov data: {result.config.likelihood.asimov}",
                hepdata=hepdata,
            )
            for name, spec in (
                ("BkgOnly.json", model.background_only_workspace()),
                ("patchset.json", patchset),
            ):
                with atomic_path(folder / name) as tmp:
                    tmp.write_text(json.dumps(spec, indent=1) + "\n")
            written.append(folder)
    return written


def _write_outputs(
    result: ScanResult,
    out_dir: Path,
    workspace_dir: str | Path | None,
    workspace_kappas: tuple[float, ...],
    plots: bool,
    patchset_dir: Path | None = None,
    hepdata: str | None = None,
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
    if patchset_dir is not None:
        write_patchsets(result, patchset_dir, hepdata=hepdata)
    if plots:
        from spanet2.stats import plots as stats_plots

        if result.kind == "scan":
            stats_plots.plot_scan_curves(result, out_dir)
        else:
            stats_plots.plot_width_vs_lumi(result, out_dir)
