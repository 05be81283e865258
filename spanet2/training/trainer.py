"""Train SPANet2 (single process, DDP or DeepSpeed) into a log directory; inference.py loads a run, evaluation.py tests it."""

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

from spanet2.errors import ConfigError, DataError
from spanet2.events.topology import EventTopology, load_topology
from spanet2.provenance import write_provenance
from spanet2.training import logdir
from spanet2.training.engines import Engine, make_engine
from spanet2.training.evaluation import evaluate, finite_or_none, format_evaluation, table_row
from spanet2.training.inference import (
    LoadedRun,
    decode_with_probability,
    load_run,
    predict_arrays,
    symmetric_daughters,
)
from spanet2.training.options import Options, save_options

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
    """Train SPANet2 and write `<log_dir>/<name>/version_<n>/` (training/logdir.py).

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
    """val_pairing_efficiency (2h events with every particle right, symmetry-aware), val_accuracy, val_auc, and
    the σs val_pairing_efficiency_err (Wilson) and val_auc_err (DeLong) that the learning curves draw."""
    from spanet2.training import metrics as M

    out: dict[str, Any] = {}
    if "assignment" in arrays and "targets" in truth and arrays["assignment"].shape[1:] == (2, 2):
        pred = arrays["assignment"].reshape(len(arrays["assignment"]), -1)  # (N, 2P)
        target = truth["targets"].reshape(len(truth["targets"]), -1)  # (N, 2P)
        table = M.assignment_table(pred, target, truth["n_jets"])
        total = table_row(table, "Total")
        out["val_pairing_efficiency"] = finite_or_none(total.get("event_efficiency"))
        out["val_pairing_efficiency_err"] = finite_or_none(total.get("event_efficiency_err"))  # Wilson
        out["val_higgs_efficiency"] = finite_or_none(total.get("higgs_efficiency"))
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
            metrics = M.classification_metrics(labels[valid], score)  # ACC ± binomial, AUC ± DeLong (None: one class)
            out[f"val_accuracy{suffix}"] = finite_or_none(metrics["accuracy"])
            out[f"val_auc{suffix}"] = finite_or_none(metrics["auc"])
            out[f"val_auc{suffix}_err"] = finite_or_none(metrics["auc_err"])
    return out


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
