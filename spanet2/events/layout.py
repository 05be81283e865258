"""The SPANet HDF5 layout: the one module that spells its dataset paths and SpecialKey names, and decodes inputs.

Every other module builds a path with these names and functions (`input_path("Source", "pt")`,
`target_path("h1", "b1")`, `WEIGHT_PATH`, ...), so a renamed or added dataset is a change here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from spanet2.errors import DataError

__all__ = [
    "INPUTS",
    "TARGETS",
    "CLASSIFICATIONS",
    "REGRESSIONS",
    "WEIGHTS",
    "TRUTH",
    "GLOBAL_EXTRA",
    "EMBEDDINGS",
    "FEATURES",
    "MASK",
    "EXTRA_GROUPS",
    "SPECIAL_KEY_SPELLINGS",
    "JET_SOURCE",
    "JET_FEATURES",
    "JET_MASK_PATH",
    "KAPPA_INPUT_PATH",
    "WEIGHT_PATH",
    "KAPPA_TERMS_PATH",
    "SIGNAL_LABEL_PATH",
    "SIGNAL_PROBABILITY_PATH",
    "TRUTH_KAPPA_PATH",
    "TRUTH_PROCESS_PATH",
    "HH_PAIRING_PATHS",
    "EXTRA_PATHS",
    "input_path",
    "mask_path",
    "jet_path",
    "target_path",
    "classification_path",
    "regression_path",
    "weights_path",
    "truth_path",
    "global_extra_path",
    "embedding_path",
    "group_of",
    "strip_group",
    "canonical_path",
    "resolve_dataset",
    "first_mask_path",
    "decode_inputs",
]

# ---- group names (top level of the file) ----
INPUTS = "INPUTS"
TARGETS = "TARGETS"
CLASSIFICATIONS = "CLASSIFICATIONS"
REGRESSIONS = "REGRESSIONS"
EMBEDDINGS = "EMBEDDINGS"
#: Extra groups the generator adds for analysis; never required for training.
WEIGHTS = "WEIGHTS"
TRUTH = "TRUTH"
GLOBAL_EXTRA = "GLOBAL_EXTRA"
EXTRA_GROUPS = (WEIGHTS, TRUTH, GLOBAL_EXTRA)
#: The observables file of `spanet2 dnn features`.
FEATURES = "FEATURES"
#: The padding mask of a sequential input, `INPUTS/<source>/MASK`.
MASK = "MASK"

# Upstream SPANet on Python >= 3.11 writes str(SpecialKey.X) = "SpecialKey.X" as group names.
SPECIAL_KEY_SPELLINGS: dict[str, str] = {
    MASK: "SpecialKey.Mask",
    "EVENT": "SpecialKey.Event",
    INPUTS: "SpecialKey.Inputs",
    TARGETS: "SpecialKey.Targets",
    "PARTICLE": "SpecialKey.Particle",
    REGRESSIONS: "SpecialKey.Regressions",
    "PERMUTATIONS": "SpecialKey.Permutations",
    CLASSIFICATIONS: "SpecialKey.Classifications",
    EMBEDDINGS: "SpecialKey.Embeddings",
    WEIGHTS: "SpecialKey.Weights",
}
_TO_PLAIN = {v: k for k, v in SPECIAL_KEY_SPELLINGS.items()}


# ---- path builders ----
def input_path(source: str, feature: str) -> str:
    """`INPUTS/<source>/<feature>` (a sequential (N, J) or global (N,) feature)."""
    return f"{INPUTS}/{source}/{feature}"


def mask_path(source: str) -> str:
    """`INPUTS/<source>/MASK`, the bool (N, J) padding mask of a sequential input."""
    return input_path(source, MASK)


def target_path(particle: str, daughter: str) -> str:
    """`TARGETS/<particle>/<daughter>`: int64 (N,) jet index, −1 = unmatched (or a predicted quantity)."""
    return f"{TARGETS}/{particle}/{daughter}"


def classification_path(key: str) -> str:
    """`CLASSIFICATIONS/<key>`, e.g. key `EVENT/signal`."""
    return f"{CLASSIFICATIONS}/{key}"


def regression_path(key: str) -> str:
    """`REGRESSIONS/<key>`, e.g. key `EVENT/m_hh`."""
    return f"{REGRESSIONS}/{key}"


def weights_path(name: str) -> str:
    """`WEIGHTS/<name>` (fb per event)."""
    return f"{WEIGHTS}/{name}"


def truth_path(name: str) -> str:
    """`TRUTH/<name>` (generator truth per event)."""
    return f"{TRUTH}/{name}"


def global_extra_path(name: str) -> str:
    """`GLOBAL_EXTRA/<name>` (MET, lepton counts)."""
    return f"{GLOBAL_EXTRA}/{name}"


def embedding_path(*parts: str) -> str:
    """`EMBEDDINGS/<part>/...` (predicted vectors)."""
    return "/".join((EMBEDDINGS, *parts))


def group_of(path: str) -> str:
    """The top-level group of a canonical path: `TARGETS/h1/b1` → `TARGETS`."""
    return path.split("/")[0]


def strip_group(path: str) -> str:
    """The path below its top-level group: `CLASSIFICATIONS/EVENT/signal` → `EVENT/signal`."""
    return path.split("/", 1)[1] if "/" in path else ""


# ---- the HH→4b datasets the generator writes and the analysis reads ----
#: The jet input of the shipped topology and its per-jet features, (N, J) each.
JET_SOURCE = "Source"
JET_FEATURES = ("pt", "eta", "phi", "mass", "btag")


def jet_path(feature: str) -> str:
    """`INPUTS/Source/<feature>`."""
    return input_path(JET_SOURCE, feature)


JET_MASK_PATH = mask_path(JET_SOURCE)
KAPPA_INPUT_PATH = input_path("Kappa", "kappa")
WEIGHT_PATH = weights_path("weight")
#: (N, 3) fb: box, interference, triangle; w(κλ) = w0 + κλ·w1 + κλ²·w2.
KAPPA_TERMS_PATH = weights_path("kappa_terms")
SIGNAL_LABEL_PATH = classification_path("EVENT/signal")
SIGNAL_PROBABILITY_PATH = classification_path("EVENT/signal_probability")
TRUTH_KAPPA_PATH = truth_path("kappa")
TRUTH_PROCESS_PATH = truth_path("process")
#: True or predicted jet indices in pairing-column order: h1 b1, h1 b2, h2 b1, h2 b2.
HH_PAIRING_PATHS: tuple[str, ...] = tuple(target_path(h, b) for h in ("h1", "h2") for b in ("b1", "b2"))
#: The event-level extras the 20-feature DNN set needs, by observable name.
EXTRA_PATHS: dict[str, str] = {
    name: global_extra_path(name) for name in ("met", "met_phi", "n_electrons", "n_muons")
}


# ---- spellings ----
def canonical_path(path: str) -> str:
    """`SpecialKey.Targets/h1/b1` → `TARGETS/h1/b1` (every component; leading/trailing '/' dropped)."""
    return "/".join(_TO_PLAIN.get(part, part) for part in path.strip("/").split("/") if part)


def resolve_dataset(h5: h5py.File | h5py.Group, path: str) -> h5py.Dataset | None:
    """The dataset at `path`, accepting `SpecialKey.*` spellings of each component; None if absent."""
    node: Any = h5
    for part in canonical_path(path).split("/"):
        if not isinstance(node, h5py.Group):
            return None
        if part in node:
            node = node[part]
        elif part in SPECIAL_KEY_SPELLINGS and SPECIAL_KEY_SPELLINGS[part] in node:
            node = node[SPECIAL_KEY_SPELLINGS[part]]
        else:
            return None
    return node if isinstance(node, h5py.Dataset) else None


def first_mask_path(h5: h5py.File, preferred: str | None = None) -> str | None:
    """`INPUTS/<name>/MASK` of the preferred input, else of the first input that has one."""
    if preferred and resolve_dataset(h5, mask_path(preferred)) is not None:
        return mask_path(preferred)
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append(canonical_path(name))

    h5.visititems(visit)
    for name in found:
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == INPUTS and parts[2] == MASK:
            return name
    return None


# ---- decoding the network inputs of a chunk ----
def _fit_jets(values: np.ndarray, jets: int) -> np.ndarray:
    """Cut or zero-pad the jet axis (axis 1) of (N, J, ...) to `jets`."""
    if values.shape[1] == jets:
        return values
    if values.shape[1] > jets:
        return values[:, :jets]
    pad = [(0, 0), (0, jets - values.shape[1])] + [(0, 0)] * (values.ndim - 2)
    return np.pad(values, pad)


def decode_inputs(
    file: Any,
    arrays: Mapping[str, Any],
    topology: Any,
    widths: Mapping[str, int],
    first: int,
    stop: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The network inputs of rows [first, stop) from per-path arrays or h5py datasets (`arrays[path]`).

    `arrays` holds `mask_path(s)` and `input_path(s, f)` of every input of the EventTopology; datasets are
    sliced [first:stop], in-memory arrays (stop None) taken whole. `widths`: jet slots per sequential input
    (cut or zero-padded to it). Returns (sequential {name: (n, J, F) float32, zero on padding},
    masks {name: (n, J) bool}, globals {name: (n, F) float32}). A non-finite feature on a real jet (or any
    global) is a DataError naming the file, the dataset and the event index.
    """

    def rows(name: str) -> np.ndarray:
        values = arrays[name]
        return np.asarray(values if stop is None else values[first:stop])

    sequential, masks, globals_ = {}, {}, {}
    for source in topology.sequential_inputs:
        width = widths[source.name]
        mask = _fit_jets(rows(mask_path(source.name)).astype(bool, copy=False), width)  # (n, J)
        values = np.stack(
            [rows(input_path(source.name, f.name)).astype(np.float32, copy=False) for f in source.features],
            axis=-1,
        )  # (n, J0, F)
        values = _fit_jets(values, width)  # (n, J, F)
        bad = ~np.isfinite(values) & mask[..., None]
        if bad.any():
            event, jet, feature = np.argwhere(bad)[0]
            raise DataError(
                file,
                input_path(source.name, source.features[feature].name),
                f"non-finite value at event {first + event}, jet {jet}",
            )
        sequential[source.name] = np.where(mask[..., None], values, 0.0).astype(np.float32)  # padding → 0
        masks[source.name] = np.ascontiguousarray(mask)
    for source in topology.global_inputs:
        values = np.stack(
            [
                rows(input_path(source.name, f.name)).astype(np.float32, copy=False).reshape(-1)
                for f in source.features
            ],
            axis=-1,
        )  # (n, F)
        if not np.isfinite(values).all():
            event, feature = np.argwhere(~np.isfinite(values))[0]
            raise DataError(
                file,
                input_path(source.name, source.features[feature].name),
                f"non-finite value at event {first + event}",
            )
        globals_[source.name] = values
    return sequential, masks, globals_
