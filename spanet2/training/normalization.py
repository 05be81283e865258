"""Input-feature normalisation fitted on the training split: log(x+1) and (x − mean)/std, as SPANet does."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.atomic import atomic_path
from spanet2.errors import ConfigError
from spanet2.events.layout import strip_group

__all__ = [
    "InputStatistics",
    "NormalizationStats",
    "fit_input_statistics",
    "apply_log_transform",
    "load_normalization",
    "save_normalization",
    "identity_statistics",
]

MIN_STD = 1e-5  # upstream: a feature with std below this is left unscaled (std → 1)


@dataclass(frozen=True)
class InputStatistics:
    """Per-feature statistics of one input (sequential or global); arrays have shape (F,)."""

    features: tuple[str, ...]
    log_scale: tuple[bool, ...]
    normalize: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(log_scale bool, normalize bool, mean float32, std float32), each (F,)."""
        return (
            np.asarray(self.log_scale, dtype=bool),
            np.asarray(self.normalize, dtype=bool),
            np.asarray(self.mean, dtype=np.float32),
            np.asarray(self.std, dtype=np.float32),
        )


@dataclass(frozen=True)
class NormalizationStats:
    """Everything the network needs to know about its training data to be rebuilt.

    inputs: input name → statistics; classification_classes: "EVENT/signal" → number of classes;
    n_jets: the jet padding (J) per sequential input the network was trained on;
    limit_to_num_jets: the option's value at training (files are cut to it when reading, 0 = off).
    """

    inputs: dict[str, InputStatistics]
    classification_classes: dict[str, int] = field(default_factory=dict)
    n_jets: dict[str, int] = field(default_factory=dict)
    limit_to_num_jets: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": {
                name: {
                    "features": list(s.features),
                    "log_scale": list(s.log_scale),
                    "normalize": list(s.normalize),
                    "mean": list(s.mean),
                    "std": list(s.std),
                }
                for name, s in self.inputs.items()
            },
            "classification_classes": dict(self.classification_classes),
            "n_jets": dict(self.n_jets),
            "limit_to_num_jets": int(self.limit_to_num_jets),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, file: object | None = None) -> NormalizationStats:
        try:
            inputs = {
                name: InputStatistics(
                    features=tuple(str(x) for x in s["features"]),
                    log_scale=tuple(bool(x) for x in s["log_scale"]),
                    normalize=tuple(bool(x) for x in s["normalize"]),
                    mean=tuple(float(x) for x in s["mean"]),
                    std=tuple(float(x) for x in s["std"]),
                )
                for name, s in values["inputs"].items()
            }
            classes = {str(k): int(v) for k, v in values.get("classification_classes", {}).items()}
            n_jets = {str(k): int(v) for k, v in values.get("n_jets", {}).items()}
            limit = int(values.get("limit_to_num_jets", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(file, "inputs", f"malformed normalisation statistics ({exc!r})") from None
        for name, s in inputs.items():
            n = len(s.features)
            if not (len(s.log_scale) == len(s.normalize) == len(s.mean) == len(s.std) == n):
                raise ConfigError(
                    file, f"inputs/{name}", "features, log_scale, normalize, mean, std differ in length"
                )
        return cls(inputs=inputs, classification_classes=classes, n_jets=n_jets, limit_to_num_jets=limit)


def apply_log_transform(values: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    """log(x + 1) on the features flagged `log_scale` (last axis); negative values clamp to 0 first."""
    out = np.array(values, dtype=np.float32, copy=True)
    if log_scale.any():
        out[..., log_scale] = np.log1p(np.clip(out[..., log_scale], 0.0, None))
    return out


def fit_input_statistics(
    features: tuple[str, ...],
    log_scale: tuple[bool, ...],
    normalize: tuple[bool, ...],
    values: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    enabled: bool = True,
) -> InputStatistics:
    """Mean/std of (log-transformed) features over the real vectors of the training split.

    values: (N, J, F) sequential or (N, F) global; mask: (N, J) bool (real jets) or None.
    Features not flagged `normalize` (or `enabled=False`) get mean 0, std 1. std < 1e-5 → 1.
    """
    log_arr = np.asarray(log_scale, dtype=bool)
    norm_arr = np.asarray(normalize, dtype=bool) & bool(enabled)
    transformed = apply_log_transform(values, log_arr)
    flat = transformed[mask] if mask is not None else transformed.reshape(-1, transformed.shape[-1])  # (M, F)
    n_features = transformed.shape[-1]
    mean = np.zeros(n_features, dtype=np.float64)
    std = np.ones(n_features, dtype=np.float64)
    if len(flat) and norm_arr.any():
        chosen = flat[:, norm_arr].astype(np.float64)
        mean[norm_arr] = chosen.mean(axis=0)
        spread = chosen.std(axis=0)
        std[norm_arr] = np.where(spread < MIN_STD, 1.0, spread)
    return InputStatistics(
        features=tuple(features),
        log_scale=tuple(bool(x) for x in log_arr),
        normalize=tuple(bool(x) for x in norm_arr),
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
    )


def save_normalization(stats: NormalizationStats, path: str | os.PathLike) -> None:
    """Write `normalization.json` (atomic)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(stats.to_dict(), indent=2, sort_keys=True) + "\n")


def load_normalization(path: str | os.PathLike) -> NormalizationStats:
    """Read `normalization.json`; ConfigError when missing or malformed."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read normalisation statistics: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(path, None, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return NormalizationStats.from_dict(values, file=path)


def identity_statistics(
    topology, classification_classes: dict[str, int] | None = None, n_jets: dict[str, int] | None = None
) -> NormalizationStats:
    """Statistics that leave every feature as it is apart from the topology's log(x+1) (mean 0, std 1).

    Useful before any data has been seen (tests, benchmarks, shape checks). `topology` is an EventTopology.
    """
    inputs = {}
    for source in topology.inputs:
        if source.kind not in ("SEQUENTIAL", "GLOBAL"):
            continue
        n = len(source.features)
        inputs[source.name] = InputStatistics(
            features=source.feature_names,
            log_scale=tuple(f.log_scale for f in source.features),
            normalize=tuple(False for _ in range(n)),
            mean=tuple(0.0 for _ in range(n)),
            std=tuple(1.0 for _ in range(n)),
        )
    classes = dict(classification_classes or {})
    for path in topology.classification_paths():
        classes.setdefault(strip_group(path), 2)
    return NormalizationStats(inputs=inputs, classification_classes=classes, n_jets=dict(n_jets or {}))
