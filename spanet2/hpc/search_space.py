"""Search configurations (`configs/tune/*.yaml`): parse, validate against the option names, build Optuna spaces."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spanet2.errors import ConfigError
from spanet2.training.kinds import get_kind, kind_names

__all__ = [
    "MODELS",
    "OBJECTIVES",
    "Objective",
    "Parameter",
    "SearchConfig",
    "load_search_config",
    "objective_for",
    "option_names",
    "optuna_space",
    "override_search_config",
]

log = logging.getLogger(__name__)

MODELS = kind_names()  # the model-kind registry (spanet2.training.kinds)


@dataclass(frozen=True)
class Objective:
    """The metric a search optimises: `metric` is a key of the trainer's per-epoch dict; `mode` min|max."""

    name: str
    metric: str
    mode: str


# The names users write in a config, the per-epoch metric key the trainers report, and the direction.
OBJECTIVES: dict[str, Objective] = {
    "val_loss": Objective("val_loss", "val_loss", "min"),
    "val_auc": Objective("val_auc", "val_auc", "max"),
    "val_pairing_efficiency": Objective("val_pairing_efficiency", "val_pairing_efficiency", "max"),
}
_OBJECTIVE_ALIASES = {
    "loss": "val_loss",
    "auc": "val_auc",
    "pairing_efficiency": "val_pairing_efficiency",
    "pairing": "val_pairing_efficiency",
}

_KINDS = ("loguniform", "uniform", "randint", "choice")


@dataclass(frozen=True)
class Parameter:
    """One searched option. `kind`: loguniform / uniform (floats in [low, high]), randint (integers in
    [low, high], both ends included), choice (one of `values`)."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {self.kind: list(self.values)}
        return {self.kind: [self.low, self.high]}


@dataclass(frozen=True)
class SearchConfig:
    """A resolved search: what to train (model + base options + data), the space, and how to search it.

    Paths are kept as written (relative paths resolve against the working directory, as for `spanet2 train`).
    `resources_per_trial` holds `cpu` and `gpu` per worker (fractions allowed for `gpu`).
    """

    path: str | None
    model: str
    space: tuple[Parameter, ...]
    objective: Objective
    options_file: str | None = None
    event_file: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    pairing: str = "min-dr"
    overrides: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 100
    epochs: int = 10
    max_concurrent_trials: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    engine: str | None = None
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    seed: int = 0
    max_failures: int = 2
    points_to_evaluate: tuple[dict[str, Any], ...] = ()

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (round-trips through `load_search_config`)."""
        out = {
            "model": self.model,
            "options": self.options_file,
            "event_file": self.event_file,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "pairing": self.pairing,
            "overrides": dict(self.overrides),
            "objective": self.objective.name,
            "num_samples": self.num_samples,
            "epochs": self.epochs,
            "max_concurrent_trials": self.max_concurrent_trials,
            "resources_per_trial": {
                "cpu": self.cpus_per_trial,
                "gpu": self.gpus_per_trial,
                "workers": self.workers_per_trial,
            },
            "engine": self.engine,
            "scheduler": {
                "type": self.scheduler,
                "grace_period": self.grace_period,
                "reduction_factor": self.reduction_factor,
            },
            "seed": self.seed,
            "max_failures": self.max_failures,
            "space": {p.name: p.to_dict() for p in self.space},
        }
        if self.points_to_evaluate:
            out["points_to_evaluate"] = [dict(p) for p in self.points_to_evaluate]
        if get_kind(self.model).pairs_jets:
            del out["pairing"]
        return out


def option_names(model: str) -> frozenset[str]:
    """The option keys a search may set for `model` (SPANet2 `Options` fields, or the DNN's options)."""
    if model not in MODELS:
        raise ValueError(model)
    return get_kind(model).option_names()


def objective_for(name: str, *, file: object | None = None) -> Objective:
    """Map a user's objective name (or alias) to an `Objective`; ConfigError names the valid ones."""
    key = _OBJECTIVE_ALIASES.get(str(name), str(name))
    if key not in OBJECTIVES:
        raise ConfigError(
            file, "objective", f"unknown objective {name!r}; expected one of {', '.join(OBJECTIVES)}"
        )
    return OBJECTIVES[key]


def _number(value: Any, file: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(file, key, f"expected a finite number, found {value!r}")
    return value


def _parameter(name: str, spec: Any, file: object) -> Parameter:
    key = f"space.{name}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            file,
            key,
            "expected one mapping like {loguniform: [low, high]}, {uniform: [low, high]}, "
            "{randint: [low, high]} or {choice: [a, b, ...]}",
        )
    ((kind, args),) = spec.items()
    if kind not in _KINDS:
        raise ConfigError(file, key, f"unknown distribution {kind!r}; expected one of {', '.join(_KINDS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(file, key, "choice needs a non-empty list of values")
        if len(set(map(repr, args))) != len(args):
            raise ConfigError(file, key, f"choice values repeat: {args}")
        return Parameter(name, kind, values=tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(file, key, f"{kind} needs a list [low, high], found {args!r}")
    low, high = (_number(v, file, key) for v in args)
    if kind == "randint":
        if low != int(low) or high != int(high):
            raise ConfigError(file, key, f"randint bounds must be integers, found {args}")
        low, high = int(low), int(high)
        if high < low:
            raise ConfigError(file, key, f"empty range [{low}, {high}]: high must be >= low")
    elif not high > low:
        raise ConfigError(file, key, f"empty range [{low}, {high}]: high must be > low")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(file, key, f"loguniform needs low > 0, found {low}")
    return Parameter(name, kind, low=low, high=high)


def _positive_int(raw: dict, key: str, default: int, file: object, minimum: int = 1) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(file, key, f"expected an integer >= {minimum}, found {value!r}")
    return value


_TOP_KEYS = {
    "model",
    "options",
    "event_file",
    "training_file",
    "validation_file",
    "pairing",
    "overrides",
    "objective",
    "num_samples",
    "epochs",
    "max_concurrent_trials",
    "resources_per_trial",
    "engine",
    "scheduler",
    "seed",
    "space",
    "max_failures",
    "points_to_evaluate",
}


def load_search_config(path: str | os.PathLike, *, validate_keys: bool = True) -> SearchConfig:
    """Read and validate a search YAML (no Ray, no torch work). Raises ConfigError naming file and key.

    With `validate_keys`, every key in `space` and `overrides` must be an option of the chosen model.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "search configuration file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, None, "expected a mapping at the top level")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(path, unknown[0], f"unknown key; expected some of {', '.join(sorted(_TOP_KEYS))}")

    model = raw.get("model", "spanet2")
    if model not in MODELS:
        raise ConfigError(path, "model", f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    kind = get_kind(model)
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise ConfigError(path, "space", "expected a non-empty mapping of option name -> distribution")
    space = tuple(_parameter(str(name), spec, path) for name, spec in space_raw.items())
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(path, "overrides", "expected a mapping of option name -> value")
    if validate_keys:
        known = option_names(model)
        for name in [p.name for p in space] + list(overrides):
            if name not in known:
                close = sorted(k for k in known if k.split("_")[0] == name.split("_")[0])[:3]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(
                    path,
                    f"space.{name}" if name in space_raw else f"overrides.{name}",
                    f"not an option of the {model} model{hint}",
                )
    both = sorted(set(overrides) & {p.name for p in space})
    if both:
        raise ConfigError(path, f"overrides.{both[0]}", "is also searched in `space`; set it in one place")

    objective = objective_for(raw.get("objective", "val_loss"), file=path)
    if not kind.pairs_jets and objective.name == "val_pairing_efficiency":
        raise ConfigError(path, "objective", "the DNN does not pair jets; use val_loss or val_auc")
    pairing = raw.get("pairing", "min-dr")
    if not isinstance(pairing, str) or not pairing:
        raise ConfigError(path, "pairing", f"expected 'min-dr' or a predictions HDF5 path, found {pairing!r}")
    if kind.pairs_jets and "pairing" in raw:
        raise ConfigError(path, "pairing", "only the dnn model takes a pairing")
    resources = raw.get("resources_per_trial") or {}
    if not isinstance(resources, dict) or set(resources) - {"cpu", "gpu", "workers"}:
        raise ConfigError(path, "resources_per_trial", "expected a mapping with keys cpu, gpu, workers")
    cpus = _number(resources.get("cpu", 1), path, "resources_per_trial.cpu")
    gpus = _number(resources.get("gpu", 0), path, "resources_per_trial.gpu")
    if cpus < 0 or gpus < 0 or (cpus == 0 and gpus == 0):
        raise ConfigError(
            path, "resources_per_trial", f"need cpu >= 0, gpu >= 0, not both 0; found {resources}"
        )
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError(
            path, "resources_per_trial.gpu", f"fractions are allowed only below 1, found {gpus}"
        )
    workers = _positive_int(resources, "workers", 1, path)

    sched = raw.get("scheduler") or {"type": "asha"}
    if isinstance(sched, str):
        sched = {"type": sched}
    if not isinstance(sched, dict) or sched.get("type", "asha") not in ("asha", "fifo"):
        raise ConfigError(path, "scheduler", f"expected type asha or fifo, found {sched!r}")
    epochs = _positive_int(raw, "epochs", 10, path)
    grace = _positive_int(sched, "grace_period", 1, path)
    if grace > epochs:
        raise ConfigError(path, "scheduler.grace_period", f"{grace} exceeds epochs ({epochs})")
    reduction = _number(sched.get("reduction_factor", 2), path, "scheduler.reduction_factor")
    if reduction <= 1:
        raise ConfigError(path, "scheduler.reduction_factor", f"must be > 1, found {reduction}")
    engine = raw.get("engine")
    if engine is not None and engine not in ("single", "ddp", "deepspeed"):
        raise ConfigError(path, "engine", f"expected single, ddp or deepspeed, found {engine!r}")
    if workers > 1 and not kind.multi_worker:
        multi = " or ".join(k for k in MODELS if get_kind(k).multi_worker)
        raise ConfigError(path, "resources_per_trial.workers", f"several workers per trial need model {multi}")
    if workers > 1 and engine not in ("ddp", "deepspeed"):
        raise ConfigError(
            path, "engine", f"{workers} workers per trial need engine ddp or deepspeed, found {engine!r}"
        )

    def _opt_path(key: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(path, key, f"expected a path, found {value!r}")
        return value

    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(path, "seed", f"expected an integer >= 0, found {seed!r}")
    max_failures = raw.get("max_failures", 2)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise ConfigError(path, "max_failures", f"expected an integer >= 0, found {max_failures!r}")
    points = _points_to_evaluate(raw.get("points_to_evaluate"), space, path)
    return SearchConfig(
        path=str(path),
        model=model,
        space=space,
        objective=objective,
        options_file=_opt_path("options"),
        event_file=_opt_path("event_file"),
        training_file=_opt_path("training_file"),
        validation_file=_opt_path("validation_file"),
        pairing=pairing,
        overrides=dict(overrides),
        num_samples=_positive_int(raw, "num_samples", 100, path),
        epochs=epochs,
        max_concurrent_trials=_positive_int(raw, "max_concurrent_trials", 1, path),
        cpus_per_trial=float(cpus),
        gpus_per_trial=float(gpus),
        workers_per_trial=workers,
        engine=engine,
        scheduler=sched.get("type", "asha"),
        grace_period=grace,
        reduction_factor=float(reduction),
        seed=seed,
        max_failures=max_failures,
        points_to_evaluate=points,
    )


def _points_to_evaluate(raw: Any, space: tuple[Parameter, ...], file: object) -> tuple[dict[str, Any], ...]:
    """The trials to run first (before the sampler), each a mapping of searched options to values inside
    the space (a partial mapping leaves the rest to the sampler)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, dict) and p for p in raw):
        raise ConfigError(
            file, "points_to_evaluate", "expected a list of mappings of searched option -> value"
        )
    by_name = {p.name: p for p in space}
    for i, point in enumerate(raw):
        for name, value in point.items():
            key = f"points_to_evaluate[{i}].{name}"
            param = by_name.get(name)
            if param is None:
                raise ConfigError(file, key, f"not searched in `space` (searched: {', '.join(by_name)})")
            if param.kind == "choice":
                if value not in param.values:
                    raise ConfigError(file, key, f"{value!r} is not one of {list(param.values)}")
                continue
            _number(value, file, key)
            if param.kind == "randint" and value != int(value):
                raise ConfigError(file, key, f"expected an integer, found {value!r}")
            if not param.low <= value <= param.high:
                raise ConfigError(file, key, f"{value!r} lies outside [{param.low}, {param.high}]")
    return tuple(dict(p) for p in raw)


def optuna_space(space: tuple[Parameter, ...]) -> dict[str, Any]:
    """Optuna distributions for OptunaSearch (declarative: no compute, picklable for search checkpoints)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in space:
        if p.kind == "loguniform":
            out[p.name] = FloatDistribution(float(p.low), float(p.high), log=True)
        elif p.kind == "uniform":
            out[p.name] = FloatDistribution(float(p.low), float(p.high))
        elif p.kind == "randint":
            out[p.name] = IntDistribution(int(p.low), int(p.high))
        else:
            out[p.name] = CategoricalDistribution(list(p.values))
    return out


def override_search_config(config: SearchConfig, **changes: Any) -> SearchConfig:
    """`config` with command-line overrides applied (None = keep): num_samples, epochs, max_concurrent_trials,
    seed (ints >= 1, seed >= 0), objective (a name), event_file / training_file / validation_file (paths)."""
    from spanet2.errors import InputError

    values = {k: v for k, v in changes.items() if v is not None}
    for key in ("num_samples", "epochs", "max_concurrent_trials", "seed"):
        if key in values:
            minimum = 0 if key == "seed" else 1
            if isinstance(values[key], bool) or not isinstance(values[key], int) or values[key] < minimum:
                raise InputError(
                    f"--{key.replace('_', '-')}",
                    None,
                    f"must be an integer >= {minimum}, got {values[key]!r}",
                )
    if "objective" in values:
        values["objective"] = objective_for(values["objective"], file="--objective")
        if not get_kind(config.model).pairs_jets and values["objective"].name == "val_pairing_efficiency":
            raise InputError("--objective", None, "the DNN does not pair jets; use val_loss or val_auc")
    if "epochs" in values:
        values["grace_period"] = min(config.grace_period, values["epochs"])
    unknown = set(values) - {f.name for f in dataclasses.fields(SearchConfig)}
    if unknown:
        raise ValueError(f"not search settings: {sorted(unknown)}")
    return config.replace(**values)
