"""The Zarr event store: per-sample, per-event columns (weights, labels, method scores) that stats reads lazily."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs
import zarr.errors
import zarr.storage

from spanet2.atomic import atomic_path
from spanet2.errors import DataError, InputError
from spanet2.events.hdf5 import DEFAULT_CHUNK, open_hdf5
from spanet2.events.layout import (
    INPUTS,
    JET_MASK_PATH,
    JET_SOURCE,
    KAPPA_INPUT_PATH,
    KAPPA_TERMS_PATH,
    MASK,
    SIGNAL_LABEL_PATH,
    WEIGHT_PATH,
    first_mask_path,
    resolve_dataset,
)
from spanet2.provenance import provenance

__all__ = [
    "EventStoreWriter",
    "EventStore",
    "open_store",
    "ConvertSummary",
    "convert_hdf5_to_store",
    "sample_name_for_label",
    "EVENT_COLUMN_SOURCES",
    "find_event_datasets",
    "event_columns",
    "STORE_CHUNK",
]

log = logging.getLogger(__name__)

STORE_CHUNK = 262144
METHOD_COLUMNS = ("score", "m_hh", "pairing", "features")


def _jsonable(value: Any) -> Any:
    """Zarr attributes are JSON: numpy scalars/arrays → Python, anything else unknown → str."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def sample_name_for_label(label: int) -> str:
    """1 → "signal", 0 → "background", −1 → "unlabelled", k ≥ 2 → "class_k"."""
    return {1: "signal", 0: "background", -1: "unlabelled"}.get(int(label), f"class_{int(label)}")


class EventStoreWriter:
    """Build an event store under a temporary directory; rename it into place on a clean close.

    >>> with EventStoreWriter("events.zarr", attrs={"sqrt_s_tev": 14.0}) as w:
    ...     w.append("signal", {"weight": w_fb, "label": lab, "spanet/score": s})

    Every `append` to one sample must give the same columns (so they stay aligned, length N);
    a column name may contain "/" (`<method>/score`). Rows are copied into one preallocated
    buffer of `chunk_size` rows per column and written a whole chunk at a time, so memory is
    O(chunk_size × row bytes) per sample whatever the total size.
    Root attributes always include `lumi_unit: "fb"`, `sqrt_s_tev` (None unless given) and
    `provenance`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        attrs: Mapping[str, Any],
        chunk_size: int = STORE_CHUNK,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise InputError(self.path, None, "output already exists (use --overwrite to replace it)")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.chunk_size = int(chunk_size)
        self.attrs = {"sqrt_s_tev": None, "lumi_unit": "fb", **dict(attrs)}
        self.attrs.setdefault("provenance", provenance())
        self._sample_attrs: dict[str, dict[str, Any]] = {}
        self._columns: dict[str, tuple[str, ...]] = {}
        self._buffers: dict[str, dict[str, np.ndarray]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._arrays: dict[str, dict[str, Any]] = {}
        #: Per sample: events appended and their Σ weight (fb) through `append_by_label`.
        self.n_events: dict[str, int] = {}
        self.sum_weight: dict[str, float] = {}
        self._ctx = atomic_path(self.path, is_dir=True)
        self._tmp = self._ctx.__enter__()
        self._root = zarr.open_group(zarr.storage.LocalStore(self._tmp), mode="w", zarr_format=3)
        self._closed = False

    # ---- public API ----
    def append(self, sample: str, columns: Mapping[str, np.ndarray]) -> None:
        """Append rows to `sample`: `{column: (n, ...) array}`, same columns and n for every key."""
        if self._closed:
            raise RuntimeError("EventStoreWriter is closed")
        if not sample or "/" in sample:
            raise ValueError(f"invalid sample name {sample!r}")
        arrays = {k.strip("/"): np.asarray(v) for k, v in columns.items()}
        lengths = {k: (v.shape[0] if v.ndim else -1) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1 or -1 in lengths.values():
            raise ValueError(f"append({sample!r}): columns differ in length or are scalars: {lengths}")
        names = tuple(sorted(arrays))
        if sample not in self._columns:
            self._columns[sample] = names
            self._arrays[sample] = {name: self._create(sample, name, arrays[name]) for name in names}
            # one chunk of rows per column, allocated once and reused: no allocation churn per append
            self._buffers[sample] = {
                name: np.empty(
                    (self.chunk_size, *arrays[name].shape[1:]), dtype=self._arrays[sample][name].dtype
                )
                for name in names
            }
            self._buffered_rows[sample] = 0
        elif names != self._columns[sample]:
            raise ValueError(
                f"append({sample!r}): columns {list(names)} differ from the first append's "
                f"{list(self._columns[sample])}"
            )
        for name in names:
            expected = self._arrays[sample][name]
            if arrays[name].shape[1:] != expected.shape[1:]:
                raise ValueError(
                    f"append({sample!r}): {name} rows have shape {arrays[name].shape[1:]}, "
                    f"expected {expected.shape[1:]}"
                )
        n = next(iter(lengths.values()))
        buffers = self._buffers[sample]
        done = 0
        while done < n:  # copy into the fixed chunk buffers; write each one as it fills
            fill = self._buffered_rows[sample]
            take = min(n - done, self.chunk_size - fill)
            for name in names:
                buffers[name][fill : fill + take] = arrays[name][done : done + take]
            self._buffered_rows[sample] = fill + take
            done += take
            if self._buffered_rows[sample] == self.chunk_size:
                self._flush(sample)

    def append_by_label(
        self, labels: np.ndarray, columns: Mapping[str, np.ndarray], *, signal_only: tuple[str, ...] = ()
    ) -> None:
        """Append each row to the sample of its label (`sample_name_for_label`), counting events and Σ `weight`
        per sample in `n_events` / `sum_weight`; the columns named in `signal_only` go to the signal sample only."""
        for value in np.unique(labels).tolist():
            sample = sample_name_for_label(value)
            rows = labels == value
            part = {k: v[rows] for k, v in columns.items() if value == 1 or k not in signal_only}
            self.append(sample, part)
            self.n_events[sample] = self.n_events.get(sample, 0) + int(rows.sum())
            self.sum_weight[sample] = self.sum_weight.get(sample, 0.0) + float(part["weight"].sum())

    def set_sample_attrs(self, sample: str, attrs: Mapping[str, Any]) -> None:
        """Attributes of one sample group (e.g. `cross_section_fb`, `kappa_values`)."""
        self._sample_attrs.setdefault(sample, {}).update(attrs)

    def close(self) -> None:
        """Flush buffers, write attributes, rename the store into place."""
        if self._closed:
            return
        try:
            for sample in list(self._buffers):
                self._flush(sample)
            self._buffers.clear()
            for sample, attrs in self._sample_attrs.items():
                group = self._root.require_group(sample)
                group.attrs.update(_jsonable(attrs))
            self._root.attrs.update(_jsonable(self.attrs))
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop everything written so far (nothing is left at `path`)."""
        if self._closed:
            return
        self._closed = True
        aborted = RuntimeError("EventStoreWriter aborted")
        self._ctx.__exit__(RuntimeError, aborted, None)

    def __enter__(self) -> EventStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ---- internals ----
    def _create(self, sample: str, name: str, like: np.ndarray):
        group = self._root.require_group(sample)
        parts = name.split("/")
        for part in parts[:-1]:
            group = group.require_group(part)
        dtype = like.dtype
        if dtype.kind in "OUS":
            raise ValueError(f"column {name!r}: string/object columns are not supported ({dtype})")
        return group.create_array(
            parts[-1],
            shape=(0, *like.shape[1:]),
            dtype=dtype,
            chunks=(self.chunk_size, *like.shape[1:]),
            compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        )

    def _flush(self, sample: str) -> None:
        rows = self._buffered_rows[sample]
        if rows == 0:
            return
        for name, buffer in self._buffers[sample].items():
            self._arrays[sample][name].append(buffer[:rows], axis=0)
        self._buffered_rows[sample] = 0


class EventStore:
    """Read side of an event store: samples, columns, lazily as Dask arrays or eagerly as numpy."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(self.path, None, "event store not found")
        try:
            self._root = zarr.open_group(zarr.storage.LocalStore(self.path, read_only=True), mode="r")
        except (zarr.errors.BaseZarrError, FileNotFoundError, ValueError, OSError, KeyError) as exc:
            raise DataError(self.path, None, f"not a Zarr event store ({type(exc).__name__})") from None

    @property
    def samples(self) -> list[str]:
        return sorted(self._root.group_keys())

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._root.attrs)

    def _group(self, sample: str):
        if sample not in self.samples:
            raise DataError(
                self.path, sample, f"no such sample (samples: {', '.join(self.samples) or 'none'})"
            )
        return self._root[sample]

    def sample_attrs(self, sample: str) -> dict[str, Any]:
        return dict(self._group(sample).attrs)

    def columns(self, sample: str) -> list[str]:
        """Every column of `sample`, nested ones as `<method>/<name>`."""
        out: list[str] = []

        def walk(group, prefix: str) -> None:
            for name in sorted(group.array_keys()):
                out.append(prefix + name)
            for name in sorted(group.group_keys()):
                walk(group[name], prefix + name + "/")

        walk(self._group(sample), "")
        return out

    def methods(self, sample: str) -> list[str]:
        """Subgroups of `sample` holding per-method columns (score, m_hh, pairing, features)."""
        group = self._group(sample)
        return sorted(
            name for name in group.group_keys() if any(k in METHOD_COLUMNS for k in group[name].array_keys())
        )

    def array(self, sample: str, column: str):
        group = self._group(sample)
        try:
            node = group[column]
        except KeyError:
            node = None
        if not isinstance(node, zarr.Array):
            raise DataError(
                self.path,
                f"{sample}/{column}",
                f"missing column (columns: {', '.join(self.columns(sample))})",
            )
        return node

    def n_events(self, sample: str) -> int:
        cols = self.columns(sample)
        return int(self.array(sample, cols[0]).shape[0]) if cols else 0

    def dask(self, sample: str, column: str):
        """The column as a lazy dask.array (chunks = the store's chunks)."""
        import dask.array as da

        self.array(sample, column)  # existence check with a good error
        return da.from_zarr(str(self.path), component=f"{sample}/{column}")

    def numpy(self, sample: str, column: str) -> np.ndarray:
        return self.array(sample, column)[...]


def open_store(path: str | os.PathLike) -> EventStore:
    """Open an event store read-only; DataError when `path` is missing or not a Zarr group."""
    return EventStore(path)


# ---- HDF5 → store ----------------------------------------------------------------------------
@dataclass
class ConvertSummary:
    """What `convert_hdf5_to_store` wrote: events per sample, where weights came from."""

    source: str
    store: str
    n_events: int
    samples: dict[str, int] = field(default_factory=dict)
    weight_source: str = "unit"
    kappa_source: str | None = None

    def one_line(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in sorted(self.samples.items()))
        return f"wrote {self.store}: {self.n_events} events ({per}); weights from {self.weight_source}" + (
            f"; kappa_input from {self.kappa_source}" if self.kappa_source else ""
        )


def _hdf5_attrs(h5) -> dict[str, Any]:
    out = {}
    for key, value in h5.attrs.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = _jsonable(value)
    return out


#: The per-event columns every store sample carries from its HDF5 file: column → (dataset, rank).
EVENT_COLUMN_SOURCES: dict[str, tuple[str, int]] = {
    "label": (SIGNAL_LABEL_PATH, 1),
    "kappa_input": (KAPPA_INPUT_PATH, 1),
    "weight": (WEIGHT_PATH, 1),
    "kappa_terms": (KAPPA_TERMS_PATH, 2),
}


def find_event_datasets(h5, h5_path: str | os.PathLike, n: int, mask_name: str) -> dict[str, Any]:
    """The datasets of EVENT_COLUMN_SOURCES present in `h5`, checked (rank, N rows, integer labels)."""
    found = {}
    for column, (name, rank) in EVENT_COLUMN_SOURCES.items():
        ds = resolve_dataset(h5, name)
        if ds is None:
            continue
        shape_ok = ds.ndim == rank or (column == "kappa_input" and ds.ndim == 2 and ds.shape[1] == 1)
        if column == "kappa_terms":
            shape_ok = ds.ndim == 2 and ds.shape[1] == 3
        if not shape_ok:
            raise DataError(h5_path, name, f"unexpected shape {ds.shape} for {column}")
        if ds.shape[0] != n:
            raise DataError(h5_path, name, f"has {ds.shape[0]} events but {mask_name} has {n}")
        if column == "label" and not np.issubdtype(ds.dtype, np.integer):
            raise DataError(h5_path, name, f"expected integer class labels, found dtype {ds.dtype}")
        found[column] = ds
    return found


def event_columns(found: Mapping[str, Any], mask: np.ndarray, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows [start, stop) of the per-event columns (all but `label`, which each builder checks its way).

    found: `find_event_datasets`'s datasets; mask: (n, J) bool jets of these rows. Returns `n_jets int16`,
    `weight float64 fb` (1.0 without WEIGHTS), and `kappa_input float32` and `kappa_terms (n, 3) float64 fb`
    when the file has them.
    """
    n = stop - start
    cols: dict[str, np.ndarray] = {"n_jets": mask.sum(axis=1).astype(np.int16)}
    if "weight" in found:
        cols["weight"] = np.asarray(found["weight"][start:stop], dtype=np.float64)
    else:
        cols["weight"] = np.ones(n, dtype=np.float64)
    if "kappa_terms" in found:
        cols["kappa_terms"] = np.asarray(found["kappa_terms"][start:stop], dtype=np.float64)
    if "kappa_input" in found:
        cols["kappa_input"] = np.asarray(found["kappa_input"][start:stop], dtype=np.float32).reshape(n)
    return cols


def convert_hdf5_to_store(
    h5_path: str | os.PathLike,
    store_path: str | os.PathLike,
    *,
    read_chunk: int = DEFAULT_CHUNK,
    store_chunk: int = STORE_CHUNK,
    overwrite: bool = False,
    progress: bool = False,
) -> ConvertSummary:
    """HDF5 (SPANet layout + optional WEIGHTS) → event store, in chunks (memory independent of N).

    Columns per sample: `label int8` (CLASSIFICATIONS/EVENT/signal; −1 when absent), `n_jets int16`
    (true entries of the first sequential MASK), `weight float64 fb` (WEIGHTS/weight, else 1.0 and
    attrs `weight_source: "unit"`), `kappa_terms (N,3) float64 fb` when WEIGHTS/kappa_terms exists,
    `kappa_input float32` when INPUTS/Kappa/kappa exists. Samples split by label: 1 signal,
    0 background, −1 unlabelled, k ≥ 2 class_k.
    """
    from rich.progress import Progress

    h5_path, store_path = Path(h5_path), Path(store_path)
    if store_path.exists() and not overwrite:
        raise InputError(store_path, None, "output already exists (use --overwrite to replace it)")
    with open_hdf5(h5_path) as h5:
        mask_name = first_mask_path(h5, JET_SOURCE)
        if mask_name is None:
            raise DataError(
                h5_path, JET_MASK_PATH, f"missing dataset: no {INPUTS}/<input>/{MASK} to count jets"
            )
        mask = resolve_dataset(h5, mask_name)
        if mask.ndim != 2:
            raise DataError(h5_path, mask_name, f"wrong rank: expected (N, J), found {mask.shape}")
        n = int(mask.shape[0])
        if n == 0:
            raise DataError(h5_path, mask_name, "empty file: 0 events")
        found = find_event_datasets(h5, h5_path, n, mask_name)
        weight_source = WEIGHT_PATH if "weight" in found else "unit"
        if weight_source == "unit":
            log.info("%s: no %s; writing weight = 1.0 per event (weight_source: unit)", h5_path, WEIGHT_PATH)
        source_attrs = _hdf5_attrs(h5)
        attrs = {
            "sqrt_s_tev": source_attrs.get("sqrt_s_tev"),
            "source_file": str(h5_path.resolve()),
            "source_attrs": source_attrs,
            "weight_source": weight_source,
            "label_source": SIGNAL_LABEL_PATH if "label" in found else "none (all unlabelled)",
            "kappa_source": KAPPA_INPUT_PATH if "kappa_input" in found else None,
            "n_jets_source": mask_name,
        }
        with (
            EventStoreWriter(store_path, attrs=attrs, chunk_size=store_chunk, overwrite=overwrite) as writer,
            Progress(transient=True, disable=not progress) as bar,
        ):
            task = bar.add_task(f"convert {h5_path.name}", total=n)
            for start in range(0, n, read_chunk):
                stop = min(n, start + read_chunk)
                m = np.asarray(mask[start:stop]).astype(bool, copy=False)
                cols = event_columns(found, m, start, stop)
                if "label" in found:
                    raw = found["label"][start:stop]
                    if (raw < -1).any():
                        e = int(np.argmax(raw < -1))
                        raise DataError(
                            h5_path,
                            SIGNAL_LABEL_PATH,
                            f"class label {raw[e]} < -1 at event {start + e}",
                        )
                    if (raw > 127).any():
                        raise DataError(h5_path, SIGNAL_LABEL_PATH, "class labels above 127")
                    labels = raw.astype(np.int8)
                else:
                    labels = np.full(stop - start, -1, dtype=np.int8)
                cols["label"] = labels
                writer.append_by_label(labels, cols)
                bar.update(task, advance=stop - start)
            counts = dict(writer.n_events)
            for sample, count in counts.items():
                weight_sum = writer.sum_weight[sample]
                writer.set_sample_attrs(
                    sample,
                    {
                        "n_events": count,
                        "sum_weight": weight_sum,
                        "cross_section_fb": weight_sum if weight_source != "unit" else None,
                    },
                )
    return ConvertSummary(
        source=str(h5_path),
        store=str(store_path),
        n_events=n,
        samples=counts,
        weight_source=weight_source,
        kappa_source=attrs["kappa_source"],
    )
