"""The DNN baseline: an MLP on the 20 (or 16) high-level observables of a pairing, with early stopping."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from spanet2.atomic import atomic_path
from spanet2.errors import ConfigError, DataError, InputError
from spanet2.events import layout
from spanet2.events.layout import SIGNAL_LABEL_PATH, SIGNAL_PROBABILITY_PATH, resolve_dataset
from spanet2.physics import features as hl
from spanet2.provenance import write_provenance
from spanet2.training.logdir import append_metrics, new_run_dir, save_checkpoint

__all__ = [
    "DNNOptions",
    "DNNClassifier",
    "DNNData",
    "DNNTrainResult",
    "load_dnn_options",
    "save_dnn_options",
    "load_dnn_data",
    "train_dnn",
    "load_dnn_model",
    "evaluate_dnn",
    "predict_dnn",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DNNOptions:
    """DNN hyper-parameters (JSON keys of `configs/options/dnn_*.json`).

    feature_set: "auto" (20 when the file has MET/leptons, else 16), "20" or "16".
    patience: epochs without a lower validation loss before stopping (0 = never stop early).
    validation_fraction: share of the training file held out when no validation file is given.
    """

    hidden_dim: int = 256
    n_layers: int = 2
    learning_rate: float = 1e-3
    dropout: float = 0.0
    batch_size: int = 1024
    epochs: int = 50
    patience: int = 5
    seed: int = 0
    validation_fraction: float = 0.1
    weight_decay: float = 0.0
    feature_set: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.hidden_dim < 1:
            problems.append(("hidden_dim", "must be >= 1"))
        if self.n_layers < 0:
            problems.append(("n_layers", "must be >= 0"))
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append(("learning_rate", "must be a positive number"))
        if not 0 <= self.dropout < 1:
            problems.append(("dropout", "must lie in [0, 1)"))
        if self.batch_size < 1:
            problems.append(("batch_size", "must be >= 1"))
        if self.epochs < 1:
            problems.append(("epochs", "must be >= 1"))
        if self.patience < 0:
            problems.append(("patience", "must be >= 0"))
        if not 0 < self.validation_fraction < 1:
            problems.append(("validation_fraction", "must lie in (0, 1)"))
        if self.weight_decay < 0:
            problems.append(("weight_decay", "must be >= 0"))
        if self.feature_set not in ("auto", "20", "16"):
            problems.append(("feature_set", "must be 'auto', '20' or '16'"))
        if problems:
            key, message = problems[0]
            raise ConfigError(None, key, f"{message} (got {getattr(self, key)!r})")

    def replace(self, **changes: Any) -> DNNOptions:
        """A copy with some fields changed (None values are ignored, so CLI flags can pass through)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: object | None = None) -> DNNOptions:
        """Build from a JSON mapping: unknown keys warn (naming them), wrong types raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(source, None, "expected a JSON object of DNN options")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            logger.warning("%s: unknown DNN option keys ignored: %s", source or "options", ", ".join(unknown))
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            kind = known[key].type
            if kind == "int":
                if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                    raise ConfigError(source, key, f"expected an integer, got {value!r}")
                values[key] = int(value)
            elif kind == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(source, key, f"expected a number, got {value!r}")
                values[key] = float(value)
            else:
                values[key] = str(value)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(source, exc.key, exc.message) from None


def load_dnn_options(path: str | os.PathLike) -> DNNOptions:
    """Read a DNN options JSON file (ConfigError on a missing file, bad JSON or bad values)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "options file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(path, None, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return DNNOptions.from_dict(data, source=path)


def save_dnn_options(options: DNNOptions, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(options.to_dict(), indent=2, sort_keys=True) + "\n")


class DNNClassifier(nn.Module):
    """MLP: standardise (buffers saved with the weights) → n_layers × (Linear, ReLU, Dropout) → 1 logit."""

    def __init__(self, n_inputs: int, hidden_dim: int, n_layers: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("std", torch.ones(n_inputs))

    def set_standardisation(self, features: np.ndarray) -> None:
        """Fit the input standardisation on training features (N, F); constant columns keep std 1."""
        mean = np.nanmean(features, axis=0)
        std = np.nanstd(features, axis=0)
        std = np.where(std > 0, std, 1.0)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, F) raw features → (B,) logits."""
        return self.net((x - self.mean) / self.std).squeeze(-1)


@dataclass
class DNNData:
    """Features (N, F) float32, labels (N,) int64, the canonical pairing (N, 4) and where they came from."""

    features: np.ndarray
    labels: np.ndarray | None
    pairing: np.ndarray
    names: tuple[str, ...]
    path: str
    n_invalid: int = 0


@dataclass
class DNNTrainResult:
    run_dir: Path
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def _read_labels(path: str | os.PathLike, n_events: int, required: bool) -> np.ndarray | None:
    with h5py.File(path, "r") as h5:
        ds = resolve_dataset(h5, SIGNAL_LABEL_PATH)
        if ds is None:
            if required:
                raise DataError(
                    path, SIGNAL_LABEL_PATH, "missing (expected 0/1 labels, int (N,))"
                )
            return None
        labels = np.asarray(ds[:])
    if labels.ndim != 1 or labels.shape[0] != n_events:
        raise DataError(
            path, SIGNAL_LABEL_PATH, f"expected shape ({n_events},), got {labels.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise DataError(path, SIGNAL_LABEL_PATH, "expected labels 0 (background) or 1 (signal)")
    return labels.astype(np.int64)


def _read_features_group(path: str | os.PathLike, names: tuple[str, ...] | None) -> DNNData | None:
    """Features from a `spanet2 features` output file, or None when the file has no FEATURES group."""
    with h5py.File(path, "r") as h5:
        if layout.FEATURES not in h5:
            return None
        group = h5[layout.FEATURES]
        stored = tuple(str(n) for n in group.attrs.get("names", ()))
        wanted = stored if names is None else names
        missing = [n for n in wanted if n not in group]
        if missing:
            raise DataError(path, f"{layout.FEATURES}/{missing[0]}", "missing (the model needs it)")
        features = np.stack([group[n][:] for n in wanted], axis=1).astype(np.float32)  # (N, F)
        pairing = group["pairing"][:] if "pairing" in group else np.full((len(features), 4), -1)
    return DNNData(features, None, pairing, wanted, str(path))


def load_dnn_data(
    path: str | os.PathLike,
    pairing: str | os.PathLike = "min-dr",
    *,
    names: tuple[str, ...] | None = None,
    feature_set: str = "auto",
    labels_required: bool = True,
    chunk_size: int = 65536,
) -> DNNData:
    """Features and labels of an event file (or of a `spanet2 features` file, whose pairing is fixed).

    names: the exact feature list a trained model needs (20 or 16); otherwise chosen by feature_set.
    """
    if not Path(path).is_file():
        raise InputError(path, None, "file not found (expected an HDF5 event file)")
    data = None
    try:
        wanted = names or {"20": hl.FEATURE_NAMES, "16": hl.FEATURE_NAMES_NO_EXTRA}.get(feature_set)
        data = _read_features_group(path, wanted)
    except OSError:
        raise DataError(path, None, "not a readable HDF5 file") from None
    if data is not None:
        if str(pairing) != "min-dr":
            logger.warning("%s holds precomputed FEATURES; the --pairing %s is not used", path, pairing)
    else:
        if names is not None:
            with_extra = len(names) == len(hl.FEATURE_NAMES)
        else:
            with_extra = {"auto": None, "20": True, "16": False}[feature_set]
            if with_extra is None:
                with_extra = hl.has_extra(path)
        blocks, pairs = [], []
        for _, features, ordered in hl.iter_feature_chunks(
            path, pairing, chunk_size=chunk_size, with_extra=with_extra
        ):
            blocks.append(features)
            pairs.append(ordered)
        n_jets_total = hl.event_count(path)
        features = np.concatenate(blocks) if blocks else np.zeros((0, 20 if with_extra else 16), np.float32)
        ordered = np.concatenate(pairs) if pairs else np.zeros((n_jets_total, 4), np.int64)
        data = DNNData(features, None, ordered, hl.feature_names(with_extra), str(path))
    data.labels = _read_labels(path, len(data.features), labels_required)
    data.n_invalid = int(np.count_nonzero(~np.isfinite(data.features).all(axis=1)))
    if data.n_invalid:
        logger.warning("%s: %d of %d events have no valid pairing", path, data.n_invalid, len(data.features))
    return data


def _metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ACC ± binomial σ and AUC ± DeLong σ (NaN for an absent class)."""
    from spanet2.training.metrics import classification_metrics

    return {k: math.nan if v is None else float(v) for k, v in classification_metrics(labels, scores).items()}


@torch.no_grad()
def _scores(model: DNNClassifier, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Signal probabilities (N,) float64 for finite rows; NaN rows give NaN."""
    model.eval()
    out = np.full(len(features), np.nan)
    finite = np.isfinite(features).all(axis=1)
    x = torch.as_tensor(features[finite])
    parts = [
        torch.sigmoid(model(x[i : i + batch_size])).double().numpy() for i in range(0, len(x), batch_size)
    ]
    out[finite] = np.concatenate(parts) if parts else np.zeros(0)
    return out


@torch.no_grad()
def _loss(model: DNNClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 65536) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        total += float(
            nn.functional.binary_cross_entropy_with_logits(logits, y[i : i + batch_size], reduction="sum")
        )
    return total / max(len(x), 1)


def _finite(data: DNNData) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(data.features).all(axis=1)
    return data.features[keep], data.labels[keep]


def train_dnn(
    options: DNNOptions,
    *,
    log_dir: str | os.PathLike,
    name: str,
    training_file: str | os.PathLike,
    validation_file: str | os.PathLike | None = None,
    pairing: str | os.PathLike = "min-dr",
    validation_pairing: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    seed: int | None = None,
    epoch_callback: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> DNNTrainResult:
    """Train the DNN; write `<log_dir>/<name>/version_<n>/` and return the best validation metrics.

    The run directory holds options.json, normalization.json, checkpoints/{best,last}.pt (weights_only
    loadable: model state incl. standardisation, optimizer, epoch, feature names), metrics.jsonl (one line
    per epoch) and provenance.json. `checkpoint` (a last.pt) resumes a run in a new version directory.
    `epoch_callback(metrics)` gets {"epoch", "train_loss", "val_loss", "val_accuracy", "val_auc", "val_auc_err"} each epoch.
    """
    options = options.replace(seed=seed)
    resume = _load_checkpoint(checkpoint) if checkpoint is not None else None
    names = tuple(resume["feature_names"]) if resume else None
    train_data = load_dnn_data(training_file, pairing, names=names, feature_set=options.feature_set)
    if validation_file is not None:
        val_data = load_dnn_data(validation_file, validation_pairing or pairing, names=train_data.names)
        x_train, y_train = _finite(train_data)
        x_val, y_val = _finite(val_data)
    else:
        x_all, y_all = _finite(train_data)
        order = np.random.default_rng(options.seed).permutation(len(x_all))
        n_val = max(1, int(round(options.validation_fraction * len(x_all))))
        x_val, y_val = x_all[order[:n_val]], y_all[order[:n_val]]
        x_train, y_train = x_all[order[n_val:]], y_all[order[n_val:]]
    if len(x_train) == 0 or len(x_val) == 0:
        raise DataError(training_file, None, "too few events with a valid pairing to train and validate")
    if len(np.unique(y_train)) < 2:
        raise DataError(
            training_file, SIGNAL_LABEL_PATH, "training needs both signal and background"
        )

    run_dir = new_run_dir(log_dir, name).path
    save_dnn_options(options, run_dir / "options.json")
    write_provenance(run_dir / "provenance.json", options=options.to_dict(), seed=options.seed,
                     training_file=str(training_file), validation_file=None if validation_file is None
                     else str(validation_file), pairing=str(pairing), resumed_from=None if checkpoint is None
                     else str(checkpoint), feature_names=list(train_data.names))  # fmt: skip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        model = DNNClassifier(len(train_data.names), options.hidden_dim, options.n_layers, options.dropout)
        model.set_standardisation(x_train)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
        )
        state = {"epoch": 0, "best_val_loss": math.inf, "bad_epochs": 0, "best_metrics": {}}
        if resume:
            _check_resume(resume, options, train_data.names, checkpoint)
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            state.update({k: resume[k] for k in ("epoch", "best_val_loss", "bad_epochs")})
            state["best_metrics"] = dict(resume.get("best_metrics", {}))
        (run_dir / "normalization.json").write_text(json.dumps(
            {"features": list(train_data.names), "mean": model.mean.tolist(), "std": model.std.tolist()}, indent=2
        ) + "\n")  # fmt: skip
        history = _fit(model, optimizer, options, state, run_dir, train_data.names, str(pairing),
                       (x_train, y_train, x_val, y_val), epoch_callback, progress)  # fmt: skip
    logger.info("DNN training finished in %s: best %s", run_dir, state["best_metrics"])
    return DNNTrainResult(run_dir, dict(state["best_metrics"]), history)


def _fit(model, optimizer, options, state, run_dir, names, pairing, arrays, epoch_callback, progress):
    from rich.progress import Progress

    x_train, y_train, x_val, y_val = (torch.as_tensor(a, dtype=torch.float32) for a in arrays)
    history: list[dict[str, float]] = []
    generator = torch.Generator().manual_seed(options.seed)
    for _ in range(state["epoch"]):  # keep the shuffles of a resumed run identical to an uninterrupted one
        torch.randperm(len(x_train), generator=generator)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("DNN epochs", total=options.epochs, completed=state["epoch"])
        while state["epoch"] < options.epochs:
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total = 0.0
            for i in range(0, len(x_train), options.batch_size):
                idx = order[i : i + options.batch_size]
                loss = nn.functional.binary_cross_entropy_with_logits(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            state["epoch"] += 1
            val_loss = _loss(model, x_val, y_val)
            scores = _scores(model, arrays[2])
            val = _metrics(arrays[3], scores)
            record = {"epoch": state["epoch"], "train_loss": total / len(x_train), "val_loss": val_loss,
                      "val_accuracy": val["accuracy"], "val_auc": val["auc"], "val_auc_err": val["auc_err"]}  # fmt: skip
            improved = val_loss < state["best_val_loss"]
            record["best"] = bool(improved)
            if improved:
                state["best_val_loss"], state["bad_epochs"] = val_loss, 0
                state["best_metrics"] = dict(record)
            else:
                state["bad_epochs"] += 1
            payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": state["epoch"],
                       "best_val_loss": state["best_val_loss"], "bad_epochs": state["bad_epochs"],
                       "best_metrics": state["best_metrics"], "options": options.to_dict(),
                       "feature_names": list(names), "pairing": pairing}  # fmt: skip
            if improved:
                save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
            save_checkpoint(run_dir / "checkpoints" / "last.pt", payload)
            append_metrics(run_dir / "metrics.jsonl", record)
            history.append(record)
            if epoch_callback is not None:
                epoch_callback(dict(record))
            bar.update(task, advance=1, description=f"DNN epoch {state['epoch']} val_loss {val_loss:.4f}")
            if options.patience and state["bad_epochs"] >= options.patience:
                logger.info("early stop after epoch %d (no val_loss improvement in %d epochs)",
                            state["epoch"], options.patience)  # fmt: skip
                break
    from spanet2.training.curves import write_learning_curves

    every_epoch = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if every_epoch:  # the whole run, resumed epochs included
        write_learning_curves(every_epoch, run_dir / "learning_curves.png", title="DNN")
    return history


def _load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: report it as the user's input
        raise DataError(path, None, f"not a loadable DNN checkpoint ({type(exc).__name__})") from None
    for key in ("model", "options", "feature_names", "epoch"):
        if not isinstance(payload, dict) or key not in payload:
            raise DataError(path, key, "missing from the checkpoint (not a DNN checkpoint?)")
    return payload


def _check_resume(resume: dict, options: DNNOptions, names: tuple[str, ...], path: object) -> None:
    saved = DNNOptions.from_dict(resume["options"], source=path)
    for key in ("hidden_dim", "n_layers"):
        if getattr(saved, key) != getattr(options, key):
            raise ConfigError(
                path, key, f"checkpoint has {getattr(saved, key)}, options ask {getattr(options, key)}"
            )


def _run_checkpoint(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        raise InputError(
            run_dir, "checkpoints/best.pt", "missing (expected a `spanet2 dnn train` run directory)"
        )
    return best


def load_dnn_model(run_dir: str | os.PathLike) -> tuple[DNNClassifier, tuple[str, ...], DNNOptions]:
    """The best model of a run directory (or a checkpoint path), its feature names and options."""
    path = _run_checkpoint(run_dir)
    payload = _load_checkpoint(path)
    options = DNNOptions.from_dict(payload["options"], source=path)
    names = tuple(payload["feature_names"])
    model = DNNClassifier(len(names), options.hidden_dim, options.n_layers, options.dropout)
    model.load_state_dict(payload["model"])
    model.eval()
    return model, names, options


def evaluate_dnn(
    run_dir: str | os.PathLike, test_file: str | os.PathLike, *, pairing: str | os.PathLike = "min-dr"
) -> dict[str, float]:
    """ACC and AUC (unweighted, threshold 0.5) of a trained DNN on a labelled test file."""
    model, names, _ = load_dnn_model(run_dir)
    data = load_dnn_data(test_file, pairing, names=names)
    features, labels = _finite(data)
    if len(features) == 0:
        raise DataError(test_file, None, "no events with a valid pairing to evaluate")
    scores = _scores(model, features)
    result = _metrics(labels, scores)
    result.update({"events": int(len(labels)), "signal": int(labels.sum()), "background": int((labels == 0).sum()),
                   "invalid_pairings": data.n_invalid})  # fmt: skip
    return result


def predict_dnn(
    run_dir: str | os.PathLike,
    output: str | os.PathLike,
    test_file: str | os.PathLike,
    *,
    pairing: str | os.PathLike = "min-dr",
) -> dict[str, Any]:
    """Write a predictions file in the SPANet2 layout from the DNN.

    The input's groups are copied (INPUTS, WEIGHTS, TRUTH, GLOBAL_EXTRA); `TARGETS/h*/b*` hold the
    pairing the DNN used (canonical order), `CLASSIFICATIONS/EVENT/signal` (N, 2) the class probabilities
    and `CLASSIFICATIONS/EVENT/signal_probability` (N,) the signal score; `FEATURES/<name>` (N,) the
    observables. Events without a valid pairing get score 0 (never selected) and are counted.
    """
    model, names, _ = load_dnn_model(run_dir)
    data = load_dnn_data(test_file, pairing, names=names, labels_required=False)
    scores = _scores(model, data.features)
    invalid = ~np.isfinite(scores)
    scores[invalid] = 0.0
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
        with h5py.File(test_file, "r") as src:
            for group in (layout.INPUTS, *layout.EXTRA_GROUPS):
                hl.copy_group(src, out, group)
        for i, key in enumerate(hl.PAIRING_PATHS):
            out.create_dataset(key, data=data.pairing[:, i].astype(np.int64))
        out.create_dataset(
            SIGNAL_LABEL_PATH, data=np.stack([1 - scores, scores], axis=1).astype("f4")
        )
        out.create_dataset(SIGNAL_PROBABILITY_PATH, data=scores.astype("f4"))
        features = out.create_group(layout.FEATURES)
        features.attrs["names"] = list(names)
        for i, feature in enumerate(names):
            features.create_dataset(feature, data=data.features[:, i])
        out.attrs["dnn_run"] = str(run_dir)
        out.attrs["pairing"] = str(pairing)
    return {"events": int(len(scores)), "invalid_pairings": int(invalid.sum()), "output": str(output)}
