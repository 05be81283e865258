"""The training log directory `<log_dir>/<name>/version_<n>/` and its checkpoint and metrics files."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spanet2.atomic import atomic_path, check_writable
from spanet2.errors import DataError, InputError

__all__ = [
    "RunDir",
    "new_run_dir",
    "open_run_dir",
    "checkpoint_for_inference",
    "save_checkpoint",
    "load_checkpoint",
    "append_metrics",
    "read_metrics",
    "write_json",
]

logger = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^version_(\d+)$")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory (the layout upstream SPANet writes: version_<n>/, checkpoints/, options)."""

    path: Path

    @property
    def options(self) -> Path:
        return self.path / "options.json"

    @property
    def event_file(self) -> Path:
        return self.path / "event.yaml"

    @property
    def normalization(self) -> Path:
        return self.path / "normalization.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def provenance(self) -> Path:
        return self.path / "provenance.json"


def new_run_dir(log_dir: str | os.PathLike, name: str) -> RunDir:
    """Create the next free `<log_dir>/<name>/version_<n>/` (n = 0, 1, ...) and its `checkpoints/`.

    Creation is race-free between concurrent runs (mkdir without exist_ok claims a version).
    """
    if not name or "/" in name or name in (".", ".."):
        raise InputError("--name", None, f"expected a plain directory name, got {name!r}")
    base = Path(log_dir) / name
    check_writable(base / "x")
    while True:
        taken = [int(m.group(1)) for p in base.iterdir() if (m := _VERSION_RE.match(p.name))]
        version = max(taken, default=-1) + 1
        path = base / f"version_{version}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        run = RunDir(path)
        run.checkpoints.mkdir()
        return run


def open_run_dir(path: str | os.PathLike, *, need_checkpoint: bool = True) -> RunDir:
    """Check that `path` is a finished-enough run directory: options.json and a checkpoint (best or last)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, None, "log directory not found (expected <log_dir>/<name>/version_<n>)")
    run = RunDir(path)
    if not run.options.is_file():
        raise InputError(path, "options.json", "missing: not a SPANet2 run directory")
    if not run.event_file.is_file():
        raise InputError(path, "event.yaml", "missing: not a SPANet2 run directory")
    if need_checkpoint and not (run.best_checkpoint.is_file() or run.last_checkpoint.is_file()):
        raise InputError(
            path,
            "checkpoints/best.pt",
            "no checkpoint in this run directory (training never finished an epoch)",
        )
    return run


def checkpoint_for_inference(run: RunDir) -> Path:
    """The checkpoint to evaluate with: best if present, else last."""
    return run.best_checkpoint if run.best_checkpoint.is_file() else run.last_checkpoint


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (only tensors, dicts, lists, strings, numbers) atomically with torch.save."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; a missing or corrupt file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise DataError(
            path, None, f"not a loadable SPANet2 checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "options" not in state:
        raise DataError(path, "model", "checkpoint lacks the model state dict or the options")
    return state


def append_metrics(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line (one epoch's metrics) and flush it to disk."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True, default=_json_default) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (an absent file reads as no records)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
