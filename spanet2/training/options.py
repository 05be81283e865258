"""SPANet-compatible training options: a typed frozen dataclass with an exact JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from spanet2.atomic import atomic_path
from spanet2.errors import ConfigError

__all__ = [
    "Options",
    "UPSTREAM_KEYS",
    "SPANET2_KEYS",
    "load_options",
    "save_options",
    "options_from_dict",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """Every option of upstream SPANet v2 (same names and defaults) plus the SPANet2 extras.

    Upstream's deprecated / bookkeeping keys (``transformer_dim``, ``linear_prelu_activation``,
    ``combinatorial_scale``, ``balance_losses``, ``usable_gpus``, ``trial_time``, ``trial_output_dir``)
    are kept so that upstream option files load unchanged; SPANet2 does not read them.
    """

    # ---- network architecture -------------------------------------------------------------
    hidden_dim: int = 128
    transformer_dim: int = 128  # deprecated upstream; unused
    transformer_dim_scale: float = 2.0
    initial_embedding_dim: int = 16
    position_embedding_dim: int = 32  # upstream keeps it; SPANet2 uses a learned per-input type vector
    num_embedding_layers: int = 10
    num_encoder_layers: int = 4
    num_branch_embedding_layers: int = 4
    num_branch_encoder_layers: int = 4
    num_jet_embedding_layers: int = 0
    num_jet_encoder_layers: int = 0
    num_detector_layers: int = 1
    num_regression_layers: int = 1
    num_classification_layers: int = 1
    split_symmetric_attention: bool = True
    num_attention_heads: int = 4
    transformer_activation: str = "gelu"
    skip_connections: bool = True
    initial_embedding_skip_connections: bool = True
    linear_block_type: str = "GRU"
    transformer_type: str = "Gated"
    linear_activation: str = "GELU"
    normalization: str = "LayerNorm"
    masking: str = "Filling"
    linear_prelu_activation: bool = True  # deprecated upstream; unused
    # ---- dataset --------------------------------------------------------------------------
    event_info_file: str = ""
    training_file: str = ""
    validation_file: str = ""
    testing_file: str = ""
    normalize_features: bool = True
    limit_to_num_jets: int = 0
    balance_particles: bool = False
    balance_jets: bool = False
    balance_classifications: bool = False
    partial_events: bool = False
    dataset_limit: float = 1.0
    dataset_randomization: int = 0
    train_validation_split: float = 0.95
    batch_size: int = 4096
    num_dataloader_workers: int = 4
    mask_sequence_vectors: bool = True
    # ---- training -------------------------------------------------------------------------
    combine_pair_loss: str = "min"
    optimizer: str = "AdamW"
    learning_rate: float = 0.001
    focal_gamma: float = 0.0
    combinatorial_scale: float = 0.0  # upstream; unused
    learning_rate_warmup_epochs: float = 1.0
    learning_rate_cycles: int = 0
    assignment_loss_scale: float = 1.0
    detection_loss_scale: float = 0.0
    kl_loss_scale: float = 0.0
    regression_loss_scale: float = 0.0
    classification_loss_scale: float = 0.0
    balance_losses: bool = True  # upstream; unused
    l2_penalty: float = 0.0
    gradient_clip: float = 0.0
    dropout: float = 0.0
    epochs: int = 100
    num_gpu: int = 1
    # ---- miscellaneous (upstream) ---------------------------------------------------------
    verbose_output: bool = True
    usable_gpus: str = ""
    trial_time: str = ""
    trial_output_dir: str = "./test_output"
    # ---- SPANet2 extras -------------------------------------------------------------------
    seed: int = 0
    engine: str = "single"
    lr_schedule: str = "linear"
    precision: str = "32"
    deepspeed_config: str = ""
    zero_stage: int = 0
    compile: bool = False
    patience: int = 0  # early stopping: stop after this many epochs without a better validation loss (0: off)

    def __post_init__(self) -> None:
        _check_values(self, file=None)

    def replace(self, **changes: Any) -> Options:
        """A copy with `changes` applied (type-checked like a file)."""
        merged = self.to_dict()
        merged.update(changes)
        return options_from_dict(merged, file="<Options.replace>")

    def to_dict(self) -> dict[str, Any]:
        """All options as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in fields(Options)}
_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "str": str, "bool": bool}[f.type] for f in fields(Options)
}
SPANET2_KEYS: tuple[str, ...] = (
    "seed",
    "engine",
    "lr_schedule",
    "precision",
    "deepspeed_config",
    "zero_stage",
    "compile",
    "patience",
)
UPSTREAM_KEYS: tuple[str, ...] = tuple(name for name in _FIELDS if name not in SPANET2_KEYS)

_CHOICES: dict[str, tuple[str, ...]] = {
    "transformer_activation": ("relu", "gelu"),
    "linear_block_type": ("Basic", "Resnet", "Gated", "GRU"),
    "transformer_type": ("Standard", "NormFirst", "Gated"),
    "linear_activation": ("None", "ReLU", "PReLU", "ELU", "CELU", "GELU"),
    "normalization": ("None", "LayerNorm", "BatchNorm", "MaskedBatchNorm"),
    "masking": ("None", "Multiplicative", "Filling"),
    "combine_pair_loss": ("min", "softmin", "mean"),
    "engine": ("single", "ddp", "deepspeed"),
    "lr_schedule": ("linear", "cosine"),
    "precision": ("32", "bf16", "16"),
}


def _check_values(opts: Options, file: object | None) -> None:
    """Range / choice checks shared by construction and loading."""
    for key, choices in _CHOICES.items():
        value = getattr(opts, key)
        if value not in choices:
            raise ConfigError(file, key, f"expected one of {list(choices)}, got {value!r}")
    positive = ("hidden_dim", "initial_embedding_dim", "num_attention_heads", "batch_size", "epochs")
    for key in positive:
        if getattr(opts, key) <= 0:
            raise ConfigError(file, key, f"expected a positive integer, got {getattr(opts, key)!r}")
    if opts.hidden_dim % opts.num_attention_heads:
        raise ConfigError(
            file,
            "num_attention_heads",
            f"hidden_dim {opts.hidden_dim} must be divisible by num_attention_heads {opts.num_attention_heads}",
        )
    nonneg = [
        "num_embedding_layers",
        "num_encoder_layers",
        "num_branch_embedding_layers",
        "num_branch_encoder_layers",
        "num_jet_embedding_layers",
        "num_jet_encoder_layers",
        "num_detector_layers",
        "num_regression_layers",
        "num_classification_layers",
        "limit_to_num_jets",
        "learning_rate_cycles",
        "zero_stage",
        "num_dataloader_workers",
        "patience",
    ]
    for key in nonneg:
        if getattr(opts, key) < 0:
            raise ConfigError(file, key, f"expected an integer >= 0, got {getattr(opts, key)!r}")
    if opts.zero_stage > 3:
        raise ConfigError(file, "zero_stage", f"expected 0, 1, 2 or 3, got {opts.zero_stage}")
    for key in ("dataset_limit", "train_validation_split"):
        value = getattr(opts, key)
        if not (0.0 < value <= 1.0):
            raise ConfigError(file, key, f"expected a fraction in (0, 1], got {value!r}")
    for key in (
        "learning_rate",
        "l2_penalty",
        "gradient_clip",
        "dropout",
        "focal_gamma",
        "learning_rate_warmup_epochs",
        "assignment_loss_scale",
        "detection_loss_scale",
        "kl_loss_scale",
        "regression_loss_scale",
        "classification_loss_scale",
        "transformer_dim_scale",
    ):
        value = getattr(opts, key)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(file, key, f"expected a finite number >= 0, got {value!r}")
    if opts.dropout >= 1.0:
        raise ConfigError(file, "dropout", f"expected a probability < 1, got {opts.dropout!r}")


def _coerce(key: str, value: Any, file: object | None) -> Any:
    """Type-check one value: ints are fine for floats, 0/1 ints for bools, bools never for ints."""
    expected = _TYPES[key]
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # upstream writes booleans as 0/1 ints
            return bool(value)
        raise ConfigError(file, key, f"expected a boolean (true/false or 0/1), got {value!r}")
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected an integer, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(file, key, f"expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(file, key, f"expected a string, got {value!r}")
    return _canonical_choice(key, value)


def _spelling(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def _canonical_choice(key: str, value: str) -> str:
    """Upstream reads activation, block, normalisation and masking names case-blind with '_' and spaces
    dropped ('gelu', 'layer_norm', 'Norm First'); map such a spelling to our one name of that choice."""
    choices = _CHOICES.get(key)
    if choices is None or value in choices:
        return value
    matches = [c for c in choices if _spelling(c) == _spelling(value)]
    return matches[0] if len(matches) == 1 else value


def options_from_dict(values: dict[str, Any], *, file: object | None = None) -> Options:
    """Build Options from a mapping; unknown keys warn (naming them), wrong types raise ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(file, None, f"expected a JSON object of options, got {type(values).__name__}")
    unknown = sorted(k for k in values if k not in _FIELDS)
    if unknown:
        message = f"{file or 'options'}: ignoring unknown option keys {unknown} (typo?)"
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    kwargs = {k: _coerce(k, v, file) for k, v in values.items() if k in _FIELDS}
    try:
        return Options(**kwargs)
    except ConfigError as exc:
        if file is not None and exc.file is None:
            raise ConfigError(file, exc.key, exc.message) from None
        raise


def load_options(path: str | os.PathLike, **overrides: Any) -> Options:
    """Read an options JSON file (upstream or SPANet2); `overrides` are applied on top."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the options file: {exc.strerror}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(path, None, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(values, dict):
        raise ConfigError(path, None, "expected a JSON object of options")
    values.update(overrides)
    return options_from_dict(values, file=path)


def save_options(options: Options, path: str | os.PathLike) -> None:
    """Write all options as sorted JSON (atomic); `load_options` gives back an equal Options."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(options.to_dict(), indent=4, sort_keys=True) + "\n")
