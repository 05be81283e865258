"""Read, write and validate SPANet-layout HDF5 files in bounded-memory chunks (plain names written, SpecialKey.* read)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spanet2.atomic import atomic_path
from spanet2.errors import DataError
from spanet2.events.layout import (
    EXTRA_GROUPS,
    INPUTS,
    SPECIAL_KEY_SPELLINGS,
    WEIGHTS,
    canonical_path,
    first_mask_path,
    group_of,
    input_path,
    mask_path,
    resolve_dataset,
    target_path,
)

__all__ = [
    "SPECIAL_KEY_SPELLINGS",
    "EXTRA_GROUPS",
    "canonical_path",
    "open_hdf5",
    "resolve_dataset",
    "list_datasets",
    "read_datasets",
    "iter_chunks",
    "n_events",
    "write_datasets",
    "HDF5Writer",
    "ValidationSummary",
    "validate_file",
    "first_mask_path",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 65536


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only; DataError (file, message) when it is missing or not HDF5."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    if path.is_dir():
        raise DataError(path, None, "expected an HDF5 file, found a directory")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise DataError(path, None, "not an HDF5 file (cannot be opened by h5py)") from None


def list_datasets(h5: h5py.File | h5py.Group) -> dict[str, h5py.Dataset]:
    """Every dataset in the file by canonical (plain) path, in file order."""
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found[canonical_path(name)] = obj

    h5.visititems(visit)
    return found


def _require(h5: h5py.File, file: str | os.PathLike, name: str) -> h5py.Dataset:
    ds = resolve_dataset(h5, name)
    if ds is None:
        raise DataError(file, name, "missing dataset")
    return ds


def _common_length(file: str | os.PathLike, datasets: Mapping[str, h5py.Dataset]) -> int:
    lengths = {}
    for name, ds in datasets.items():
        if ds.ndim == 0:
            raise DataError(file, name, "expected an array with one row per event, found a scalar")
        lengths[name] = ds.shape[0]
    if not lengths:
        return 0
    first_name, first = next(iter(lengths.items()))
    for name, n in lengths.items():
        if n != first:
            raise DataError(file, name, f"has {n} events but {first_name} has {first}")
    return first


def read_datasets(
    path: str | os.PathLike, names: list[str], *, start: int = 0, stop: int | None = None
) -> dict[str, np.ndarray]:
    """Read rows [start, stop) of each dataset; keys are the names as requested. DataError if missing."""
    with open_hdf5(path) as h5:
        datasets = {name: _require(h5, path, name) for name in names}
        _common_length(path, datasets)
        return {name: ds[start:stop] for name, ds in datasets.items()}


def iter_chunks(
    path: str | os.PathLike, names: list[str], chunk_size: int = DEFAULT_CHUNK
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield `(start, {name: rows[start:start+chunk_size]})` over the file; memory stays O(chunk_size)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    with open_hdf5(path) as h5:
        datasets = {name: _require(h5, path, name) for name in names}
        n = _common_length(path, datasets)
        for start in range(0, n, chunk_size):
            yield start, {name: ds[start : start + chunk_size] for name, ds in datasets.items()}


def n_events(path: str | os.PathLike, topology: Any | None = None) -> int:
    """Number of events: the first sequential input's MASK rows (topology), else the first INPUTS dataset."""
    with open_hdf5(path) as h5:
        if topology is not None:
            name = mask_path(topology.sequential_inputs[0].name)
            return int(_require(h5, path, name).shape[0])
        datasets = list_datasets(h5)
        if not datasets:
            raise DataError(path, None, "empty file: no datasets")
        mask = first_mask_path(h5, "Source")
        if mask is not None:
            return int(datasets[mask].shape[0])
        for name, ds in datasets.items():
            if group_of(name) == INPUTS and ds.ndim > 0:
                return int(ds.shape[0])
        ds = next(iter(datasets.values()))
        return int(ds.shape[0]) if ds.ndim > 0 else 0


def _attr_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)) and not (
        isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)
    ):
        return json.dumps(value, default=str, sort_keys=True)
    if value is None:
        return "null"
    return value


def write_datasets(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    *,
    attrs: Mapping[str, Any] | None = None,
    compression: str | None = None,
) -> None:
    """Write `{input_path("Source", "pt"): array, ...}` to a new HDF5 file atomically (plain group names).

    `attrs` go to the root (dicts/lists stored as JSON strings). Every array must have the same
    first dimension (the event count).
    """
    canonical = {canonical_path(k): np.asarray(v) for k, v in arrays.items()}
    lengths = {v.shape[0] if v.ndim else None for v in canonical.values()}
    if len(lengths) > 1:
        detail = ", ".join(f"{k}: {v.shape}" for k, v in canonical.items())
        raise ValueError(f"write_datasets: arrays differ in event count ({detail})")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, value in canonical.items():
            h5.create_dataset(name, data=value, compression=compression if value.ndim else None)
        for key, value in (attrs or {}).items():
            h5.attrs[key] = _attr_value(value)


class HDF5Writer:
    """Append events chunk by chunk to a new HDF5 file; renamed into place on a clean close.

    >>> with HDF5Writer("out.h5", attrs={"sqrt_s_tev": 14.0}) as w:
    ...     w.append({input_path("Source", "pt"): pt_chunk, ...})     # same keys every call
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        attrs: Mapping[str, Any] | None = None,
        compression: str | None = None,
        chunk_rows: int = DEFAULT_CHUNK,
    ):
        self.path = Path(path)
        self.attrs = dict(attrs or {})
        self.compression = compression
        self.chunk_rows = chunk_rows
        self.n_events = 0
        self._names: tuple[str, ...] | None = None
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._h5 = h5py.File(self._tmp, "w")

    def append(self, arrays: Mapping[str, np.ndarray]) -> None:
        canonical = {canonical_path(k): np.asarray(v) for k, v in arrays.items()}
        names = tuple(canonical)
        if self._names is None:
            self._names = names
            for name, value in canonical.items():
                rows = min(self.chunk_rows, max(1, value.shape[0]))
                self._h5.create_dataset(
                    name,
                    shape=(0, *value.shape[1:]),
                    maxshape=(None, *value.shape[1:]),
                    dtype=value.dtype,
                    chunks=(rows, *value.shape[1:]),
                    compression=self.compression,
                )
        elif set(names) != set(self._names):
            raise ValueError(f"HDF5Writer.append: columns {sorted(names)} differ from the first call's")
        n = {v.shape[0] for v in canonical.values()}
        if len(n) != 1:
            raise ValueError("HDF5Writer.append: arrays differ in event count")
        rows = n.pop()
        for name, value in canonical.items():
            ds = self._h5[name]
            if value.shape[1:] != ds.shape[1:]:
                raise ValueError(
                    f"HDF5Writer.append: {name} has shape {value.shape}, expected (*, {ds.shape[1:]})"
                )
            ds.resize(self.n_events + rows, axis=0)
            ds[self.n_events :] = value
        self.n_events += rows

    def close(self, *, failed: bool = False) -> None:
        """Write the attributes and rename the file into place (`failed=True`: remove it instead)."""
        if self._h5 is None:
            return
        try:
            if not failed:
                for key, value in self.attrs.items():
                    self._h5.attrs[key] = _attr_value(value)
        except BaseException:
            failed = True
            raise
        finally:
            self._h5.close()
            self._h5 = None
            if failed:
                aborted = RuntimeError("HDF5Writer aborted")
                self._ctx.__exit__(RuntimeError, aborted, None)
        if not failed:  # (on failure atomic_path removed the temporary file above)
            self._ctx.__exit__(None, None, None)

    def __enter__(self) -> HDF5Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


# ---- validation ------------------------------------------------------------------------------
@dataclass
class ValidationSummary:
    """What a valid file holds: event count, padded lengths per sequential input, class counts."""

    path: str
    n_events: int
    padded_lengths: dict[str, int] = field(default_factory=dict)
    n_targets: int = 0
    class_counts: dict[str, dict[int, int]] = field(default_factory=dict)

    def one_line(self) -> str:
        lengths = ", ".join(f"{k} {v} slots" for k, v in self.padded_lengths.items())
        classes = "; ".join(
            f"{k.split('/')[-1]} " + " ".join(f"{c}:{n}" for c, n in sorted(v.items()))
            for k, v in self.class_counts.items()
        )
        return f"OK: {self.path}: {self.n_events} events, {lengths}, {self.n_targets} targets" + (
            f", classes {classes}" if classes else ""
        )


def _check_rank(file, name: str, ds: h5py.Dataset, expected: tuple[int, ...], what: str) -> None:
    if ds.ndim not in expected:
        raise DataError(file, name, f"wrong rank: expected {what}, found shape {ds.shape}")


def _first_bad(bad: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(bad)[0])


def validate_file(
    topology: Any, path: str | os.PathLike, *, chunk_size: int = DEFAULT_CHUNK
) -> ValidationSummary:
    """Check `path` against `topology` (EventTopology); raise DataError naming file, dataset and event.

    Checks: datasets present (MASK, features, targets, classifications, regressions), ranks, one
    event count throughout, finite features under a true MASK (globals everywhere), target indices
    in [−1, J) pointing at unmasked jets and no jet used twice in one event, class labels ≥ −1,
    extra groups (WEIGHTS/TRUTH/GLOBAL_EXTRA) of the same length, finite weights.
    """
    file = str(path)
    with open_hdf5(path) as h5:
        all_datasets = list_datasets(h5)
        if not all_datasets:
            raise DataError(file, None, "empty file: no datasets")
        # ---- structure (no data read) ----
        first = topology.sequential_inputs[0].name
        masks: dict[str, h5py.Dataset] = {}
        features: dict[str, h5py.Dataset] = {}
        global_features: dict[str, h5py.Dataset] = {}
        for source in topology.inputs:
            if source.kind == "GLOBAL":
                for feat in source.features:
                    name = input_path(source.name, feat.name)
                    ds = _require(h5, file, name)
                    if not (ds.ndim == 1 or (ds.ndim == 2 and ds.shape[1] == 1)):
                        raise DataError(
                            file, name, f"wrong rank: expected (N,) for a global feature, found {ds.shape}"
                        )
                    global_features[name] = ds
                continue
            mname = mask_path(source.name)
            mask = resolve_dataset(h5, mname)
            if mask is None:
                raise DataError(file, mname, "missing MASK dataset (bool (N, J) padding mask required)")
            _check_rank(file, mname, mask, (2,) if source.kind == "SEQUENTIAL" else (2, 3), "(N, J)")
            if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
                raise DataError(file, mname, f"expected a bool mask, found dtype {mask.dtype}")
            masks[source.name] = mask
            for feat in source.features:
                name = input_path(source.name, feat.name)
                ds = _require(h5, file, name)
                if ds.shape != mask.shape:
                    raise DataError(file, name, f"shape mismatch: {ds.shape} but {mname} is {mask.shape}")
                if not (np.issubdtype(ds.dtype, np.number) or ds.dtype == np.bool_):
                    raise DataError(file, name, f"expected a numeric feature, found dtype {ds.dtype}")
                features[name] = ds
        n = masks[first].shape[0]
        for name, ds in {
            **{mask_path(k): v for k, v in masks.items()},
            **features,
            **global_features,
        }.items():
            if ds.shape[0] != n:
                raise DataError(file, name, f"has {ds.shape[0]} events but {mask_path(first)} has {n}")
        if n == 0:
            raise DataError(file, mask_path(first), "empty file: 0 events")

        targets: dict[str, h5py.Dataset] = {}
        target_source: dict[str, str] = {}
        for p in topology.particles:
            for d in p.daughters:
                name = target_path(p.name, d)
                ds = _require(h5, file, name)
                _check_rank(file, name, ds, (1,), "(N,) jet indices")
                if not np.issubdtype(ds.dtype, np.integer):
                    raise DataError(file, name, f"expected integer jet indices, found dtype {ds.dtype}")
                if ds.shape[0] != n:
                    raise DataError(file, name, f"has {ds.shape[0]} events but the inputs have {n}")
                targets[name] = ds
                target_source[name] = topology.daughter_source(p.name, d)
        classes: dict[str, h5py.Dataset] = {}
        for name in topology.classification_paths():
            ds = _require(h5, file, name)
            _check_rank(file, name, ds, (1,), "(N,) class labels")
            if not np.issubdtype(ds.dtype, np.integer):
                raise DataError(file, name, f"expected integer class labels, found dtype {ds.dtype}")
            if ds.shape[0] != n:
                raise DataError(file, name, f"has {ds.shape[0]} events but the inputs have {n}")
            classes[name] = ds
        for name in topology.regression_paths():
            ds = _require(h5, file, name)
            _check_rank(file, name, ds, (1,), "(N,) regression targets")
            if not np.issubdtype(ds.dtype, np.floating):
                raise DataError(file, name, f"expected floating regression targets, found dtype {ds.dtype}")
            if ds.shape[0] != n:
                raise DataError(file, name, f"has {ds.shape[0]} events but the inputs have {n}")
        weights: dict[str, h5py.Dataset] = {}
        for name, ds in all_datasets.items():
            if name.split("/")[0] in EXTRA_GROUPS:
                if ds.ndim == 0 or ds.shape[0] != n:
                    raise DataError(file, name, f"shape {ds.shape}: expected {n} rows like the inputs")
                if group_of(name) == WEIGHTS and np.issubdtype(ds.dtype, np.floating):
                    weights[name] = ds

        # ---- contents, chunk by chunk ----
        class_counts: dict[str, dict[int, int]] = {name: {} for name in classes}
        by_source: dict[str, list[str]] = {}
        for name, src in target_source.items():
            by_source.setdefault(src, []).append(name)
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            mask_chunks = {k: np.asarray(v[start:stop]).astype(bool, copy=False) for k, v in masks.items()}
            for name, ds in features.items():
                values = ds[start:stop]
                if np.issubdtype(values.dtype, np.floating):
                    src = name.split("/")[1]
                    bad = mask_chunks[src] & ~np.isfinite(values)
                    if bad.any():
                        event, jet = _first_bad(bad)[:2]
                        raise DataError(
                            file,
                            name,
                            f"non-finite value {values[event, jet]} under a true MASK "
                            f"at event {start + event}, jet {jet}",
                        )
            for name, ds in {**global_features, **weights}.items():
                values = ds[start:stop]
                if np.issubdtype(values.dtype, np.floating):
                    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
                    if bad.any():
                        raise DataError(
                            file, name, f"non-finite value at event {start + int(np.argmax(bad))}"
                        )
            for src, names in by_source.items():
                mask = mask_chunks[src]
                n_slots = mask.shape[1]
                stacked = np.stack([targets[t][start:stop] for t in names], axis=1).astype(np.int64)  # (C, K)
                for k, name in enumerate(names):
                    idx = stacked[:, k]
                    bad = idx < -1
                    if bad.any():
                        e = int(np.argmax(bad))
                        raise DataError(file, name, f"jet index {idx[e]} < -1 at event {start + e}")
                    bad = idx >= n_slots
                    if bad.any():
                        e = int(np.argmax(bad))
                        raise DataError(
                            file,
                            name,
                            f"jet index {idx[e]} >= padded length {n_slots} of "
                            f"{INPUTS}/{src} at event {start + e}",
                        )
                    valid = idx >= 0
                    hits = np.zeros(len(idx), dtype=bool)
                    hits[valid] = mask[np.nonzero(valid)[0], idx[valid]]
                    bad = valid & ~hits
                    if bad.any():
                        e = int(np.argmax(bad))
                        raise DataError(
                            file,
                            name,
                            f"jet index {idx[e]} points at a masked (padding) jet at event {start + e}",
                        )
                ordered = np.sort(stacked, axis=1)
                repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)  # (C, K-1)
                if repeated.any():
                    e = int(np.argmax(repeated.any(axis=1)))
                    jet = int(ordered[e][1:][repeated[e]][0])
                    users = [names[k] for k in range(len(names)) if stacked[e, k] == jet]
                    raise DataError(
                        file,
                        users[0],
                        f"jet {jet} is used twice in event {start + e} (also by {', '.join(users[1:])})",
                    )
            for name, ds in classes.items():
                labels = ds[start:stop]
                bad = labels < -1
                if bad.any():
                    e = int(np.argmax(bad))
                    raise DataError(file, name, f"class label {labels[e]} < -1 at event {start + e}")
                values, counts = np.unique(labels, return_counts=True)
                for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                    class_counts[name][v] = class_counts[name].get(v, 0) + c
        return ValidationSummary(
            path=file,
            n_events=n,
            padded_lengths={k: int(v.shape[1]) for k, v in masks.items()},
            n_targets=len(targets),
            class_counts=class_counts,
        )
