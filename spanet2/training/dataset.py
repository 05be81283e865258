"""SPANet HDF5 → arrays and torch batches per the topology: split, filters, normalisation fit, balance weights."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from spanet2.errors import DataError
from spanet2.events.hdf5 import n_events as file_n_events
from spanet2.events.hdf5 import open_hdf5
from spanet2.events.layout import (
    TARGETS,
    TRUTH_KAPPA_PATH,
    classification_path,
    decode_inputs,
    input_path,
    mask_path,
    resolve_dataset,
    strip_group,
    target_path,
)
from spanet2.events.topology import EventTopology
from spanet2.training.normalization import NormalizationStats, fit_input_statistics
from spanet2.training.options import Options

__all__ = [
    "EventArrays",
    "TrainingData",
    "read_event_arrays",
    "load_training_data",
    "iter_test_batches",
    "balance_weights",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 65536


@dataclass
class EventArrays:
    """Raw (unnormalised) events of one file slice, as numpy arrays.

    sequential: name → (N, J, F) float32; sequential_mask: name → (N, J) bool; global_inputs: name → (N, F)
    float32; targets: (N, P, 2) int64 jet indices into the concatenated sequential axis (−1 = unmatched);
    target_mask: (N, P) bool (particle reconstructable: all daughters matched); classifications:
    "EVENT/signal" → (N,) int64 (−1 = ignore); kappa: (N,) float64 truth κλ (NaN = none) or None.
    """

    sequential: dict[str, np.ndarray]
    sequential_mask: dict[str, np.ndarray]
    global_inputs: dict[str, np.ndarray]
    targets: np.ndarray
    target_mask: np.ndarray
    classifications: dict[str, np.ndarray]
    kappa: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def n_jets(self) -> np.ndarray:
        """(N,) int64 real jets per event (sequential inputs only; globals not counted)."""
        return sum(m.sum(axis=1) for m in self.sequential_mask.values()).astype(np.int64)

    def take(self, index: np.ndarray | slice) -> EventArrays:
        """A subset (index array, boolean mask or slice) as a new EventArrays."""
        return EventArrays(
            sequential={k: v[index] for k, v in self.sequential.items()},
            sequential_mask={k: v[index] for k, v in self.sequential_mask.items()},
            global_inputs={k: v[index] for k, v in self.global_inputs.items()},
            targets=self.targets[index],
            target_mask=self.target_mask[index],
            classifications={k: v[index] for k, v in self.classifications.items()},
            kappa=None if self.kappa is None else self.kappa[index],
            source=self.source,
        )

    def batch(
        self,
        index: np.ndarray | slice | None = None,
        *,
        assignment_weight: np.ndarray | None = None,
        classification_weight: dict[str, np.ndarray] | None = None,
    ) -> dict:
        """The model/loss batch (CPU torch tensors) of the events `index` (all when None).

        {"sequential": {name: (B, J, F)}, "sequential_mask": {name: (B, J)}, "global": {name: (B, F)},
        "targets": (B, P, 2), "target_mask": (B, P), "classifications": {name: (B,)}} and, when given,
        "assignment_weight": (B,), "classification_weight": {name: (B,)}.
        """
        sel = slice(None) if index is None else index
        out = {
            "sequential": {
                k: torch.from_numpy(np.ascontiguousarray(v[sel])) for k, v in self.sequential.items()
            },
            "sequential_mask": {
                k: torch.from_numpy(np.ascontiguousarray(v[sel])) for k, v in self.sequential_mask.items()
            },
            "global": {
                k: torch.from_numpy(np.ascontiguousarray(v[sel])) for k, v in self.global_inputs.items()
            },
            "targets": torch.from_numpy(np.ascontiguousarray(self.targets[sel])),
            "target_mask": torch.from_numpy(np.ascontiguousarray(self.target_mask[sel])),
            "classifications": {
                k: torch.from_numpy(np.ascontiguousarray(v[sel])) for k, v in self.classifications.items()
            },
        }
        if assignment_weight is not None:
            out["assignment_weight"] = torch.from_numpy(np.ascontiguousarray(assignment_weight[sel]))
        if classification_weight:
            out["classification_weight"] = {
                k: torch.from_numpy(np.ascontiguousarray(v[sel])) for k, v in classification_weight.items()
            }
        return out

    def truth(self, index: np.ndarray | slice | None = None) -> dict:
        """What the metrics need: targets (N, P, 2), n_jets (N,), classifications {name: (N,)}, kappa (N,)|None."""
        sel = slice(None) if index is None else index
        return {
            "targets": self.targets[sel],
            "n_jets": self.n_jets[sel],
            "classifications": {k: v[sel] for k, v in self.classifications.items()},
            "kappa": None if self.kappa is None else self.kappa[sel],
        }


def _concat(parts: list[EventArrays]) -> EventArrays:
    first = parts[0]
    if len(parts) == 1:
        return first
    return EventArrays(
        sequential={k: np.concatenate([p.sequential[k] for p in parts]) for k in first.sequential},
        sequential_mask={
            k: np.concatenate([p.sequential_mask[k] for p in parts]) for k in first.sequential_mask
        },
        global_inputs={k: np.concatenate([p.global_inputs[k] for p in parts]) for k in first.global_inputs},
        targets=np.concatenate([p.targets for p in parts]),
        target_mask=np.concatenate([p.target_mask for p in parts]),
        classifications={
            k: np.concatenate([p.classifications[k] for p in parts]) for k in first.classifications
        },
        kappa=None if first.kappa is None else np.concatenate([p.kappa for p in parts]),
        source=first.source,
    )


def _iter_file(
    path: str | os.PathLike,
    topology: EventTopology,
    *,
    start: int,
    stop: int,
    chunk_size: int,
    jets: dict[str, int] | None,
    limit_to_num_jets: int,
) -> Iterator[EventArrays]:
    """Yield EventArrays chunks of rows [start, stop) read from the file; see `read_event_arrays`."""
    with open_hdf5(path) as h5:

        def need(name: str):
            ds = resolve_dataset(h5, name)
            if ds is None:
                raise DataError(path, name, "missing dataset (required by the event topology)")
            return ds

        n_total = need(mask_path(topology.sequential_inputs[0].name)).shape[0]
        input_sets, seq_jets = {}, {}
        for source in topology.sequential_inputs:
            mask_name = mask_path(source.name)
            mask_ds = input_sets[mask_name] = need(mask_name)
            if mask_ds.ndim != 2:
                raise DataError(path, mask_name, f"expected a (N, J) jet mask, found shape {mask_ds.shape}")
            file_jets = mask_ds.shape[1]
            for feature in source.features:
                name = input_path(source.name, feature.name)
                ds = input_sets[name] = need(name)
                if ds.shape != mask_ds.shape:
                    raise DataError(
                        path,
                        name,
                        f"shape {ds.shape} does not match the jet padding of {mask_name} {mask_ds.shape}",
                    )
            if limit_to_num_jets > 0:
                seq_jets[source.name] = limit_to_num_jets
            elif jets is not None and source.name in jets:
                if file_jets != jets[source.name]:
                    raise DataError(
                        path,
                        mask_name,
                        f"the file pads to {file_jets} jets but the network was "
                        f"built for {jets[source.name]} (same padding expected; or set limit_to_num_jets)",
                    )
                seq_jets[source.name] = file_jets
            else:
                seq_jets[source.name] = file_jets
        for source in topology.global_inputs:
            for feature in source.features:
                name = input_path(source.name, feature.name)
                ds = input_sets[name] = need(name)
                if ds.ndim not in (1, 2) or (ds.ndim == 2 and ds.shape[1] != 1):
                    raise DataError(path, name, f"expected one value per event (N,), found shape {ds.shape}")
        offsets, offset = {}, 0
        for source in topology.sequential_inputs:
            offsets[source.name] = offset
            offset += seq_jets[source.name]
        target_sets = []
        for particle in topology.particles:
            per = []
            for daughter in particle.daughters:
                name = target_path(particle.name, daughter)
                per.append((name, need(name), topology.daughter_source(particle.name, daughter)))
            target_sets.append(per)
        class_sets = {}
        for path_name in topology.classification_paths():
            ds = resolve_dataset(h5, path_name)
            key = strip_group(path_name)
            if ds is None:
                log.warning("%s: %s missing; that classification is ignored (labels -1)", path, path_name)
            class_sets[key] = ds
        kappa_ds = resolve_dataset(h5, TRUTH_KAPPA_PATH)
        if kappa_ds is None:
            for source in topology.global_inputs:
                if "kappa" in source.feature_names:
                    kappa_ds = resolve_dataset(h5, input_path(source.name, "kappa"))
                    break
        for name, ds in [(n, d) for per in target_sets for n, d, _ in per] + [
            (classification_path(k), d) for k, d in class_sets.items() if d is not None
        ]:
            if ds.shape[0] != n_total:
                raise DataError(path, name, f"has {ds.shape[0]} events but the inputs have {n_total}")

        stop = min(stop, n_total)
        for lo in range(start, stop, chunk_size):
            hi = min(lo + chunk_size, stop)
            sequential, masks, globals_ = decode_inputs(path, input_sets, topology, seq_jets, lo, hi)
            n = hi - lo
            targets = np.full((n, len(target_sets), 2), -1, dtype=np.int64)
            complete = np.ones((n, len(target_sets)), dtype=bool)
            for p, per in enumerate(target_sets):
                if len(per) != 2:
                    raise DataError(
                        path,
                        f"{TARGETS}/{topology.particles[p].name}",
                        f"SPANet2 supports particles with two daughters, found {len(per)}",
                    )
                for d, (name, ds, source) in enumerate(per):
                    raw = np.asarray(ds[lo:hi])
                    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
                        raise DataError(
                            path, name, f"expected (N,) integer jet indices, found {raw.dtype} {raw.shape}"
                        )
                    index = raw.astype(np.int64)
                    n_source = seq_jets[source]
                    if limit_to_num_jets > 0:
                        index = np.where(index >= n_source, -1, index)  # jets cut away: unmatched
                    index = np.where(index < 0, -1, index)
                    too_big = index >= n_source
                    if too_big.any():
                        event = int(np.flatnonzero(too_big)[0])
                        raise DataError(
                            path,
                            name,
                            f"jet index {index[event]} at event {lo + event} is beyond "
                            f"the {n_source} jet slots",
                        )
                    matched = index >= 0
                    real = np.zeros(n, dtype=bool)
                    real[matched] = masks[source][np.flatnonzero(matched), index[matched]]
                    if (matched & ~real).any():
                        event = int(np.flatnonzero(matched & ~real)[0])
                        raise DataError(
                            path, name, f"points at padded jet {index[event]} at event {lo + event}"
                        )
                    targets[:, p, d] = np.where(matched, index + offsets[source], -1)
                    complete[:, p] &= matched
                same = complete[:, p] & (targets[:, p, 0] == targets[:, p, 1])
                if same.any():
                    event = int(np.flatnonzero(same)[0])
                    raise DataError(
                        path,
                        f"{TARGETS}/{topology.particles[p].name}",
                        f"both daughters point at jet {targets[event, p, 0]} at event {lo + event}",
                    )
            targets[~complete] = -1
            classes = {}
            for key, ds in class_sets.items():
                if ds is None:
                    classes[key] = np.full(n, -1, dtype=np.int64)
                    continue
                raw = np.asarray(ds[lo:hi])
                if raw.ndim != 1:
                    raise DataError(
                        path, classification_path(key), f"expected (N,) class labels, found {raw.shape}"
                    )
                if not np.issubdtype(raw.dtype, np.integer) and not np.issubdtype(raw.dtype, np.bool_):
                    if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
                        raise DataError(path, classification_path(key), "expected integer class labels")
                classes[key] = raw.astype(np.int64)
            kappa = None if kappa_ds is None else np.asarray(kappa_ds[lo:hi], dtype=np.float64).reshape(n)
            yield EventArrays(
                sequential, masks, globals_, targets, complete, classes, kappa, source=str(path)
            )


def read_event_arrays(
    path: str | os.PathLike,
    topology: EventTopology,
    *,
    start: int = 0,
    stop: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    jets: dict[str, int] | None = None,
    limit_to_num_jets: int = 0,
) -> EventArrays:
    """Read rows [start, stop) of a SPANet HDF5 per the topology, chunk by chunk.

    jets: the jet padding the caller expects per sequential input (DataError when the file differs);
    limit_to_num_jets > 0 cuts (or pads) every sequential input to that many slots, targets beyond → −1.
    Raises DataError naming the file, the dataset path and the event index for every inconsistency.
    """
    stop = file_n_events(path, topology) if stop is None else stop
    parts = list(
        _iter_file(
            path,
            topology,
            start=start,
            stop=stop,
            chunk_size=chunk_size,
            jets=jets,
            limit_to_num_jets=limit_to_num_jets,
        )
    )
    if not parts:
        return _empty(path, topology, jets, limit_to_num_jets)
    return _concat(parts)


def _empty(path, topology: EventTopology, jets, limit) -> EventArrays:
    with open_hdf5(path) as h5:
        widths = {}
        for s in topology.sequential_inputs:
            ds = resolve_dataset(h5, mask_path(s.name))
            widths[s.name] = limit or (jets or {}).get(s.name) or (0 if ds is None else ds.shape[1])
    return EventArrays(
        sequential={
            s.name: np.zeros((0, widths[s.name], len(s.features)), np.float32)
            for s in topology.sequential_inputs
        },
        sequential_mask={s.name: np.zeros((0, widths[s.name]), bool) for s in topology.sequential_inputs},
        global_inputs={s.name: np.zeros((0, len(s.features)), np.float32) for s in topology.global_inputs},
        targets=np.zeros((0, len(topology.particles), 2), np.int64),
        target_mask=np.zeros((0, len(topology.particles)), bool),
        classifications={
            strip_group(p): np.zeros(0, np.int64) for p in topology.classification_paths()
        },
        kappa=None,
        source=str(path),
    )


def balance_weights(
    options: Options, events: EventArrays, classification_classes: dict[str, int]
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Per-event loss weights for the balance_* options, from inverse frequencies in `events` (training split).

    Returns (assignment_weight (N,) float32 or None, classification_weight {name: (N,) float32}).
    balance_particles weighs by the number of reconstructable particles, balance_jets by the jet
    multiplicity, balance_classifications by the class; each normalised to mean 1 over the events.
    """

    def inverse_frequency(keys: np.ndarray) -> np.ndarray:
        values, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        per_value = len(keys) / (len(values) * counts)
        return per_value[inverse].astype(np.float32)

    assignment = None
    if len(events) and (options.balance_particles or options.balance_jets):
        assignment = np.ones(len(events), dtype=np.float32)
        if options.balance_particles:
            assignment *= inverse_frequency(events.target_mask.sum(axis=1))
        if options.balance_jets:
            assignment *= inverse_frequency(events.n_jets)
    classification = {}
    if options.balance_classifications:
        for name, labels in events.classifications.items():
            weight = np.zeros(len(labels), dtype=np.float32)
            valid = labels >= 0
            if valid.any():
                weight[valid] = inverse_frequency(labels[valid])
            classification[name] = weight
    return assignment, classification


@dataclass
class TrainingData:
    """The training and validation splits plus the statistics fitted on the training split."""

    train: EventArrays
    validation: EventArrays
    normalization: NormalizationStats
    topology: EventTopology
    assignment_weight: np.ndarray | None = None
    classification_weight: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.validation)

    def train_batch(self, index: np.ndarray) -> dict:
        """Training batch with the balance weights (see EventArrays.batch)."""
        return self.train.batch(
            index, assignment_weight=self.assignment_weight, classification_weight=self.classification_weight
        )

    def val_batch(self, index: np.ndarray) -> dict:
        """Validation batch (no balance weights: the validation loss is the plain loss)."""
        return self.validation.batch(index)

    def val_truth(self) -> dict:
        return self.validation.truth()


def load_training_data(
    options: Options,
    topology: EventTopology,
    *,
    training_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> TrainingData:
    """Read the training file (and validation file), split, filter and fit the normalisation.

    - dataset_randomization ≠ 0 shuffles the events with that seed before anything else;
      dataset_limit keeps the first fraction; without a validation file, the first
      train_validation_split of it trains and the rest validates (contiguous).
    - partial_events = false drops *training* events with any particle not reconstructable.
    - The normalisation (and class counts, jet padding) are fitted on the training split only.
    """
    train_path = training_file or options.training_file
    val_path = validation_file or options.validation_file
    if not train_path:
        raise DataError(None, "training_file", "no training file given")
    n_file = file_n_events(train_path, topology)
    n_used = int(n_file * options.dataset_limit)
    limit = options.limit_to_num_jets
    if options.dataset_randomization:
        everything = read_event_arrays(train_path, topology, chunk_size=chunk_size, limit_to_num_jets=limit)
        order = np.random.default_rng(options.dataset_randomization).permutation(n_file)[:n_used]
        events = everything.take(order)
        del everything
    else:
        events = read_event_arrays(
            train_path, topology, stop=n_used, chunk_size=chunk_size, limit_to_num_jets=limit
        )
    if val_path:
        train = events
        jets = {k: v.shape[1] for k, v in train.sequential_mask.items()}
        validation = read_event_arrays(
            val_path, topology, chunk_size=chunk_size, jets=jets, limit_to_num_jets=limit
        )
    else:
        n_train = int(round(n_used * options.train_validation_split))
        train, validation = events.take(slice(0, n_train)), events.take(slice(n_train, None))
    if not options.partial_events:
        keep = train.target_mask.all(axis=1)
        if not keep.all():
            log.info(
                "partial_events=false: dropping %d of %d training events with a missing particle",
                int((~keep).sum()),
                len(keep),
            )
            train = train.take(keep)
    if len(train) == 0:
        raise DataError(
            train_path,
            None,
            "no training events left (check dataset_limit, train_validation_split and partial_events)",
        )
    normalization = fit_normalization(options, topology, train, validation)
    assignment_weight, classification_weight = balance_weights(
        options, train, normalization.classification_classes
    )
    log.info("training events: %d, validation events: %d", len(train), len(validation))
    return TrainingData(train, validation, normalization, topology, assignment_weight, classification_weight)


def fit_normalization(
    options: Options, topology: EventTopology, train: EventArrays, validation: EventArrays | None = None
) -> NormalizationStats:
    """NormalizationStats from the training split: feature mean/std, class counts, jet padding."""
    inputs = {}
    for source in topology.sequential_inputs:
        inputs[source.name] = fit_input_statistics(
            source.feature_names,
            tuple(f.log_scale for f in source.features),
            tuple(f.normalize for f in source.features),
            train.sequential[source.name],
            train.sequential_mask[source.name],
            enabled=options.normalize_features,
        )
    for source in topology.global_inputs:
        inputs[source.name] = fit_input_statistics(
            source.feature_names,
            tuple(f.log_scale for f in source.features),
            tuple(f.normalize for f in source.features),
            train.global_inputs[source.name],
            enabled=options.normalize_features,
        )
    classes = {}
    for name, labels in train.classifications.items():
        top = int(labels.max()) if len(labels) else -1
        if validation is not None and len(validation.classifications.get(name, [])):
            top = max(top, int(validation.classifications[name].max()))
        classes[name] = max(top + 1, 2)
    jets = {k: int(v.shape[1]) for k, v in train.sequential_mask.items()}
    return NormalizationStats(
        inputs=inputs,
        classification_classes=classes,
        n_jets=jets,
        limit_to_num_jets=options.limit_to_num_jets,
    )


def iter_test_batches(
    path: str | os.PathLike,
    topology: EventTopology,
    normalization: NormalizationStats,
    *,
    batch_size: int = 4096,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[tuple[dict, dict]]:
    """Yield (batch, truth) over a whole test file in bounded memory (no training file needed).

    The jet padding must match the training's (or is cut to its limit_to_num_jets).
    """
    limit = normalization.limit_to_num_jets
    stop = file_n_events(path, topology)
    for chunk in _iter_file(
        path,
        topology,
        start=0,
        stop=stop,
        chunk_size=max(chunk_size, batch_size),
        jets=normalization.n_jets or None,
        limit_to_num_jets=limit,
    ):
        for lo in range(0, len(chunk), batch_size):
            index = slice(lo, min(lo + batch_size, len(chunk)))
            yield chunk.batch(index), chunk.truth(index)
