"""Build the Zarr event store from test files and per-method predictions/scores, chunk by chunk (`store build`)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spanet2.errors import DataError, InputError
from spanet2.events.layout import (
    JET_MASK_PATH,
    SIGNAL_LABEL_PATH,
    SIGNAL_PROBABILITY_PATH,
    WEIGHT_PATH,
    resolve_dataset,
)
from spanet2.events.store import EventStoreWriter, event_columns, find_event_datasets
from spanet2.physics import features as hl
from spanet2.provenance import provenance

__all__ = [
    "METHOD_GRAMMAR",
    "MethodSource",
    "MethodSpec",
    "StoreInput",
    "parse_method",
    "build_store",
    "RESERVED_COLUMNS",
]

logger = logging.getLogger(__name__)

METHOD_GRAMMAR = """The `--method` grammar (one value per method, repeatable)::

    NAME=SPEC[,SPEC]          one SPEC per input file, in input order (--input: one; --signal, --background: two)
    SPEC    = PAIRING[:SCORES]
    PAIRING = min-dr          the min-ΔR pairing, computed from the input's jets
            | PRED.h5         a predictions file (`spanet2 predict` / `spanet2 dnn predict`): TARGETS/h*/b*
    SCORES  = SCORES.h5       a file with CLASSIFICATIONS/EVENT/signal_probability (N,) (or signal (N, C),
                              column 1); omitted: the PAIRING file's own score (so min-dr needs SCORES)

Examples: `spanet2=pred_test.h5`, `min_dr_dnn=min-dr:dnn_scores.h5`, `spanet2_dnn=pred.h5:dnn_on_spanet2.h5`,
with separate files `spanet2=pred_sig.h5,pred_bkg.h5`. File names must not contain ',' or ':'.
"""

#: Per-event columns of every sample; a method may not take one of these names.
RESERVED_COLUMNS = ("weight", "kappa_terms", "label", "n_jets", "kappa_input", "targets")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_SCORE_PATHS = (SIGNAL_PROBABILITY_PATH, SIGNAL_LABEL_PATH)


@dataclass(frozen=True)
class MethodSource:
    """Where one input file's pairing and score come from for one method."""

    pairing: str  # "min-dr" or a predictions file
    scores: str | None  # a scores file, or None: the pairing file's own score


@dataclass(frozen=True)
class MethodSpec:
    name: str
    sources: tuple[MethodSource, ...]  # one per input file
    text: str = ""


@dataclass(frozen=True)
class StoreInput:
    """An input HDF5 file; `sample` "signal"/"background", or None to split by CLASSIFICATIONS/EVENT/signal."""

    path: str
    sample: str | None = None


def parse_method(text: str, n_inputs: int) -> MethodSpec:
    """Parse one `--method NAME=SPEC[,SPEC]` value (InputError naming `--method` on a bad value)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise InputError(
            "--method", text, "expected NAME=PAIRING[:SCORES] (PAIRING = min-dr or a predictions file)"
        )
    if not _NAME_RE.match(name):
        raise InputError("--method", text, f"method name {name!r} may hold only letters, digits and _ . + -")
    if name in RESERVED_COLUMNS:
        raise InputError(
            "--method", text, f"{name!r} is a reserved column name ({', '.join(RESERVED_COLUMNS)})"
        )
    specs = [s.strip() for s in rest.split(",")]
    if len(specs) != n_inputs:
        raise InputError("--method", text, f"gives {len(specs)} source(s) but there are {n_inputs} input file(s); "
                         "give one PAIRING[:SCORES] per input, comma-separated, in input order")  # fmt: skip
    sources = []
    for spec in specs:
        pairing, _, scores = spec.partition(":")
        if not pairing:
            raise InputError("--method", text, "empty PAIRING (expected min-dr or a predictions file)")
        if pairing == "min-dr" and not scores:
            raise InputError("--method", text, "min-dr needs a score file: NAME=min-dr:SCORES.h5 "
                             "(e.g. from `spanet2 dnn predict`)")  # fmt: skip
        sources.append(MethodSource(pairing, scores or None))
    return MethodSpec(name, tuple(sources), text)


def _open(path: str | os.PathLike, flag: str) -> h5py.File:
    if not Path(path).is_file():
        raise InputError(path, None, f"file not found (given in {flag})")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise DataError(path, None, f"not a readable HDF5 file (given in {flag})") from None


@dataclass
class _Source:
    """Open handles of one input and its methods' files; validated up front."""

    inp: StoreInput
    h5: h5py.File
    n_events: int
    datasets: dict[str, h5py.Dataset]
    pairing_sets: dict[str, list[h5py.Dataset] | None] = field(default_factory=dict)
    score_sets: dict[str, h5py.Dataset] = field(default_factory=dict)
    handles: list[h5py.File] = field(default_factory=list)

    def close(self) -> None:
        for handle in [self.h5, *self.handles]:
            handle.close()


def _score_dataset(h5: h5py.File, path: str, n_events: int, flag: str) -> h5py.Dataset:
    for key in _SCORE_PATHS:
        ds = resolve_dataset(h5, key)
        if ds is None:
            continue
        if key.endswith("signal") and (ds.ndim != 2 or ds.shape[1] < 2):
            continue
        if ds.shape[0] != n_events:
            raise DataError(path, key, f"has {ds.shape[0]} events but the input file has {n_events} ({flag})")
        return ds
    raise DataError(path, _SCORE_PATHS[0], f"missing (expected the signal score (N,), {flag})")


def _open_source(inp: StoreInput, methods: list[MethodSpec], index: int) -> _Source:
    h5 = _open(inp.path, "--input" if inp.sample is None else f"--{inp.sample}")
    try:
        mask = resolve_dataset(h5, JET_MASK_PATH)
        if mask is None:
            raise DataError(inp.path, JET_MASK_PATH, "missing (expected the jet mask, bool (N, J))")
        n = int(mask.shape[0])
        if n == 0:
            raise DataError(inp.path, JET_MASK_PATH, "empty file: 0 events")
        datasets: dict[str, h5py.Dataset] = {"MASK": mask}
        weight = resolve_dataset(h5, WEIGHT_PATH)
        if weight is None:
            raise DataError(inp.path, WEIGHT_PATH, "missing: the store needs per-event weights in fb "
                            "(sum x luminosity = expected events); the generator writes them")  # fmt: skip
        datasets.update(find_event_datasets(h5, inp.path, n, JET_MASK_PATH))
        for i, key in enumerate(hl.PAIRING_PATHS):
            ds = resolve_dataset(h5, key)
            if ds is not None:
                datasets[f"target{i}"] = ds
        if inp.sample is None and "label" not in datasets:
            raise DataError(inp.path, SIGNAL_LABEL_PATH, "missing: --input splits signal and "
                            "background by this label; give --signal/--background files otherwise")  # fmt: skip
        for ds in datasets.values():
            if ds.shape[0] != n:
                raise DataError(inp.path, ds.name.lstrip("/"), f"has {ds.shape[0]} events, MASK has {n}")
        source = _Source(inp, h5, n, datasets)
        for method in methods:
            spec = method.sources[index]
            flag = f"--method {method.name}"
            if spec.pairing == "min-dr":
                source.pairing_sets[method.name] = None
            else:
                pred = _open(spec.pairing, flag)
                source.handles.append(pred)
                sets = []
                for key in hl.PAIRING_PATHS:
                    ds = resolve_dataset(pred, key)
                    if ds is None:
                        raise DataError(
                            spec.pairing, key, f"missing (expected predicted jet indices, {flag})"
                        )
                    if ds.shape[0] != n:
                        raise DataError(spec.pairing, key, f"has {ds.shape[0]} events but {inp.path} has {n} "
                                        f"({flag}); predictions must come from the same file")  # fmt: skip
                    sets.append(ds)
                hl.check_same_events(pred, spec.pairing, h5, inp.path)
                source.pairing_sets[method.name] = sets
            score_path = spec.scores or spec.pairing
            score_file = _open(score_path, flag)
            source.handles.append(score_file)
            source.score_sets[method.name] = _score_dataset(score_file, score_path, n, flag)
            hl.check_same_events(score_file, score_path, h5, inp.path)
        return source
    except BaseException:
        h5.close()
        raise


def _read_score(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    values = ds[start:stop]
    if values.ndim == 2:
        values = values[:, 1]  # softmax (N, C): the signal class
    return np.asarray(values, dtype=np.float32)


def build_store(
    output: str | os.PathLike,
    inputs: list[StoreInput],
    methods: list[str] | list[MethodSpec],
    *,
    sqrt_s_tev: float | None = None,
    chunk_size: int = 65536,
    store_chunk: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the event store (the contract of events/store.py) for the inputs and methods; return a summary.

    Per sample and event: `weight` (fb), `kappa_terms` (N, 3) fb (signal, when the file has them), `label`
    int8, `n_jets` int16 (real jets in the file), `kappa_input` float32 (NaN when absent), `targets` (N, 4)
    int64 true jet indices (when the file has TARGETS). Per method: `<m>/score` float32, `<m>/pairing`
    (N, 4) int64 (canonical order, −1 = no valid pairing), `<m>/features` (N, F) float32 (20 or 16 observables,
    names in the sample attrs), `<m>/m_hh` float32 GeV (NaN without a valid pairing). Memory is bounded
    by `chunk_size` (read) and the store chunk (write), not by N.
    """
    if not inputs:
        raise InputError("--input", None, "give --input FILE, or --signal and/or --background files")
    specs: list[MethodSpec] = []
    for method in methods:
        spec = parse_method(method, len(inputs)) if isinstance(method, str) else method
        if any(s.name == spec.name for s in specs):
            raise InputError("--method", spec.text or spec.name, f"method name {spec.name!r} given twice")
        specs.append(spec)
    if not specs:
        raise InputError("--method", None, "give at least one --method NAME=PAIRING[:SCORES]")
    out_path = Path(output)
    if out_path.exists() and not overwrite:
        raise InputError(out_path, None, "output already exists (use --overwrite to replace it)")

    sources: list[_Source] = []
    try:
        for index, inp in enumerate(inputs):
            sources.append(_open_source(inp, specs, index))
        return _write(out_path, sources, specs, sqrt_s_tev, chunk_size, store_chunk, overwrite, progress)
    finally:
        for source in sources:
            source.close()


def _sqrt_s(sources: list[_Source], given: float | None) -> float | None:
    found = {float(s.h5.attrs["sqrt_s_tev"]) for s in sources if "sqrt_s_tev" in s.h5.attrs}
    if given is not None:
        if found and found != {float(given)}:
            logger.warning("--sqrt_s_tev %s overrides the files' sqrt_s_tev %s", given, sorted(found))
        return float(given)
    if len(found) > 1:
        raise DataError(
            sources[0].inp.path, "sqrt_s_tev", f"the inputs disagree on sqrt_s_tev: {sorted(found)}"
        )
    if not found:
        logger.warning("no sqrt_s_tev attribute in the inputs and no --sqrt_s_tev: stored as null")
        return None
    return found.pop()


def _write(
    out_path, sources, specs, sqrt_s_tev, chunk_size, store_chunk, overwrite, progress
) -> dict[str, Any]:
    from rich.progress import Progress

    with_extra = all(hl.has_extra(s.inp.path) for s in sources)
    names = hl.feature_names(with_extra)
    m_hh_index = names.index(hl.M_HH)
    attrs = {
        "sqrt_s_tev": _sqrt_s(sources, sqrt_s_tev),
        "lumi_unit": "fb",
        "provenance": provenance(),
        "inputs": [
            {"path": str(Path(s.inp.path).resolve()), "sample": s.inp.sample or "by label"} for s in sources
        ],
        "methods": {
            m.name: [{"pairing": src.pairing, "scores": src.scores} for src in m.sources] for m in specs
        },
        "feature_names": list(names),
    }
    invalid: dict[str, int] = {m.name: 0 for m in specs}
    total = sum(s.n_events for s in sources)
    writer_kwargs = {"attrs": attrs, "overwrite": overwrite}
    if store_chunk is not None:
        writer_kwargs["chunk_size"] = store_chunk
    with (
        EventStoreWriter(out_path, **writer_kwargs) as writer,
        Progress(transient=True, disable=not progress) as bar,
    ):
        task = bar.add_task("building the event store", total=total)
        for source in sources:
            for chunk in hl.iter_event_chunks(source.inp.path, chunk_size=chunk_size, with_extra=with_extra):
                columns, labels = _chunk_columns(source, chunk)
                for spec in specs:
                    pairing = _chunk_pairing(source, spec.name, chunk)
                    features, ordered = hl.high_level_features(
                        chunk.pt,
                        chunk.eta,
                        chunk.phi,
                        chunk.mass,
                        chunk.btag,
                        pairing,
                        mask=chunk.mask,
                        **(chunk.extras or {}),
                    )
                    invalid[spec.name] += int(np.count_nonzero(ordered[:, 0] < 0))
                    columns[f"{spec.name}/score"] = _read_score(
                        source.score_sets[spec.name], chunk.start, chunk.stop
                    )
                    columns[f"{spec.name}/pairing"] = ordered
                    columns[f"{spec.name}/features"] = features
                    columns[f"{spec.name}/m_hh"] = features[:, m_hh_index]
                writer.append_by_label(labels, columns, signal_only=("kappa_terms",))
                bar.update(task, advance=chunk.stop - chunk.start)
        counts, weight_sums = dict(writer.n_events), dict(writer.sum_weight)
        terms = _sigma_terms(sources)
        for sample, count in counts.items():
            extra = {"sigma_terms_fb": terms} if sample == "signal" and terms is not None else {}
            writer.set_sample_attrs(sample, {"n_events": count, "sum_weight": weight_sums[sample],
                                             "cross_section_fb": weight_sums[sample], "feature_names": list(names),
                                             **extra})  # fmt: skip
    for name, n_bad in invalid.items():
        if n_bad:
            logger.warning(
                "method %s: %d events without a valid pairing (features and m_hh NaN)", name, n_bad
            )
    return {"output": str(out_path), "events": counts, "cross_section_fb": weight_sums,
            "methods": [m.name for m in specs], "features": list(names), "invalid_pairings": invalid}  # fmt: skip


def _sigma_terms(sources: list[_Source]) -> list[float] | None:
    """The generator's σ(κλ) terms (`sigma_terms_fb`) the signal inputs record, when they all record the same."""
    found = {tuple(np.asarray(s.h5.attrs["sigma_terms_fb"], dtype=float).tolist()) for s in sources
             if "sigma_terms_fb" in s.h5.attrs}  # fmt: skip
    if len(found) != 1:
        if len(found) > 1:
            logger.warning("the inputs record different sigma_terms_fb %s: none carried to the store", sorted(found))
        return None
    return list(found.pop())


def _chunk_columns(source: _Source, chunk: hl.JetChunk) -> tuple[dict[str, np.ndarray], np.ndarray]:
    ds, start, stop = source.datasets, chunk.start, chunk.stop
    n = stop - start
    if source.inp.sample is None:
        labels = np.asarray(ds["label"][start:stop])
        bad = ~np.isin(labels, (0, 1))
        if bad.any():
            e = int(np.argmax(bad))
            raise DataError(source.inp.path, SIGNAL_LABEL_PATH,
                            f"label {labels[e]} at event {start + e}; expected 0 or 1")  # fmt: skip
    else:
        labels = np.full(n, 1 if source.inp.sample == "signal" else 0)
        if "label" in ds:
            file_labels = np.asarray(ds["label"][start:stop])
            if (file_labels != labels).any():
                e = int(np.argmax(file_labels != labels))
                raise DataError(source.inp.path, SIGNAL_LABEL_PATH,
                                f"event {start + e} has label {file_labels[e]} in a --{source.inp.sample} file; "
                                "use --input to split a mixed file by label")  # fmt: skip
    columns = event_columns(ds, chunk.mask, start, stop)
    columns["label"] = labels.astype(np.int8)
    columns.setdefault("kappa_input", np.full(n, np.nan, np.float32))
    if "target0" in ds:
        columns["targets"] = np.stack(
            [np.asarray(ds[f"target{i}"][start:stop], np.int64) for i in range(4)], axis=1
        )
    if not np.isfinite(columns["weight"]).all():
        e = int(np.argmax(~np.isfinite(columns["weight"])))
        raise DataError(source.inp.path, WEIGHT_PATH, f"non-finite weight at event {start + e}")
    return columns, labels


def _chunk_pairing(source: _Source, method: str, chunk: hl.JetChunk) -> np.ndarray:
    sets = source.pairing_sets[method]
    if sets is None:
        return hl.compute_pairing(chunk, "min-dr")
    return np.stack(
        [np.asarray(ds[chunk.start : chunk.stop], dtype=np.int64) for ds in sets], axis=1
    )  # (n, 4)
