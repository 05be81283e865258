"""`spanet2 predict`: predicted assignments, probabilities, scores (and embeddings) for every event, to HDF5."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.errors import DataError, InputError
from spanet2.events.hdf5 import HDF5Writer, list_datasets, open_hdf5
from spanet2.events.hdf5 import n_events as count_events
from spanet2.events.layout import (
    CLASSIFICATIONS,
    EMBEDDINGS,
    REGRESSIONS,
    TARGETS,
    classification_path,
    decode_inputs,
    embedding_path,
    group_of,
    input_path,
    mask_path,
    resolve_dataset,
    target_path,
)
from spanet2.provenance import provenance

__all__ = ["predict", "REPLACED_GROUPS"]

logger = logging.getLogger(__name__)

# groups of the input that the predictions replace (everything else with one row per event is copied)
REPLACED_GROUPS = (TARGETS, CLASSIFICATIONS, REGRESSIONS, EMBEDDINGS)


def _copied_datasets(path: str | os.PathLike, n_events: int) -> list[str]:
    """Canonical paths of the input's per-event datasets to copy through (INPUTS, WEIGHTS, TRUTH, ...)."""
    with open_hdf5(path) as h5:
        names = []
        for name, ds in list_datasets(h5).items():
            if group_of(name) in REPLACED_GROUPS:
                continue
            if ds.ndim == 0 or ds.shape[0] != n_events:
                logger.warning("%s: %s has no per-event rows (shape %s): not copied", path, name, ds.shape)
                continue
            names.append(name)
    return names


def predict(
    run_dir: str | os.PathLike,
    input_file: str | os.PathLike,
    output_file: str | os.PathLike,
    *,
    gpu: bool = False,
    batch_size: int | None = None,
    chunk_size: int = 65536,
    output_vectors: bool = False,
    event_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the predictions HDF5 (events/layout.py) for `input_file`, chunk by chunk, atomically.

    Output: the input's INPUTS and extra groups (WEIGHTS, TRUTH, GLOBAL_EXTRA, ...) copied;
    `TARGETS/<p>/<d>` predicted jet indices (int64, −1 none, symmetric daughters ascending);
    `TARGETS/<p>/assignment_probability (N,)`, `TARGETS/<p>/detection_probability (N,)`;
    `CLASSIFICATIONS/<head> (N, C)` softmax and `CLASSIFICATIONS/<head>_probability (N,)` (class 1);
    with `output_vectors`: `EMBEDDINGS/EVENT (N, D)`, `EMBEDDINGS/<p>/PARTICLE (N, D)`.
    Returns {"n_events", "output_file"}.
    """
    from spanet2.training.inference import load_run, predict_arrays

    if chunk_size < 1:
        raise InputError("--chunk_size", None, f"expected a positive integer, got {chunk_size}")
    loaded = load_run(run_dir, gpu=gpu, event_file=event_file)
    topology = loaded.topology
    batch_size = batch_size or loaded.options.batch_size
    if batch_size < 1:
        raise InputError("--batch_size", None, f"expected a positive integer, got {batch_size}")
    if Path(output_file).resolve() == Path(input_file).resolve():
        raise InputError(output_file, None, "the output file must differ from the input file")
    needed = topology.mask_paths() + topology.feature_paths()
    n_total = count_events(input_file, topology)
    if n_total == 0:
        raise DataError(input_file, None, "no events to predict")
    copied = _copied_datasets(input_file, n_total)
    missing = [p for p in needed if p not in copied]
    if missing:
        raise DataError(input_file, missing[0], "missing dataset required by the event topology")
    attrs = {
        "spanet2_predictions": json.dumps(
            {
                "run_dir": str(Path(run_dir).resolve()),
                "checkpoint": str(loaded.checkpoint),
                "input_file": str(Path(input_file).resolve()),
            }
        ),
        "provenance": provenance(run_dir=str(run_dir), input_file=str(input_file)),
    }
    particles = list(topology.particles)
    done = 0
    with (
        HDF5Writer(output_file, attrs=attrs, chunk_rows=min(chunk_size, n_total)) as writer,
        open_hdf5(input_file) as h5,
        _Progress(progress, n_total) as advance,
    ):
        datasets = {name: _dataset(h5, name) for name in copied}
        widths = _check_padding(input_file, datasets, topology, loaded.normalization)
        for start in range(0, n_total, chunk_size):
            stop = min(start + chunk_size, n_total)
            chunk = {name: ds[start:stop] for name, ds in datasets.items()}
            pieces = []
            for b0 in range(0, stop - start, batch_size):
                sub = {k: v[b0 : b0 + batch_size] for k, v in chunk.items() if k in needed}
                batch = _batch_from_arrays(input_file, sub, topology, widths, start + b0)
                pieces.append(predict_arrays(loaded, batch, output_vectors=output_vectors))
            out = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
            rows = dict(chunk)
            for p, particle in enumerate(particles):
                for d, daughter in enumerate(particle.daughters):
                    rows[target_path(particle.name, daughter)] = out["assignment"][:, p, d].astype(np.int64)
                rows[target_path(particle.name, "assignment_probability")] = out["assignment_probability"][:, p]
                rows[target_path(particle.name, "detection_probability")] = out["detection_probability"][:, p]
                if output_vectors:
                    rows[embedding_path(particle.name, "PARTICLE")] = out["particle_vectors"][:, p]
            for key, probs in out.items():
                if key.startswith("class:"):
                    head = key.removeprefix("class:")
                    rows[classification_path(head)] = probs.astype(np.float32)
                    rows[classification_path(f"{head}_probability")] = probs[:, min(1, probs.shape[1] - 1)]
            if output_vectors:
                rows[embedding_path("EVENT")] = out["event_vector"]
            writer.append(rows)
            done = stop
            advance(stop - start)
    logger.info("wrote %d events to %s", done, output_file)
    return {"n_events": done, "output_file": str(output_file)}


def _check_padding(path, datasets: dict, topology, normalization) -> dict[str, int]:
    """Jet slots per sequential input the network expects; DataError when the file's padding differs
    (unless the network was trained with limit_to_num_jets, then the file is cut to that)."""
    limit = int(getattr(normalization, "limit_to_num_jets", 0) or 0)
    widths = {}
    for source in topology.sequential_inputs:
        name = mask_path(source.name)
        mask = datasets[name]
        if mask.ndim != 2:
            raise DataError(path, name, f"expected a (N, J) jet mask, found shape {mask.shape}")
        expected = limit or int(normalization.n_jets.get(source.name, mask.shape[1]))
        if not limit and mask.shape[1] != expected:
            raise DataError(
                path,
                name,
                f"the file pads to {mask.shape[1]} jets but the network was trained "
                f"with {expected} (same padding expected)",
            )
        for feature in source.features:
            fname = input_path(source.name, feature.name)
            if datasets[fname].shape != mask.shape:
                raise DataError(
                    path, fname, f"shape {datasets[fname].shape} differs from {name} {mask.shape}"
                )
        widths[source.name] = expected
    return widths


def _batch_from_arrays(
    path, arrays: dict[str, np.ndarray], topology, widths: dict[str, int], first: int
) -> dict:
    """Model batch (CPU tensors) from raw per-event arrays keyed by dataset path (no targets needed).

    sequential: name → (B, J, F) float32 (features in YAML order, zero on padding); sequential_mask (B, J) bool;
    global: name → (B, F) float32. Non-finite features on real jets are a DataError (file, dataset, event).
    """
    import torch

    sequential, masks, globals_ = decode_inputs(path, arrays, topology, widths, first)
    return {
        "sequential": {k: torch.from_numpy(v) for k, v in sequential.items()},
        "sequential_mask": {k: torch.from_numpy(v) for k, v in masks.items()},
        "global": {k: torch.from_numpy(v) for k, v in globals_.items()},
    }


def _dataset(h5, name: str):
    ds = resolve_dataset(h5, name)
    if ds is None:  # listed a moment ago: only a concurrent rewrite of the file gets here
        raise DataError(h5.filename, name, "dataset vanished while reading")
    return ds


class _Progress:
    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self._bar = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        )
        self._bar.start()
        task = self._bar.add_task("predict", total=self.total)
        return lambda n: self._bar.update(task, advance=n)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False
