"""Scan configuration (YAML): store, methods, κλ grid, binning, luminosities, normalisation — strictly validated."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spanet2.errors import ConfigError
from spanet2.stats.likelihood import ASIMOV_CONVENTIONS, LikelihoodSettings
from spanet2.stats.signal_model import known_curves

__all__ = ["MethodSpec", "ScanConfig", "SignalSpec", "load_scan_config", "parse_scan_config"]

logger = logging.getLogger(__name__)

_TOP_KEYS = {
    "store",
    "output",
    "signal",
    "background",
    "sqrt_s_tev",
    "methods",
    "binning",
    "kappa_grid",
    "luminosities",
    "lumi_scan",
    "asimov",
    "pl_threshold",
    "cls_level",
    "statistics",
    "uncertainties",
    "selection",
    "equivalent_luminosity",
    "cls_engine",
    "seed",
    "bootstrap",
}


@dataclass(frozen=True)
class MethodSpec:
    """One selection method in the store: group name, label for tables, threshold (number or "best")."""

    name: str
    label: str
    threshold: float | str


@dataclass(frozen=True)
class SignalSpec:
    """Where the signal comes from and how it is normalised.

    sample: a store sample with per-event kappa_terms; or samples: ((name, κλ), ...) discrete samples
    morphed into terms. normalisation: "generated" (as the store's weights say) or "reference" (each term
    scaled so the total follows reference_curve; generated_curve gives the store's own σ(κλ): a curve name,
    three coefficients, or "store" = the signal sample's attribute `sigma_terms_fb`).
    """

    sample: str | None = "signal"
    samples: tuple[tuple[str, float], ...] = ()
    normalisation: str = "generated"
    reference_curve: str | tuple[float, float, float] = "lhchwg_nnlo_13"
    generated_curve: str | tuple[float, float, float] = "store"


@dataclass(frozen=True)
class ScanConfig:
    """A validated scan configuration. Paths are absolute (store resolved against the config's folder)."""

    path: str | None
    store: str
    output: str
    signal: SignalSpec
    background: tuple[str, ...]
    sqrt_s_tev: float
    methods: tuple[MethodSpec, ...]
    mhh_edges: tuple[float, ...]
    kappa_grid: tuple[float, ...]
    luminosities: tuple[float, ...]
    lumi_scan: tuple[float, ...]
    pl_threshold: float
    cls_level: float
    statistics: tuple[str, ...]
    likelihood: LikelihoodSettings
    selection_lumi_ifb: float
    min_signal: float
    min_background: float
    min_mc_events: int
    equivalent_reference: str | None
    min_background_mc: int = 1
    seed: int = 0
    bootstrap: int = 0  # bootstrap replicas of the selected templates: ± on every bound and L′ (0 = none)
    raw: dict = field(default_factory=dict, compare=False)

    def method(self, name: str) -> MethodSpec:
        return next(m for m in self.methods if m.name == name)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("raw")
        return out


def load_scan_config(path: str | os.PathLike, **overrides: Any) -> ScanConfig:
    """Read and validate a scan YAML; `overrides` replace top-level keys (e.g. output from the CLI)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the scan config: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, None, "expected a mapping of scan settings at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse_scan_config(raw, path=path)


def _number(raw: Any, file: Any, key: str, *, positive: bool = False, allow_zero: bool = True) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ConfigError(file, key, f"expected a number, got {raw!r}")
    if positive and (raw < 0 or (raw == 0 and not allow_zero)):
        raise ConfigError(
            file, key, f"expected a {'non-negative' if allow_zero else 'positive'} number, got {raw!r}"
        )
    return float(raw)


def _grid(raw: Any, file: Any, key: str, *, positive: bool = False) -> tuple[float, ...]:
    """A list of numbers, or {start, stop, step} (inclusive) or {start, stop, num[, spacing: log|linear]}."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = [raw]
    if isinstance(raw, list):
        values = [_number(v, file, f"{key}[{i}]") for i, v in enumerate(raw)]
    elif isinstance(raw, dict):
        unknown = set(raw) - {"start", "stop", "step", "num", "spacing"}
        if unknown:
            raise ConfigError(
                file, f"{key}.{sorted(unknown)[0]}", "unknown key; expected start, stop, step|num, spacing"
            )
        for k in ("start", "stop"):
            if k not in raw:
                raise ConfigError(file, f"{key}.{k}", "missing")
        start, stop = _number(raw["start"], file, f"{key}.start"), _number(raw["stop"], file, f"{key}.stop")
        if stop <= start:
            raise ConfigError(file, f"{key}.stop", f"must be greater than start ({start}), got {stop}")
        if "step" in raw:
            step = _number(raw["step"], file, f"{key}.step")
            if step <= 0:
                raise ConfigError(file, f"{key}.step", f"must be positive, got {step}")
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            if n > 100000:
                raise ConfigError(file, f"{key}.step", f"gives {n} points; at most 100000")
            values = (start + step * np.arange(n)).tolist()
        elif "num" in raw:
            num = raw["num"]
            if not isinstance(num, int) or isinstance(num, bool) or num < 2:
                raise ConfigError(file, f"{key}.num", f"expected an integer >= 2, got {num!r}")
            spacing = raw.get("spacing", "linear")
            if spacing not in ("linear", "log"):
                raise ConfigError(file, f"{key}.spacing", f"expected 'linear' or 'log', got {spacing!r}")
            if spacing == "log":
                if start <= 0:
                    raise ConfigError(file, f"{key}.start", "log spacing needs a positive start")
                values = np.geomspace(start, stop, num).tolist()
            else:
                values = np.linspace(start, stop, num).tolist()
        else:
            raise ConfigError(file, key, "a range needs step or num")
    else:
        raise ConfigError(file, key, f"expected a list of numbers or {{start, stop, step|num}}, got {raw!r}")
    if not values:
        raise ConfigError(file, key, "is empty")
    if positive:
        for i, v in enumerate(values):
            if v <= 0:
                raise ConfigError(file, f"{key}[{i}]", f"luminosity must be positive (fb^-1), got {v:g}")
    if len(set(values)) != len(values):
        raise ConfigError(file, key, "contains repeated values")
    return tuple(sorted(float(v) for v in values))


def _curve(raw: Any, file: Any, key: str, *, allow_store: bool) -> str | tuple[float, float, float]:
    if isinstance(raw, str):
        if raw == "store" and allow_store:
            return raw
        if raw not in known_curves():
            extra = " or 'store'" if allow_store else ""
            raise ConfigError(
                file,
                key,
                f"unknown curve {raw!r}; expected one of {known_curves()}{extra} "
                "or three coefficients [a0, a1, a2] in fb",
            )
        return raw
    if isinstance(raw, list) and len(raw) == 3:
        return tuple(_number(v, file, f"{key}[{i}]") for i, v in enumerate(raw))  # type: ignore[return-value]
    raise ConfigError(file, key, f"expected a curve name or [a0, a1, a2] in fb, got {raw!r}")


def _signal(raw: Any, file: Any) -> SignalSpec:
    if raw is None:
        return SignalSpec()
    if not isinstance(raw, dict):
        raise ConfigError(file, "signal", "expected a mapping (sample or samples, normalisation, ...)")
    unknown = set(raw) - {"sample", "samples", "normalisation", "reference_curve", "generated_curve"}
    if unknown:
        raise ConfigError(file, f"signal.{sorted(unknown)[0]}", "unknown key")
    samples: tuple[tuple[str, float], ...] = ()
    sample = raw.get("sample", None if "samples" in raw else "signal")
    if "samples" in raw:
        if "sample" in raw:
            raise ConfigError(
                file, "signal", "give either sample (with kappa_terms) or samples (morphing), not both"
            )
        items = raw["samples"]
        if not isinstance(items, list) or len(items) < 3:
            raise ConfigError(
                file, "signal.samples", "expected a list of >= 3 {name, kappa} entries (morphing)"
            )
        parsed = []
        for i, item in enumerate(items):
            if (
                not isinstance(item, dict)
                or set(item) != {"name", "kappa"}
                or not isinstance(item["name"], str)
            ):
                raise ConfigError(file, f"signal.samples[{i}]", "expected {name: SAMPLE, kappa: NUMBER}")
            parsed.append((item["name"], _number(item["kappa"], file, f"signal.samples[{i}].kappa")))
        if len({k for _, k in parsed}) < 3:
            raise ConfigError(file, "signal.samples", "morphing needs at least 3 distinct kappa values")
        samples = tuple(parsed)
    elif not isinstance(sample, str):
        raise ConfigError(file, "signal.sample", f"expected a sample name, got {sample!r}")
    normalisation = raw.get("normalisation", "generated")
    if normalisation not in ("generated", "reference"):
        raise ConfigError(
            file, "signal.normalisation", f"expected 'generated' or 'reference', got {normalisation!r}"
        )
    return SignalSpec(
        sample=sample,
        samples=samples,
        normalisation=normalisation,
        reference_curve=_curve(
            raw.get("reference_curve", "lhchwg_nnlo_13"), file, "signal.reference_curve", allow_store=False
        ),
        generated_curve=_curve(
            raw.get("generated_curve", "store"), file, "signal.generated_curve", allow_store=True
        ),
    )


def _methods(raw: Any, file: Any) -> tuple[MethodSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(file, "methods", "expected a non-empty list of {name, threshold[, label]}")
    out = []
    for i, item in enumerate(raw):
        key = f"methods[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if (
            not isinstance(item, dict)
            or "name" not in item
            or not isinstance(item["name"], str)
            or not item["name"]
        ):
            raise ConfigError(file, key, "expected {name: METHOD, threshold: NUMBER|best, label: TEXT}")
        unknown = set(item) - {"name", "label", "threshold"}
        if unknown:
            raise ConfigError(
                file, f"{key}.{sorted(unknown)[0]}", "unknown key; expected name, label, threshold"
            )
        threshold = item.get("threshold", "best")
        if threshold != "best":
            threshold = _number(threshold, file, f"{key}.threshold")
        out.append(MethodSpec(item["name"], str(item.get("label", item["name"])), threshold))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ConfigError(file, "methods", f"method names repeat: {names}")
    return tuple(out)


def _min_background_mc(raw: Any, file: Any) -> int:
    value = (raw or {}).get("min_background_mc", 1) if isinstance(raw, dict) or raw is None else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(
            file, "binning.min_background_mc", f"expected a non-negative integer, got {value!r}"
        )
    return value


def _binning(raw: Any, file: Any) -> tuple[float, ...]:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(file, "binning", "expected {low, high, bins} or {edges: [...]}")
    unknown = set(raw) - {"low", "high", "bins", "edges", "min_background_mc"}
    if unknown:
        raise ConfigError(file, f"binning.{sorted(unknown)[0]}", "unknown key")
    if "edges" in raw:
        edges = [_number(v, file, f"binning.edges[{i}]") for i, v in enumerate(raw["edges"] or [])]
        if len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ConfigError(file, "binning.edges", "expected >= 2 strictly increasing m_HH edges (GeV)")
        return tuple(edges)
    low = _number(raw.get("low", 200.0), file, "binning.low")
    high = _number(raw.get("high", 1000.0), file, "binning.high")
    bins = raw.get("bins", 10)
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ConfigError(file, "binning.bins", f"expected a positive integer, got {bins!r}")
    if high <= low:
        raise ConfigError(file, "binning.high", f"must exceed low ({low}), got {high}")
    return tuple(np.linspace(low, high, bins + 1).tolist())


def parse_scan_config(raw: dict, *, path: str | os.PathLike | None = None) -> ScanConfig:
    """Validate a scan-config mapping (see configs/scan/*.yaml); ConfigError names file and key."""
    file = path if path is not None else "<scan config>"
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(file, sorted(unknown)[0], f"unknown key; expected some of {sorted(_TOP_KEYS)}")
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    if not isinstance(raw.get("store"), str) or not raw["store"]:
        raise ConfigError(file, "store", "expected the path of a Zarr event store")
    store = raw["store"]
    store = str(Path(store) if os.path.isabs(store) else (base / store))
    output = raw.get("output", "runs/scan")
    if not isinstance(output, str) or not output:
        raise ConfigError(file, "output", f"expected an output folder, got {output!r}")
    background = raw.get("background", ["background"])
    if isinstance(background, str):
        background = [background]
    if not isinstance(background, list) or not background or not all(isinstance(b, str) for b in background):
        raise ConfigError(file, "background", "expected a sample name or a list of them")
    sqrt_s = _number(raw.get("sqrt_s_tev", 13), file, "sqrt_s_tev")
    if sqrt_s not in (13.0, 14.0):
        raise ConfigError(file, "sqrt_s_tev", f"expected 13 or 14, got {sqrt_s:g}")
    methods = _methods(raw.get("methods"), file)
    if "kappa_grid" not in raw:
        raise ConfigError(file, "kappa_grid", "missing; e.g. {start: -20, stop: 25, step: 0.5}")
    kappa_grid = _grid(raw["kappa_grid"], file, "kappa_grid")
    if len(kappa_grid) < 3:
        raise ConfigError(file, "kappa_grid", "needs at least 3 points")
    if "luminosities" not in raw:
        raise ConfigError(file, "luminosities", "missing; e.g. [139, 300] (fb^-1)")
    lumis = _grid(raw["luminosities"], file, "luminosities", positive=True)
    lumi_scan = _grid(raw.get("lumi_scan", list(lumis)), file, "lumi_scan", positive=True)
    asimov = raw.get("asimov", "background")
    if asimov not in ASIMOV_CONVENTIONS:
        raise ConfigError(file, "asimov", f"expected one of {list(ASIMOV_CONVENTIONS)}, got {asimov!r}")
    pl_threshold = _number(raw.get("pl_threshold", 3.84), file, "pl_threshold")
    if pl_threshold <= 0:
        raise ConfigError(file, "pl_threshold", f"must be positive (3.84 = 95 % CL), got {pl_threshold}")
    cls_level = _number(raw.get("cls_level", 0.05), file, "cls_level")
    if not 0 < cls_level < 1:
        raise ConfigError(file, "cls_level", f"expected a number in (0, 1), got {cls_level}")
    statistics = raw.get("statistics", ["pl", "cls"])
    if not isinstance(statistics, list) or not statistics or not set(statistics) <= {"pl", "cls"}:
        raise ConfigError(file, "statistics", f"expected a non-empty subset of [pl, cls], got {statistics!r}")
    unc = raw.get("uncertainties") or {}
    if not isinstance(unc, dict) or set(unc) - {"background_norm", "signal_theory", "mc_stat"}:
        raise ConfigError(
            file, "uncertainties", "expected {background_norm: REL, signal_theory: REL, mc_stat: true|false}"
        )
    mc_stat = unc.get("mc_stat", False)
    if not isinstance(mc_stat, bool):
        raise ConfigError(file, "uncertainties.mc_stat", f"expected true or false, got {mc_stat!r}")
    engine = raw.get("cls_engine", "auto")
    if engine not in ("auto", "closed_form", "pyhf"):
        raise ConfigError(file, "cls_engine", f"expected auto, closed_form or pyhf, got {engine!r}")
    if engine == "closed_form" and any(unc.values()):
        raise ConfigError(file, "cls_engine", "closed_form CLs has no nuisance parameters; use auto or pyhf")
    likelihood = LikelihoodSettings(
        asimov=asimov,
        background_norm_uncertainty=_number(
            unc.get("background_norm", 0.0), file, "uncertainties.background_norm", positive=True
        ),
        signal_theory_uncertainty=_number(
            unc.get("signal_theory", 0.0), file, "uncertainties.signal_theory", positive=True
        ),
        cls_engine=engine,
        mc_stat=mc_stat,
    )
    sel = raw.get("selection") or {}
    if not isinstance(sel, dict) or set(sel) - {"lumi_ifb", "min_signal", "min_background", "min_mc_events"}:
        raise ConfigError(file, "selection", "expected {lumi_ifb, min_signal, min_background, min_mc_events}")
    sel_lumi = _number(
        sel.get("lumi_ifb", lumis[0]), file, "selection.lumi_ifb", positive=True, allow_zero=False
    )
    min_mc = sel.get("min_mc_events", 10)
    if not isinstance(min_mc, int) or isinstance(min_mc, bool) or min_mc < 0:
        raise ConfigError(file, "selection.min_mc_events", f"expected a non-negative integer, got {min_mc!r}")
    eq = raw.get("equivalent_luminosity")
    eq_ref = None
    if eq is not None:
        if not isinstance(eq, dict) or set(eq) != {"reference"}:
            raise ConfigError(file, "equivalent_luminosity", "expected {reference: METHOD}")
        eq_ref = eq["reference"]
        if eq_ref not in [m.name for m in methods]:
            raise ConfigError(
                file, "equivalent_luminosity.reference", f"{eq_ref!r} is not one of the methods"
            )
        if len(methods) < 2:
            raise ConfigError(file, "equivalent_luminosity", "needs at least two methods")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(file, "seed", f"expected an integer, got {seed!r}")
    bootstrap = raw.get("bootstrap", 0)
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0 or bootstrap == 1:
        raise ConfigError(file, "bootstrap", f"expected 0 (off) or a number of replicas >= 2, got {bootstrap!r}")
    return ScanConfig(
        path=None if path is None else str(path),
        store=store,
        output=output,
        signal=_signal(raw.get("signal"), file),
        background=tuple(background),
        sqrt_s_tev=sqrt_s,
        methods=methods,
        mhh_edges=_binning(raw.get("binning"), file),
        kappa_grid=kappa_grid,
        luminosities=lumis,
        lumi_scan=lumi_scan,
        pl_threshold=pl_threshold,
        cls_level=cls_level,
        statistics=tuple(s for s in ("pl", "cls") if s in statistics),
        likelihood=likelihood,
        selection_lumi_ifb=sel_lumi,
        min_signal=_number(sel.get("min_signal", 5.0), file, "selection.min_signal"),
        min_background=_number(sel.get("min_background", 50.0), file, "selection.min_background"),
        min_mc_events=min_mc,
        equivalent_reference=eq_ref,
        seed=seed,
        bootstrap=bootstrap,
        min_background_mc=_min_background_mc(raw.get("binning"), file),
        raw=dict(raw),
    )
