"""Train SPANet2 (single process, DDP or DeepSpeed) into a log directory; evaluate a run on a test file."""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spanet2.events.errors import ConfigError, DataError
from spanet2.events.topology import EventTopology, load_topology
from spanet2.provenance import write_provenance
from spanet2.training import logdir
from spanet2.training.engines import Engine, make_engine
from spanet2.training.options import Options, load_options, save_options
from spanet2.uncertainty import fmt_pm

__all__ = [
    "TrainResult",
    "train",
    "evaluate",
    "format_evaluation",
    "load_run",
    "LoadedRun",
    "seed_everything",
    "predict_arrays",
    "batch_indices",
    "symmetric_daughters",
    "decode_with_probability",
]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """run_dir: the version_<n> folder; best_metrics: the record of the best epoch; history: every epoch's record.
    is_main: False on the non-zero ranks of a distributed run (which write nothing)."""

    run_dir: Path
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_indices(n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Contiguous index batches covering 0..n-1; the last may be short (never dropped)."""
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


def _resolve_options(
    options: Options, *, event_file, training_file, validation_file, seed, engine
) -> Options:
    changes: dict[str, Any] = {}
    if event_file is not None:
        changes["event_info_file"] = str(event_file)
    if training_file is not None:
        changes["training_file"] = str(training_file)
    if validation_file is not None:
        changes["validation_file"] = str(validation_file)
    if seed is not None:
        changes["seed"] = int(seed)
    if engine is not None:
        changes["engine"] = str(engine)
    options = options.replace(**changes) if changes else options
    if not options.event_info_file:
        raise ConfigError("options", "event_info_file", "no event topology YAML given (set it or pass -ef)")
    if not options.training_file:
        raise ConfigError("options", "training_file", "no training HDF5 given (set it or pass -tf)")
    return options


def _use_gpu(options: Options) -> bool:
    return options.num_gpu > 0 and torch.cuda.is_available()


def _shard(indices: np.ndarray, rank: int, world: int, *, equal: bool) -> np.ndarray:
    """This rank's share of `indices` (strided). equal=True trims so every rank has the same count."""
    if world == 1:
        return indices
    if equal:
        indices = indices[: (len(indices) // world) * world]
    return indices[rank::world]


# ------------------------------------------------------------------------------------------- train
def train(
    options: Options,
    *,
    log_dir: str | os.PathLike,
    name: str,
    event_file: str | os.PathLike | None = None,
    training_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    seed: int | None = None,
    engine: str | None = None,
    epoch_callback: EpochCallback | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train SPANet2 and write `<log_dir>/<name>/version_<n>/` (DESIGN.md "Log directory").

    Arguments override the matching options (event_info_file, training_file, validation_file, seed, engine).
    `checkpoint`: a `checkpoints/last.pt` to resume from; training continues at the next epoch, in the same
    run directory when the checkpoint lies in one, and stops at `options.epochs` in total.
    `epoch_callback(record)` runs after every epoch on every rank with the epoch's metrics (keys: epoch,
    train_loss, val_loss, val_auc, val_accuracy, val_pairing_efficiency, lr, epoch_seconds, ...); an exception
    raised in it stops training (the checkpoints of finished epochs stay).
    """
    from spanet2.training.curves import write_learning_curves
    from spanet2.training.dataset import load_training_data
    from spanet2.training.model import SPANet2
    from spanet2.training.normalization import NormalizationStats, save_normalization

    options = _resolve_options(
        options,
        event_file=event_file,
        training_file=training_file,
        validation_file=validation_file,
        seed=seed,
        engine=engine,
    )
    resume_state = logdir.load_checkpoint(checkpoint) if checkpoint else None
    topology = load_topology(options.event_info_file)
    seed_everything(options.seed)
    eng = make_engine(options.engine, options, use_gpu=_use_gpu(options))
    try:
        data = load_training_data(options, topology)
        normalization = data.normalization
        if resume_state is not None:
            normalization = NormalizationStats.from_dict(resume_state["normalization"], file=checkpoint)
        torch.manual_seed(options.seed)  # same initial weights whatever the data loading consumed
        model = SPANet2(options, topology, normalization)
        n_train_rank = len(_shard(np.arange(data.n_train), eng.rank, eng.world_size, equal=True))
        if n_train_rank == 0:
            raise DataError(
                options.training_file,
                None,
                f"no training events for {eng.world_size} processes "
                f"(training split has {data.n_train} events)",
            )
        steps_per_epoch = math.ceil(n_train_rank / _per_rank_batch(options, eng))
        eng.setup(model, options, steps_per_epoch=steps_per_epoch)

        if resume_state is not None:  # before any directory is touched: a mismatch leaves nothing behind
            try:
                eng.load_training_state(resume_state, run_path=Path(checkpoint).resolve().parent.parent)
            except RuntimeError as exc:
                raise DataError(
                    checkpoint, "model", f"checkpoint does not fit these options: {exc}".splitlines()[0]
                ) from None
            _restore_rng(resume_state)
        run, start_epoch, history, best = _open_run(eng, options, log_dir, name, checkpoint, resume_state)
        loss_fn = _make_loss_fn(options, topology, eng.device)
        if eng.is_main:
            _write_run_files(run, options, topology, normalization, save_normalization)
        eng.barrier()
        writer = _tensorboard(run) if eng.is_main else None
        if start_epoch >= options.epochs:
            logger.info("checkpoint already at epoch %d of %d: nothing to train", start_epoch, options.epochs)
        for epoch in range(start_epoch, options.epochs):
            record = _run_epoch(
                eng, data, options, topology, epoch, loss_fn, progress=progress and eng.is_main
            )
            is_best = best is None or _selection_loss(record) < _selection_loss(best)
            record["best"] = bool(is_best)
            history.append(record)
            if is_best:
                best = dict(record)
            _save_checkpoints(eng, run, options, normalization, epoch + 1, history, best, is_best)
            if eng.is_main:
                logdir.append_metrics(run.metrics, record)
                if writer is not None:
                    for key, value in record.items():
                        if (
                            isinstance(value, int | float)
                            and not isinstance(value, bool)
                            and value is not None
                        ):
                            writer.add_scalar(key, value, epoch + 1)
                    writer.flush()
                logger.info("epoch %d/%d: %s", epoch + 1, options.epochs, _short(record))
            if epoch_callback is not None:
                epoch_callback(dict(record))
            if options.patience and epochs_since_best(history) >= options.patience:
                logger.info(
                    "early stopping after epoch %d: no better validation loss in %d epochs",
                    epoch + 1,
                    options.patience,
                )
                break
        if writer is not None:
            writer.close()
        if eng.is_main and history:
            write_learning_curves(history, run.path / "learning_curves.png", title=name)
        return TrainResult(
            run_dir=run.path, best_metrics=dict(best or {}), history=history, is_main=eng.is_main
        )
    finally:
        eng.close()


def epochs_since_best(history: list[dict[str, Any]]) -> int:
    """Epochs after the last one flagged best (the whole history when none is)."""
    for back, record in enumerate(reversed(history)):
        if record.get("best"):
            return back
    return len(history)


def _selection_loss(record: dict[str, Any]) -> float:
    """What the best checkpoint minimises: the validation loss (symmetric under h1 <-> h2 and b1 <-> b2 by
    construction), or the training loss when there are no validation events."""
    value = record.get("val_loss")
    return float(record["train_loss"] if value is None else value)


def _per_rank_batch(options: Options, eng: Engine) -> int:
    return max(int(options.batch_size) // eng.world_size, 1)


def _open_run(eng: Engine, options, log_dir, name, checkpoint, resume_state):
    """The run directory (new, or the checkpoint's own on resume) agreed by all ranks; start epoch, history, best."""
    start_epoch, history, best = 0, [], None
    path = None
    if eng.is_main:
        resumed_in_place = False
        if resume_state is not None:
            start_epoch = int(resume_state["epoch"])
            history = list(resume_state.get("history", []))
            best = resume_state.get("best") or None
            ckpt_run = Path(checkpoint).resolve().parent.parent
            if (ckpt_run / "options.json").is_file() and (ckpt_run / "checkpoints").is_dir():
                path = ckpt_run
                resumed_in_place = True
        if path is None:
            path = logdir.new_run_dir(log_dir, name).path
        run = logdir.RunDir(Path(path))
        if resume_state is not None:
            # metrics of epochs after the checkpoint (a run killed mid-way) are dropped, then the history rewritten
            keep = [r for r in history if r["epoch"] <= start_epoch]
            with logdir.atomic_path(run.metrics) as tmp:
                tmp.write_text("".join(_json_line(r) for r in keep))
            logger.info(
                "resuming %s at epoch %d of %d%s",
                run.path,
                start_epoch + 1,
                options.epochs,
                " (same run directory)" if resumed_in_place else "",
            )
    state = eng.broadcast_object((str(path) if path else None, start_epoch, history, best))
    path, start_epoch, history, best = state
    return logdir.RunDir(Path(path)), start_epoch, history, best


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record, sort_keys=True) + "\n"


def _write_run_files(run, options, topology, normalization, save_normalization) -> None:
    save_options(options, run.options)
    shutil.copyfile(options.event_info_file, run.event_file)
    save_normalization(normalization, run.normalization)
    write_provenance(
        run.provenance,
        options=options.to_dict(),
        seed=options.seed,
        engine=options.engine,
        torch_threads=torch.get_num_threads(),
        cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )


def _tensorboard(run):
    """A TensorBoard writer under <run>/tensorboard when tensorboard (or tensorboardX) is importable, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return None
    try:
        return SummaryWriter(log_dir=str(run.path / "tensorboard"))
    except Exception:  # noqa: BLE001 - TensorBoard is optional: never fail a run for it
        logger.debug("TensorBoard writer unavailable", exc_info=True)
        return None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(resume_state: dict[str, Any]) -> None:
    rng = resume_state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _save_checkpoints(
    eng: Engine, run, options, normalization, epochs_done: int, history, best, is_best
) -> None:
    """checkpoints/last.pt every epoch, best.pt when the validation loss improved (weights_only-loadable)."""
    state = {
        # float32 on the CPU whatever the engine's precision/device: a checkpoint loads anywhere
        "model": {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu()
            for k, v in eng.module.state_dict().items()
        },
        "epoch": epochs_done,
        "options": options.to_dict(),
        "normalization": normalization.to_dict(),
        "history": history,
        "best": best,
        "rng": _rng_state(),
        "engine": eng.name,
        "world_size": eng.world_size,
    }
    state.update(eng.training_state(run.path, tag="last"))  # DeepSpeed: every rank writes its shard
    if eng.is_main:
        logdir.save_checkpoint(run.last_checkpoint, state)
        if is_best:
            logdir.save_checkpoint(run.best_checkpoint, state)
    eng.barrier()


def _make_loss_fn(options: Options, topology: EventTopology, device: torch.device):
    """(outputs, batch) -> (total loss tensor, {part: float}); one loss module per training run."""
    from spanet2.training.losses import SPANet2Loss

    module = SPANet2Loss(options, topology).to(device)

    def loss_fn(outputs, batch):
        parts = module(outputs, batch)
        return parts.total, parts.as_floats()

    return loss_fn


def _run_epoch(
    eng: Engine, data, options: Options, topology: EventTopology, epoch: int, loss_fn, *, progress: bool
) -> dict:
    """One pass over this rank's share of the (reshuffled) training split, then validation."""
    started = time.perf_counter()
    # the same permutation on every rank (seed, epoch): resumable and identical across engines
    order = np.random.default_rng([options.seed, epoch]).permutation(data.n_train)
    mine = _shard(order, eng.rank, eng.world_size, equal=True)
    batch_size = _per_rank_batch(options, eng)
    n_steps = math.ceil(len(mine) / batch_size)
    total, seen = 0.0, 0
    parts_sum: dict[str, float] = {}
    with _progress(progress, f"epoch {epoch + 1}/{options.epochs}", n_steps) as advance:
        for step in range(n_steps):
            idx = mine[step * batch_size : (step + 1) * batch_size]
            batch = eng.to_device(data.train_batch(idx))
            loss, parts = eng.train_step(batch, loss_fn)
            total += loss * len(idx)
            seen += len(idx)
            for key, value in parts.items():
                if key != "loss":  # the total is `loss` itself
                    parts_sum[key] = parts_sum.get(key, 0.0) + float(value) * len(idx)
            advance(loss)
    train_seconds = time.perf_counter() - started
    train_sums = eng.all_reduce_sum([total, seen] + [parts_sum[k] for k in sorted(parts_sum)])
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": train_sums[0] / max(train_sums[1], 1),
        "lr": eng.learning_rate,
    }
    for key, value in zip(sorted(parts_sum), train_sums[2:], strict=True):
        record[f"train_{key}"] = value / max(train_sums[1], 1)
    record.update(_validate(eng, data, options, topology, loss_fn))
    record["epoch_seconds"] = time.perf_counter() - started
    record["train_seconds"] = train_seconds
    # all ranks' training events over the training loop's wall time (validation excluded)
    record["train_events_per_second"] = train_sums[1] / max(train_seconds, 1e-9)
    return record


def _validate(eng: Engine, data, options: Options, topology: EventTopology, loss_fn) -> dict[str, Any]:
    """Validation loss and symmetry-aware metrics over the whole validation split (sharded over ranks)."""
    n_val = data.n_val
    if n_val == 0:
        logger.warning("no validation events: the best checkpoint follows the training loss")
        return {"val_loss": None}
    # pad to a multiple of the world size (repeating event 0) so every rank runs the same number of steps
    padded = np.concatenate([np.arange(n_val), np.zeros((-n_val) % eng.world_size, dtype=np.int64)])
    mine = _shard(padded, eng.rank, eng.world_size, equal=False)
    keep_positions = np.arange(eng.rank, len(padded), eng.world_size) < n_val  # which of mine are real events
    batch_size = _per_rank_batch(options, eng)
    loss_sum, n_sum = 0.0, 0
    pieces = []
    module = eng.module
    module.eval()
    with torch.no_grad():
        for idx_pos in batch_indices(len(mine), batch_size):
            idx = mine[idx_pos]
            keep = keep_positions[idx_pos]
            batch = eng.to_device(data.val_batch(idx))
            with eng.autocast():
                outputs = module(batch)
                loss, _ = loss_fn(outputs, batch)
            n_keep = int(keep.sum())
            loss_sum += float(loss.float()) * n_keep
            n_sum += n_keep
            pieces.append(_outputs_to_numpy(outputs, topology, keep))
    sums = eng.all_reduce_sum([loss_sum, n_sum])
    gathered = eng.all_gather_object(_concat(pieces))
    # rank r holds events r, r + W, ...: interleave back into file order
    arrays = _interleave(gathered, n_val)
    metrics = {"val_loss": sums[0] / max(sums[1], 1)}
    metrics.update(_val_metrics(arrays, data.val_truth(), topology))
    return metrics


def _outputs_to_numpy(outputs, topology: EventTopology, keep: np.ndarray) -> dict[str, np.ndarray]:
    """Decoded assignments and scores of one batch (only the `keep` rows)."""
    assignment, _ = decode_with_probability(outputs.assignment_log_probs, symmetric_daughters(topology))
    out = {"assignment": assignment.cpu().numpy()[keep]}
    for name, logits in outputs.classification_logits.items():
        out[f"class:{name}"] = torch.softmax(logits.float(), dim=-1).cpu().numpy()[keep]
    return out


def _concat(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not pieces:
        return {}
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


def _interleave(gathered: list[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    world = len(gathered)
    if world == 1:
        return gathered[0]
    keys = next((g.keys() for g in gathered if g), [])
    out = {}
    for key in keys:
        first = next(g[key] for g in gathered if g)
        full = np.zeros((n, *first.shape[1:]), dtype=first.dtype)
        for rank, g in enumerate(gathered):
            if g:
                full[rank::world][: len(g[key])] = g[key]
        out[key] = full
    return out


def _val_metrics(
    arrays: dict[str, np.ndarray], truth: dict[str, np.ndarray], topology: EventTopology
) -> dict:
    """val_pairing_efficiency (2h events with every particle right, symmetry-aware), val_accuracy, val_auc."""
    from spanet2.training import metrics as M

    out: dict[str, Any] = {}
    if "assignment" in arrays and "targets" in truth and arrays["assignment"].shape[1:] == (2, 2):
        pred = arrays["assignment"].reshape(len(arrays["assignment"]), -1)  # (N, 2P)
        target = truth["targets"].reshape(len(truth["targets"]), -1)  # (N, 2P)
        table = M.assignment_table(pred, target, truth["n_jets"])
        total = _table_row(table, "Total")
        out["val_pairing_efficiency"] = _finite(total.get("event_efficiency"))
        out["val_higgs_efficiency"] = _finite(total.get("higgs_efficiency"))
    for key, value in arrays.items():
        if not key.startswith("class:"):
            continue
        name = key.removeprefix("class:")
        labels = truth.get("classifications", {}).get(name)
        if labels is None:
            continue
        valid = labels >= 0
        if value.shape[1] == 2 and valid.any():
            score = value[valid, 1]
            suffix = "" if name == "EVENT/signal" else f"_{name.replace('/', '_')}"
            out[f"val_accuracy{suffix}"] = _finite(M.accuracy(labels[valid], score))
            both = len(np.unique(labels[valid])) == 2
            out[f"val_auc{suffix}"] = _finite(M.roc_auc(labels[valid], score)) if both else None
    return out


def _table_row(table, row: str) -> dict[str, float]:
    """One row of a metrics.AssignmentTable as a plain dict (NaN → None)."""
    return {k: (_finite(v) if k != "n_events" else int(v)) for k, v in table.as_dict()[row].items()}


def decode_with_probability(log_probs, symmetric: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding (decoding.greedy_decode) plus the chosen pair's probability.

    log_probs: P tensors (B, J, J). Returns (assignment (B, P, 2) int64, −1 = none; probability (B, P)
    float32 = P(cell i, j) (+ P(j, i) for symmetric daughters: the unordered pair), 0 where unassigned).
    """
    from spanet2.training.decoding import greedy_decode

    decoded = greedy_decode(log_probs, symmetric)
    assignment = decoded[0] if isinstance(decoded, tuple) else decoded  # (B, P, 2)
    stacked = torch.stack([lp.float() for lp in log_probs], dim=1)  # (B, P, J, J)
    i, j = assignment[..., 0], assignment[..., 1]  # (B, P)
    found = (i >= 0) & (j >= 0)
    i, j = i.clamp_min(0), j.clamp_min(0)
    flat = stacked.flatten(2)  # (B, P, J·J)
    n_jets = stacked.shape[-1]
    forward = flat.gather(2, (i * n_jets + j).unsqueeze(-1)).squeeze(-1).exp()  # (B, P)
    backward = flat.gather(2, (j * n_jets + i).unsqueeze(-1)).squeeze(-1).exp()  # (B, P)
    sym = torch.tensor(symmetric, dtype=torch.bool, device=stacked.device)
    probability = forward + torch.where(sym & (i != j), backward, torch.zeros_like(backward))
    return assignment, torch.where(found, probability, torch.zeros_like(probability))


def symmetric_daughters(topology: EventTopology) -> list[bool]:
    """Per particle (topology order): are its daughters interchangeable (a daughter permutation group > 1)?"""
    return [len(topology.daughter_permutation_group(p)) > 1 for p in topology.particle_names]


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _short(record: dict) -> str:
    keys = ("train_loss", "val_loss", "val_pairing_efficiency", "val_auc", "epoch_seconds")
    return ", ".join(f"{k}={record[k]:.4g}" for k in keys if isinstance(record.get(k), float))


class _progress:
    """A rich progress bar over the steps of an epoch (a no-op when disabled)."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda loss: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._bar.start()
        task = self._bar.add_task(self.description, total=self.total, loss=float("nan"))

        def advance(loss: float) -> None:
            self._bar.update(task, advance=1, loss=loss)

        return advance

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False


# -------------------------------------------------------------------------------------- evaluation
@dataclass
class LoadedRun:
    """A trained network rebuilt from its run directory: model (eval mode), options, topology, normalization."""

    run: logdir.RunDir
    model: torch.nn.Module
    options: Options
    topology: EventTopology
    normalization: Any
    checkpoint: Path
    device: torch.device


def load_run(
    run_dir: str | os.PathLike, *, gpu: bool = False, event_file: str | os.PathLike | None = None
) -> LoadedRun:
    """Rebuild the network of a run directory from options.json, event.yaml, normalization.json and the best
    (else last) checkpoint. Needs nothing else (not the training file)."""
    from spanet2.training.model import SPANet2
    from spanet2.training.normalization import load_normalization

    run = logdir.open_run_dir(run_dir)
    options = load_options(run.options)
    topology = load_topology(event_file or run.event_file)
    normalization = load_normalization(run.normalization)
    ckpt_path = logdir.checkpoint_for_inference(run)
    state = logdir.load_checkpoint(ckpt_path)
    model = SPANet2(options, topology, normalization)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise DataError(
            ckpt_path,
            "model",
            f"checkpoint does not match options.json/event.yaml: {str(exc).splitlines()[0]}",
        ) from None
    device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    if gpu and device.type == "cpu":
        logger.warning("--gpu given but CUDA is not available: running on the CPU")
    model.to(device).eval()
    return LoadedRun(run, model, options, topology, normalization, ckpt_path, device)


def predict_arrays(loaded: LoadedRun, batch: dict, *, output_vectors: bool = False) -> dict[str, np.ndarray]:
    """Run the network + greedy decoding on one batch (CPU tensors) → numpy arrays:
    assignment (B, P, 2), assignment_probability (B, P), detection_probability (B, P),
    class:<name> (B, C) softmax; with vectors: event_vector (B, D), particle_vectors (B, P, D)."""

    def move(obj):
        if isinstance(obj, torch.Tensor):
            return obj.to(loaded.device)
        if isinstance(obj, dict):
            return {k: move(v) for k, v in obj.items()}
        return obj

    with torch.no_grad():
        outputs = loaded.model(move(batch))
        assignment, probability = decode_with_probability(
            outputs.assignment_log_probs, symmetric_daughters(loaded.topology)
        )
        out = {
            "assignment": assignment.cpu().numpy(),
            "assignment_probability": probability.cpu().numpy(),
            "detection_probability": torch.sigmoid(outputs.detection_logits.float()).cpu().numpy(),
        }
        for name, logits in outputs.classification_logits.items():
            out[f"class:{name}"] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if output_vectors:
            out["event_vector"] = outputs.event_vector.float().cpu().numpy()
            out["particle_vectors"] = outputs.particle_vectors.float().cpu().numpy()
    return out


def evaluate(
    run_dir: str | os.PathLike,
    test_file: str | os.PathLike,
    *,
    gpu: bool = False,
    batch_size: int | None = None,
    event_file: str | os.PathLike | None = None,
    chunk_size: int = 65536,
    per_event: bool = False,
) -> dict[str, Any]:
    """The `test` command's numbers for a run directory on a test file (the training file is not needed).

    Returns {"n_events", "assignment_table" {row: {event_fraction, event_efficiency, higgs_efficiency and
    their *_err σ}}, "accuracy", "accuracy_err", "auc", "auc_err" (DeLong), "pairing_efficiency_by_kappa"
    {κλ: eff}, "pairing_by_kappa" {κλ: {efficiency, err, correct, events}}, "checkpoint", "test_file"};
    per_event adds "events": per-event arrays (pairing_correct, two_higgs, kappa, labels, scores).
    """
    from spanet2.training import metrics as M
    from spanet2.training.dataset import iter_test_batches

    loaded = load_run(run_dir, gpu=gpu, event_file=event_file)
    batch_size = batch_size or loaded.options.batch_size
    preds, targets, n_jets, labels, scores, kappas = [], [], [], [], [], []
    for batch, truth in iter_test_batches(
        test_file, loaded.topology, loaded.normalization, batch_size=batch_size, chunk_size=chunk_size
    ):
        out = predict_arrays(loaded, batch)
        preds.append(out["assignment"].reshape(len(out["assignment"]), -1))  # (B, 2P)
        targets.append(truth["targets"].reshape(len(truth["targets"]), -1))  # (B, 2P)
        n_jets.append(truth["n_jets"])
        if "class:EVENT/signal" in out and "EVENT/signal" in truth.get("classifications", {}):
            labels.append(truth["classifications"]["EVENT/signal"])
            scores.append(
                out["class:EVENT/signal"][:, 1]
                if out["class:EVENT/signal"].shape[1] > 1
                else out["class:EVENT/signal"][:, 0]
            )
        if truth.get("kappa") is not None:
            kappas.append(truth["kappa"])
    if not preds:
        raise DataError(test_file, None, "no events in the test file")
    pred, target, jets = np.concatenate(preds), np.concatenate(targets), np.concatenate(n_jets)
    table = M.assignment_table(pred, target, jets)
    result: dict[str, Any] = {
        "test_file": str(test_file),
        "checkpoint": str(loaded.checkpoint),
        "n_events": int(len(pred)),
        "assignment_table": {row: _table_row(table, row) for row in ("=4", "=5", ">=6", "Total")},
        "assignment_table_markdown": M.format_assignment_table(table),
    }
    y = s = kappa = None
    if labels:
        y, s = np.concatenate(labels), np.concatenate(scores)
        valid = y >= 0
        result.update({k: _finite(v) for k, v in M.classification_metrics(y[valid], s[valid]).items()})
    if kappas:
        kappa = np.concatenate(kappas)
        by_kappa = M.pairing_by_kappa_with_errors(pred, target, kappa)
        result["pairing_efficiency_by_kappa"] = {k: _finite(v["efficiency"]) for k, v in by_kappa.items()}
        result["pairing_by_kappa"] = by_kappa  # with the Wilson σ and the counts
    if per_event:  # not JSON: for paired comparisons on the same events
        result["events"] = {"pairing_correct": M.higgs_correct(pred, target).all(axis=1),
                            "two_higgs": (target >= 0).all(axis=1), "kappa": kappa, "labels": y, "scores": s}
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """Markdown: the assignment table, ACC/AUC and the pairing efficiency per κλ."""
    lines = [
        f"# {result['test_file']} ({result['n_events']} events; {result['checkpoint']})",
        "",
        result["assignment_table_markdown"].rstrip(),
        "",
    ]
    if "accuracy" in result:
        acc, auc = result["accuracy"], result.get("auc")
        lines.append(f"ACC = {fmt_pm(acc, result.get('accuracy_err'), 4)}" if acc is not None else "ACC = n/a")
        lines.append(f"AUC = {fmt_pm(auc, result.get('auc_err'), 4)} (± DeLong σ)" if auc is not None
                     else "AUC = n/a (one class only)")
        lines.append("")
    if result.get("pairing_by_kappa"):
        lines += ["| kappa_lambda | pairing efficiency | 2h events |", "|---:|---:|---:|"]
        for kappa, v in result["pairing_by_kappa"].items():
            lines.append(f"| {kappa} | {fmt_pm(v['efficiency'], v['err'], 4)} | {v['events']} |")
    return "\n".join(lines) + "\n"
