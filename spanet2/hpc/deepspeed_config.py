"""DeepSpeed JSON configs for multi-worker trials (ZeRO stage, precision, torch's Adam: no JIT build)."""

from __future__ import annotations

import json
import os
from typing import Any

from spanet2.atomic import atomic_path
from spanet2.errors import ConfigError

__all__ = ["deepspeed_config", "write_deepspeed_config"]


def deepspeed_config(
    *,
    zero_stage: int = 2,
    precision: str = "32",
    micro_batch_size: int | None = None,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    gradient_clip: float = 0.0,
    optimizer: str = "AdamW",
) -> dict[str, Any]:
    """A DeepSpeed config dict for `options.deepspeed_config`.

    Uses torch's Adam/AdamW (`torch_adam: true`): DeepSpeed's own CPU Adam JIT-compiles for minutes.
    `precision`: "32", "bf16" or "16". `micro_batch_size` per worker; None lets the trainer fill it from
    the options' batch size / world size. `gradient_clip` 0 = no clipping.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ConfigError(None, "zero_stage", f"expected 0, 1, 2 or 3, got {zero_stage!r}")
    if precision not in ("32", "bf16", "16"):
        raise ConfigError(None, "precision", f"expected 32, bf16 or 16, got {precision!r}")
    if optimizer not in ("Adam", "AdamW"):
        raise ConfigError(None, "optimizer", f"expected Adam or AdamW, got {optimizer!r}")
    config: dict[str, Any] = {
        "optimizer": {
            "type": optimizer,
            "params": {"lr": float(learning_rate), "weight_decay": float(weight_decay), "torch_adam": True},
        },
        "zero_optimization": {"stage": int(zero_stage)},
        "gradient_accumulation_steps": 1,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if micro_batch_size is not None:
        config["train_micro_batch_size_per_gpu"] = int(micro_batch_size)
    if gradient_clip > 0:
        config["gradient_clipping"] = float(gradient_clip)
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif precision == "16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 12}
    return config


def write_deepspeed_config(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Write `deepspeed_config(**kwargs)` as JSON (atomic) and return it."""
    config = deepspeed_config(**kwargs)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config
