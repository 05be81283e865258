"""The study config (`spanet2 study CONFIG.yaml`) as frozen dataclasses.

`load_study_config` reads the YAML and checks every key, type and value before anything runs: a mistake is a
ConfigError naming the file, the dotted key (`data.signal_per_kappa`, `scans.points[0].luminosities`) and what
was expected. Unset keys take the defaults below. The files a config names (options JSON, tune configs, the event
file) are resolved once, here (`resolve_path`): a relative path names a file in the working directory, else one
of spanet2's shipped configs (`spanet2.bundle.bundle_root()`), so `configs/options/...` works from a folder made
by `spanet2 init` as well as from anywhere else.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spanet2.bundle import bundle_root
from spanet2.errors import ConfigError, DataError

__all__ = [
    "DataConfig",
    "ModelConfig",
    "PairingTestConfig",
    "RepeatsConfig",
    "ScalingConfig",
    "ScanPoint",
    "ScansConfig",
    "StudyConfig",
    "TuneConfig",
    "load_study_config",
    "model_kind",
    "parse_study_config",
    "resolve_path",
]

# the study's models and their kind (training/kinds.py): how each is trained, evaluated and predicted
MODEL_KINDS = {
    "spanet2": "spanet2",
    "kappa5": "spanet2",
    "assignment_off": "spanet2",
    "dnn_min_dr": "dnn",
    "dnn_spanet2": "dnn",
    "dnn_kappa5": "dnn",
}
REQUIRED_MODELS = ("spanet2", "dnn_min_dr")  # the study compares these two at least
SCALING_MODELS = ("spanet2", "dnn_min_dr")  # the models the scaling sweep can retrain
DEFAULT_EVENT_FILE = "configs/events/hh4b.yaml"


def model_kind(model: str):
    """The registered kind (training/kinds.py) of one of the study's models."""
    from spanet2.training.kinds import get_kind

    return get_kind(MODEL_KINDS[model], flag=f"models.{model}")


# ------------------------------------------------------------------------------------------- the dataclasses
@dataclass(frozen=True)
class PairingTestConfig:
    """`data.pairing_test`: signal-only test events at a few κλ points (they fix the pairing efficiency's σ)."""

    kappa: tuple[float, ...]
    signal_per_kappa: int


@dataclass(frozen=True)
class DataConfig:
    """`data`: the generated event files. Counts are events after the four-tag cut; `event_file` is resolved."""

    kappa: tuple[float, ...]  # the mixing-κλ list, numbers as written
    signal_per_kappa: int
    background: int
    kappa5_signal: int  # κ5 SPANet's κλ = 5 training set
    sqrt_s_tev: float = 13.0
    test_fraction: float = 0.1
    pairing_test: PairingTestConfig | None = None
    energy_compare_events: int = 20000  # parton-level events per √s for the 13 vs 14 TeV figures
    event_file: Path = Path(DEFAULT_EVENT_FILE)
    background_model: str = "exact"  # QCD 4b: "exact" LO 2 → 4 matrix elements, or the "approx" model


@dataclass(frozen=True)
class ModelConfig:
    """`models.<name>`: the options file (resolved) and the options the study sets on top of it."""

    options: Path
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RepeatsConfig:
    """`repeats`: `n` trainings with different seeds of each of `models` (0: none)."""

    n: int = 0
    models: tuple[str, ...] = REQUIRED_MODELS
    epochs: int | None = None  # ignored with a warning (each model trains for its own epochs); older configs


@dataclass(frozen=True)
class ScalingConfig:
    """`scaling`: retrain `models` on these fractions of the training set (none: no sweep)."""

    fractions: tuple[float, ...] = ()
    models: tuple[str, ...] = SCALING_MODELS


@dataclass(frozen=True)
class TuneConfig:
    """`tune.<name>`: a search config (resolved) and what the study changes in it (None: the config's own)."""

    config: Path
    num_samples: int | None = None
    epochs: int | None = None
    max_concurrent_trials: int | None = None  # None: min(2, workers)
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed options for every trial


@dataclass(frozen=True)
class ScanPoint:
    """One entry of `scans.points`: the κλ intervals at these luminosities (fb⁻¹) and √s."""

    sqrt_s_tev: float
    luminosities: tuple[float, ...]


@dataclass(frozen=True)
class ScansConfig:
    """`scans`: the κλ scans (`spanet2.stats` scan settings shared by every point) and the Δκλ-vs-L scan."""

    points: tuple[ScanPoint, ...]
    kappa_grid: dict[str, Any] | tuple[float, ...] = field(
        default_factory=lambda: {"start": -10.0, "stop": 16.0, "step": 0.5}
    )
    asimov: str = "background"
    pl_threshold: float = 3.84
    threshold: float | str = "best"
    bootstrap: int = 0
    selection: dict[str, Any] = field(default_factory=dict)
    lumi_sqrt_s_tev: float = 14.0
    lumi_reference: tuple[float, ...] = (300,)
    lumi_scan: tuple[float, ...] = (139, 300, 1000, 3000)

    def settings(self, point: ScanPoint) -> dict[str, Any]:
        """The scan-config keys (`spanet2.stats.config`) of one point that come from this section."""
        raw: dict[str, Any] = {
            "sqrt_s_tev": float(point.sqrt_s_tev),
            "kappa_grid": list(self.kappa_grid)
            if isinstance(self.kappa_grid, tuple)
            else dict(self.kappa_grid),
            "luminosities": [float(x) for x in point.luminosities],
            "asimov": self.asimov,
            "pl_threshold": float(self.pl_threshold),
            "bootstrap": self.bootstrap,  # bootstrap replicas of the templates: ± on bounds and L′
        }
        if self.selection:
            raw["selection"] = dict(self.selection)
        return raw

    @property
    def lumi_point(self) -> ScanPoint:
        """The point of the Δκλ-vs-L scan: its √s and reference luminosities."""
        return ScanPoint(self.lumi_sqrt_s_tev, self.lumi_reference)


@dataclass(frozen=True)
class StudyConfig:
    """A validated study config. `path` is the YAML it was read from (None when built in code)."""

    data: DataConfig
    models: dict[str, ModelConfig]
    scans: ScansConfig
    output: str = "runs/study"
    seed: int = 0
    workers: int | None = None  # None: all cores
    repeats: RepeatsConfig = field(default_factory=RepeatsConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tune: dict[str, TuneConfig] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # accepted (older configs); no stage reads it yet
    path: Path | None = field(default=None, compare=False)

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (`parse_study_config` reads it back to an equal config), with the resolved paths."""
        out = _plain(self)
        out.pop("path", None)
        out["models"] = {
            name: {"options": str(spec.options), **_plain(spec.overrides)}
            for name, spec in self.models.items()
        }
        if not self.report:
            out.pop("report")
        return out


def _plain(value: Any) -> Any:
    """`value` as YAML-safe mappings, lists, strings and numbers; dataclass fields that are None are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return {k: _plain(v) for k, v in fields if v is not None}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------------------------- paths
def resolve_path(p: str | Path) -> Path:
    """A config's file path: as given when absolute or present relative to the working directory, else the
    same relative path among spanet2's shipped configs when it is there, else as given (the caller reports it)."""
    p = Path(p)
    if p.is_absolute() or p.exists():
        return p
    try:
        shipped = bundle_root() / p
    except DataError:  # installed without its configs: only the working directory counts
        return p
    return shipped if shipped.exists() else p


def _file(value: Any, file: Path, key: str) -> Path:
    """A path key: resolved (`resolve_path`) and present, else ConfigError naming the key and where it looked."""
    if not isinstance(value, str) or not value:
        raise ConfigError(file, key, f"expected a file path, got {value!r}")
    path = resolve_path(value)
    if not path.is_file():
        try:
            shipped = f" nor among spanet2's shipped configs ({bundle_root()})"
        except DataError:
            shipped = ""
        raise ConfigError(
            file, key, f"file {value} not found in the working directory ({Path.cwd()}){shipped}"
        )
    return path


# ------------------------------------------------------------------------------------------- checks
def _mapping(
    value: Any, file: Path, key: str, allowed: Collection[str] | None = None, required: Collection[str] = ()
) -> dict:
    """`value` as a mapping whose keys are among `allowed` (None: any) and include `required`."""
    if not isinstance(value, dict):
        raise ConfigError(file, key or None, f"expected a mapping, got {value!r}")
    for k in value:
        if allowed is not None and k not in allowed:
            raise _unknown(file, _join(key, k), "key", allowed)
    for k in required:
        if k not in value:
            raise ConfigError(file, _join(key, k), "missing")
    return value


def _unknown(file: Path, key: str, what: str, allowed: Collection[str]) -> ConfigError:
    """The error of an unknown key or name (the last part of `key`), with the closest allowed one."""
    close = difflib.get_close_matches(key.rpartition(".")[2], sorted(allowed), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    listed = f"; expected some of {sorted(allowed)}" if len(allowed) <= 12 else ""
    return ConfigError(file, key, f"unknown {what}{hint}{listed}")


def _join(key: str, sub: Any) -> str:
    return f"{key}.{sub}" if key else str(sub)


def _keys(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, file: Path, key: str, *, positive: bool = False) -> float:
    if not _is_number(value) or positive and value <= 0:
        raise ConfigError(file, key, f"expected a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _count(value: Any, file: Path, key: str, *, minimum: int = 1) -> int:
    """An integer >= `minimum` (1: "a positive count")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive count" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(file, key, f"expected {what}, got {value!r}")
    return value


def _numbers(value: Any, file: Path, key: str, *, positive: bool = False, what: str = "numbers") -> tuple:
    """A non-empty list of numbers (kept as written: ints stay ints)."""
    if (
        not isinstance(value, list)
        or not value
        or not all(_is_number(v) and (v > 0 or not positive) for v in value)
    ):
        raise ConfigError(file, key, f"expected a non-empty list of {what}, got {value!r}")
    return tuple(value)


def _luminosities(value: Any, file: Path, key: str) -> tuple:
    return _numbers(value, file, key, positive=True, what="positive luminosities (fb⁻¹)")


def _names(value: Any, file: Path, key: str, allowed: Collection[str]) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not all(isinstance(v, str) for v in value)
        or not set(value) <= set(allowed)
    ):
        raise ConfigError(file, key, f"expected a subset of {list(allowed)}, got {value!r}")
    return tuple(value)


# ------------------------------------------------------------------------------------------- sections
def _data(raw: Any, file: Path) -> DataConfig:
    d = _mapping(
        raw, file, "data", _keys(DataConfig), ("kappa", "signal_per_kappa", "background", "kappa5_signal")
    )
    pairing = d.get("pairing_test")
    if pairing is not None:
        if not isinstance(pairing, dict) or set(pairing) != {"kappa", "signal_per_kappa"}:
            raise ConfigError(
                file, "data.pairing_test", "expected a mapping with 'kappa' and 'signal_per_kappa'"
            )
        pairing = PairingTestConfig(
            _numbers(pairing["kappa"], file, "data.pairing_test.kappa"),
            _count(pairing["signal_per_kappa"], file, "data.pairing_test.signal_per_kappa"),
        )
    fraction = d.get("test_fraction", DataConfig.test_fraction)
    if not _is_number(fraction) or not 0.0 < fraction < 1.0:
        raise ConfigError(file, "data.test_fraction", f"expected a fraction in (0, 1), got {fraction!r}")
    return DataConfig(
        kappa=_numbers(d["kappa"], file, "data.kappa"),
        signal_per_kappa=_count(d["signal_per_kappa"], file, "data.signal_per_kappa"),
        background=_count(d["background"], file, "data.background"),
        kappa5_signal=_count(d["kappa5_signal"], file, "data.kappa5_signal"),
        sqrt_s_tev=_number(
            d.get("sqrt_s_tev", DataConfig.sqrt_s_tev), file, "data.sqrt_s_tev", positive=True
        ),
        test_fraction=float(fraction),
        pairing_test=pairing,
        energy_compare_events=_count(
            d.get("energy_compare_events", DataConfig.energy_compare_events),
            file,
            "data.energy_compare_events",
        ),
        event_file=_file(d.get("event_file", DEFAULT_EVENT_FILE), file, "data.event_file"),
        background_model=_background_model(d.get("background_model", DataConfig.background_model), file),
    )


def _background_model(value: Any, file: Path) -> str:
    from spanet2.generate.writer import BACKGROUND_MODELS

    if value not in BACKGROUND_MODELS:
        raise ConfigError(file, "data.background_model", f"expected one of {list(BACKGROUND_MODELS)}, got {value!r}")
    return value


def _models(raw: Any, file: Path) -> dict[str, ModelConfig]:
    models = {}
    for name, spec in _mapping(raw, file, "models").items():
        if name not in MODEL_KINDS:
            raise _unknown(file, f"models.{name}", "model", MODEL_KINDS)
        if not isinstance(spec, dict) or "options" not in spec:
            raise ConfigError(file, f"models.{name}", "expected a mapping with an 'options' file")
        overrides = {k: v for k, v in spec.items() if k != "options"}
        _mapping(overrides, file, f"models.{name}", model_kind(name).option_names())  # the option names
        options = _file(spec["options"], file, f"models.{name}.options")
        _check_override_values(name, options, overrides, file)
        models[name] = ModelConfig(options, overrides)
    missing = set(REQUIRED_MODELS) - set(models)
    if missing:
        raise ConfigError(file, "models", f"the study needs at least {sorted(missing)}")
    return models


def _check_override_values(name: str, options: Path, overrides: dict[str, Any], file: Path) -> None:
    """The overrides applied to the options file, checked now (not when the stage runs): a bad value is one
    ConfigError naming the study config and `models.<name>.<key>`."""
    base = model_kind(name).load_options(options)
    try:
        dataclasses.replace(base, **overrides)
    except ConfigError as exc:
        key = exc.key if exc.key in overrides else next(iter(overrides), None)
        raise ConfigError(file, f"models.{name}.{key}" if key else f"models.{name}", exc.message) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(file, f"models.{name}", f"bad option value: {exc}") from None


def _repeats(raw: Any, file: Path, models: Collection[str]) -> RepeatsConfig:
    if raw is None:
        return RepeatsConfig()
    r = _mapping(raw, file, "repeats", _keys(RepeatsConfig))
    epochs = r.get("epochs")
    return RepeatsConfig(
        n=_count(r.get("n", RepeatsConfig.n), file, "repeats.n", minimum=0),
        models=_names(r.get("models", list(RepeatsConfig.models)), file, "repeats.models", models),
        epochs=None if epochs is None else _count(epochs, file, "repeats.epochs"),
    )


def _scaling(raw: Any, file: Path) -> ScalingConfig:
    if raw is None:
        return ScalingConfig()
    if not isinstance(raw, dict) or set(raw) - _keys(ScalingConfig):
        raise ConfigError(file, "scaling", "expected a mapping with 'fractions' (and optionally 'models')")
    fractions = raw.get("fractions", [])
    if not isinstance(fractions, list) or not all(_is_number(f) and 0 < f < 1 for f in fractions):
        raise ConfigError(
            file, "scaling.fractions", f"expected a list of fractions in (0, 1), got {fractions!r}"
        )
    return ScalingConfig(
        tuple(fractions),
        _names(raw.get("models", list(SCALING_MODELS)), file, "scaling.models", SCALING_MODELS),
    )


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _plain_name(name: Any, file: Path, key: str) -> str:
    """A name that becomes a folder under the study's output: letters, digits, '_', '.', '-', no path."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            file, key, f"expected a plain name (letters, digits, '_', '.', '-'; not a path), got {name!r}"
        )
    return name


def _tune(raw: Any, file: Path) -> dict[str, TuneConfig]:
    tune = {}
    for name, spec in _mapping(raw or {}, file, "tune").items():
        key = f"tune.{name}"
        _plain_name(name, file, key)
        s = _mapping(spec, file, key, _keys(TuneConfig), ("config",))
        counts = {
            k: _count(s[k], file, f"{key}.{k}")
            for k in ("num_samples", "epochs", "max_concurrent_trials")
            if s.get(k) is not None
        }
        overrides = _mapping(s.get("overrides") or {}, file, f"{key}.overrides")
        tune[str(name)] = TuneConfig(_file(s["config"], file, f"{key}.config"), overrides=overrides, **counts)
    return tune


def _scans(raw: Any, file: Path, seed: int) -> ScansConfig:
    s = _mapping(raw, file, "scans", _keys(ScansConfig), ("points",))
    if not isinstance(s["points"], list) or not s["points"]:
        raise ConfigError(file, "scans.points", "expected a list of {sqrt_s_tev, luminosities}")
    points = []
    for i, point in enumerate(s["points"]):
        key = f"scans.points[{i}]"
        p = _mapping(point, file, key, _keys(ScanPoint))
        lumis = _luminosities(p.get("luminosities"), file, f"{key}.luminosities")
        if p.get("sqrt_s_tev") not in (13, 14):
            raise ConfigError(file, f"{key}.sqrt_s_tev", "expected 13 or 14")
        points.append(ScanPoint(float(p["sqrt_s_tev"]), lumis))
    grid = s.get("kappa_grid")
    if grid is not None and not isinstance(grid, dict):
        grid = _numbers(grid, file, "scans.kappa_grid", what="numbers or {start, stop, step}")
    threshold = s.get("threshold", ScansConfig.threshold)
    if threshold != "best":
        threshold = _number(threshold, file, "scans.threshold")
    asimov = s.get("asimov", ScansConfig.asimov)
    if not isinstance(asimov, str):
        raise ConfigError(file, "scans.asimov", f"expected a name, got {asimov!r}")
    scans = ScansConfig(
        points=tuple(points),
        **({} if grid is None else {"kappa_grid": grid}),
        asimov=asimov,
        pl_threshold=_number(
            s.get("pl_threshold", ScansConfig.pl_threshold), file, "scans.pl_threshold", positive=True
        ),
        threshold=threshold,
        bootstrap=_count(s.get("bootstrap", ScansConfig.bootstrap), file, "scans.bootstrap", minimum=0),
        selection=_mapping(s.get("selection") or {}, file, "scans.selection"),
        lumi_sqrt_s_tev=_number(
            s.get("lumi_sqrt_s_tev", ScansConfig.lumi_sqrt_s_tev), file, "scans.lumi_sqrt_s_tev"
        ),
        lumi_reference=_luminosities(
            s.get("lumi_reference", list(ScansConfig.lumi_reference)), file, "scans.lumi_reference"
        ),
        lumi_scan=_luminosities(s.get("lumi_scan", list(ScansConfig.lumi_scan)), file, "scans.lumi_scan"),
    )
    _check_scan_settings(scans, file, seed)
    return scans


def _check_scan_settings(scans: ScansConfig, file: Path, seed: int) -> None:
    """Run every point's settings through the scan-config parser now, not after hours of training; its errors are
    raised with the study's key (`scans.kappa_grid.step`, `scans.points[1].luminosities`, `scans.lumi_scan[0]`)."""
    from spanet2.stats.config import parse_scan_config

    methods = [{"name": m, "threshold": scans.threshold} for m in ("a", "b")]
    # (point, the study keys of its luminosities and √s, extra scan keys)
    checks = [
        (p, {k: f"scans.points[{i}].{k}" for k in ("luminosities", "sqrt_s_tev")}, {})
        for i, p in enumerate(scans.points)
    ]
    lumi_names = {"luminosities": "scans.lumi_reference", "sqrt_s_tev": "scans.lumi_sqrt_s_tev"}
    checks.append((scans.lumi_point, lumi_names, {"lumi_scan": list(scans.lumi_scan)}))
    for point, names, extra in checks:
        raw = {"store": "events.zarr", "methods": methods, "seed": seed, **scans.settings(point), **extra}
        try:
            parse_scan_config(raw, path=None)
        except ConfigError as exc:
            key = exc.key or ""
            base = re.split(r"[.\[]", key, maxsplit=1)[0]
            if base == "methods":
                key = "scans.threshold"
            else:
                key = names[base] + key[len(base) :] if base in names else _join("scans", key)
            raise ConfigError(file, key, exc.message) from None


# ------------------------------------------------------------------------------------------- loading
def parse_study_config(raw: Any, path: str | Path) -> StudyConfig:
    """Validate a study-config mapping read from `path` (named in every error)."""
    path = Path(path)
    top = _mapping(raw, path, "", _keys(StudyConfig) - {"path"}, ("data", "models", "scans"))
    output = top.get("output", StudyConfig.output)
    if not isinstance(output, str) or not output:
        raise ConfigError(path, "output", f"expected an output folder, got {output!r}")
    seed = _count(top.get("seed", StudyConfig.seed), path, "seed", minimum=0)
    workers = top.get("workers")
    data = _data(top["data"], path)
    models = _models(top["models"], path)
    return StudyConfig(
        data=data,
        models=models,
        scans=_scans(top["scans"], path, seed),
        output=output,
        seed=seed,
        workers=None if workers is None else _count(workers, path, "workers"),
        repeats=_repeats(top.get("repeats"), path, models),
        scaling=_scaling(top.get("scaling"), path),
        tune=_tune(top.get("tune"), path),
        report=_mapping(top.get("report") or {}, path, "report"),
        path=path.resolve(),
    )


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML (ConfigError naming the file and key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "study config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, None, "expected a mapping at the top level")
    return parse_study_config(raw, path)
