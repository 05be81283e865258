"""Summaries of an HDF5 event file or a Zarr event store: tree, jets per event, 2h/1h/0h, class balance."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.errors import DataError
from spanet2.events.hdf5 import DEFAULT_CHUNK, list_datasets, open_hdf5
from spanet2.events.layout import CLASSIFICATIONS, JET_SOURCE, MASK, TARGETS, WEIGHT_PATH, first_mask_path

__all__ = ["inspect_path", "inspect_hdf5", "inspect_store", "format_inspection"]


def _add(counter: dict[str, float], keys: np.ndarray, values: np.ndarray | None = None) -> None:
    uniq, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(uniq))
    for k, s in zip(uniq.tolist(), sums.tolist(), strict=True):
        counter[str(k)] = counter.get(str(k), 0) + (s if values is not None else int(s))


def _sorted_hist(counter: dict[str, float]) -> dict[str, float]:
    return dict(sorted(counter.items(), key=lambda kv: float(kv[0])))


def inspect_hdf5(path: str | os.PathLike, *, chunk_size: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Tree (path, stored name, dtype, shape), jets per event, particles matched (2h/1h/0h), class balance.

    Reads the file in chunks of `chunk_size` events. `matched` counts events by how many target
    particles have every daughter index ≥ 0 (for HH: "2h", "1h", "0h"). Class balance counts each
    integer (N,) dataset under CLASSIFICATIONS, plus Σ WEIGHTS/weight per class when present (fb).
    """
    with open_hdf5(path) as h5:
        datasets = list_datasets(h5)
        if not datasets:
            raise DataError(path, None, "empty file: no datasets")
        tree = [
            {"path": name, "stored_as": ds.name.lstrip("/"), "dtype": str(ds.dtype), "shape": list(ds.shape)}
            for name, ds in datasets.items()
        ]
        mask_name = first_mask_path(h5, JET_SOURCE)
        n = (
            int(datasets[mask_name].shape[0])
            if mask_name
            else (int(next(iter(datasets.values())).shape[0]) if next(iter(datasets.values())).ndim else 0)
        )
        # targets: TARGETS/<particle>/<daughter> integer (N,) datasets (not MASK / probabilities)
        particles: dict[str, list[str]] = {}
        for name, ds in datasets.items():
            parts = name.split("/")
            if (
                len(parts) == 3
                and parts[0] == TARGETS
                and parts[2] != MASK
                and ds.ndim == 1
                and np.issubdtype(ds.dtype, np.integer)
                and ds.shape[0] == n
            ):
                particles.setdefault(parts[1], []).append(name)
        class_sets = {
            name: ds
            for name, ds in datasets.items()
            if name.split("/")[0] == CLASSIFICATIONS
            and ds.ndim == 1
            and np.issubdtype(ds.dtype, np.integer)
            and ds.shape[0] == n
        }
        weight = datasets.get(WEIGHT_PATH)
        if weight is not None and (weight.ndim != 1 or weight.shape[0] != n):
            weight = None
        jets: dict[str, float] = {}
        matched: dict[str, float] = {}
        classes: dict[str, dict[str, float]] = {name: {} for name in class_sets}
        weighted: dict[str, dict[str, float]] = {name: {} for name in class_sets}
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            if mask_name:
                _add(jets, np.asarray(datasets[mask_name][start:stop]).astype(bool).sum(axis=1))
            if particles:
                full = np.zeros(stop - start, dtype=np.int64)
                for names in particles.values():
                    idx = np.stack([datasets[t][start:stop] for t in names], axis=1)  # (C, daughters)
                    full += (idx >= 0).all(axis=1)
                _add(matched, full)
            w = np.asarray(weight[start:stop], dtype=np.float64) if weight is not None else None
            for name, ds in class_sets.items():
                labels = ds[start:stop]
                _add(classes[name], labels)
                if w is not None:
                    _add(weighted[name], labels, w)
        attrs = {}
        for key, value in h5.attrs.items():
            value = value.decode(errors="replace") if isinstance(value, bytes) else value
            attrs[key] = value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value
    result: dict[str, Any] = {
        "path": str(path),
        "format": "hdf5",
        "n_events": n,
        "attrs": attrs,
        "datasets": tree,
        "jets_per_event": {"source": mask_name, "histogram": _sorted_hist(jets)},
        "matched": {
            "particles": list(particles),
            "histogram": {f"{k}h": matched.get(str(k), 0) for k in range(len(particles), -1, -1)},
        },
        "class_balance": {
            name: {
                "counts": _sorted_hist(classes[name]),
                **({"weighted_fb": _sorted_hist(weighted[name])} if weight is not None else {}),
            }
            for name in class_sets
        },
    }
    return result


def inspect_store(path: str | os.PathLike) -> dict[str, Any]:
    """Per sample: columns (dtype, shape), events, Σ weight (fb), jets per event, label counts, methods."""
    from spanet2.events.store import open_store

    store = open_store(path)
    samples: dict[str, Any] = {}
    for sample in store.samples:
        columns = []
        for column in store.columns(sample):
            arr = store.array(sample, column)
            columns.append({"path": f"{sample}/{column}", "dtype": str(arr.dtype), "shape": list(arr.shape)})
        info: dict[str, Any] = {
            "n_events": store.n_events(sample),
            "columns": columns,
            "methods": store.methods(sample),
            "attrs": store.sample_attrs(sample),
        }
        names = store.columns(sample)
        if "weight" in names:
            info["sum_weight_fb"] = float(store.dask(sample, "weight").sum().compute())
        if "n_jets" in names:
            hist: dict[str, float] = {}
            for block in store.dask(sample, "n_jets").to_delayed().ravel():
                _add(hist, np.asarray(block.compute()))
            info["jets_per_event"] = _sorted_hist(hist)
        if "label" in names:
            counts: dict[str, float] = {}
            for block in store.dask(sample, "label").to_delayed().ravel():
                _add(counts, np.asarray(block.compute()))
            info["labels"] = _sorted_hist(counts)
        samples[sample] = info
    return {
        "path": str(path),
        "format": "zarr",
        "attrs": store.attrs,
        "n_events": sum(s["n_events"] for s in samples.values()),
        "samples": samples,
    }


def inspect_path(path: str | os.PathLike) -> dict[str, Any]:
    """`inspect_store` for a directory (Zarr), else `inspect_hdf5`."""
    p = Path(path)
    if p.is_dir():
        return inspect_store(p)
    return inspect_hdf5(p)


def _fmt_hist(hist: dict[str, float]) -> str:
    total = sum(hist.values()) or 1
    return "  ".join(f"{k}: {v:g} ({100 * v / total:.1f}%)" for k, v in hist.items())


def format_inspection(info: dict[str, Any]) -> str:
    """Human-readable text of an `inspect_path` result."""
    lines = [f"{info['path']}  ({info['format']}, {info['n_events']} events)"]
    if info["format"] == "hdf5":
        width = max(len(d["path"]) for d in info["datasets"])
        for d in info["datasets"]:
            alias = "" if d["stored_as"] == d["path"] else f"   [stored as {d['stored_as']}]"
            lines.append(f"  {d['path']:<{width}}  {d['dtype']:<8} {tuple(d['shape'])}{alias}")
        if info["attrs"]:
            lines.append("attributes: " + json.dumps(info["attrs"], default=str, sort_keys=True))
        jets = info["jets_per_event"]
        if jets["source"]:
            lines.append(f"jets per event ({jets['source']}): {_fmt_hist(jets['histogram'])}")
        m = info["matched"]
        if m["particles"]:
            lines.append(
                f"fully matched particles ({', '.join(m['particles'])}): {_fmt_hist(m['histogram'])}"
            )
        for name, bal in info["class_balance"].items():
            lines.append(f"class balance {name}: {_fmt_hist(bal['counts'])}")
            if "weighted_fb" in bal:
                lines.append(
                    "  sum of WEIGHTS/weight (fb): "
                    + "  ".join(f"{k}: {v:.6g}" for k, v in bal["weighted_fb"].items())
                )
    else:
        top = {k: v for k, v in info["attrs"].items() if k not in ("provenance", "source_attrs")}
        lines.append("attributes: " + json.dumps(top, default=str, sort_keys=True))
        for sample, s in info["samples"].items():
            extra = f", sum weight {s['sum_weight_fb']:.6g} fb" if "sum_weight_fb" in s else ""
            lines.append(f"{sample}: {s['n_events']} events{extra}")
            width = max((len(c["path"]) for c in s["columns"]), default=0)
            for c in s["columns"]:
                lines.append(f"  {c['path']:<{width}}  {c['dtype']:<8} {tuple(c['shape'])}")
            if "jets_per_event" in s:
                lines.append(f"  jets per event: {_fmt_hist(s['jets_per_event'])}")
            if "labels" in s:
                lines.append(f"  labels: {_fmt_hist(s['labels'])}")
            if s["methods"]:
                lines.append(f"  methods: {', '.join(s['methods'])}")
    return "\n".join(lines)
