"""The DNN baseline's high-level observables (docs/physics.md §4) from any jet pairing, vectorised over events."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from spanet2.atomic import atomic_path
from spanet2.errors import DataError, InputError
from spanet2.events.jets import PaddedJets
from spanet2.events.layout import (
    CLASSIFICATIONS,
    EXTRA_PATHS,
    FEATURES,
    HH_PAIRING_PATHS,
    JET_FEATURES,
    JET_MASK_PATH,
    KAPPA_INPUT_PATH,
    MASK,
    SPECIAL_KEY_SPELLINGS,
    TRUTH,
    WEIGHTS,
    jet_path,
    resolve_dataset,
)
from spanet2.physics.kinematics import delta_r, p4_to_ptetaphim, ptetaphim_to_p4

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_NAMES_NO_EXTRA",
    "EXTRA_FEATURES",
    "M_HH",
    "PAIRING_PATHS",
    "JetChunk",
    "feature_names",
    "valid_pairing",
    "canonical_pairing",
    "high_level_features",
    "read_pairing",
    "iter_event_chunks",
    "iter_feature_chunks",
    "compute_pairing",
    "check_pairing_source",
    "check_same_events",
    "event_count",
    "has_extra",
    "write_features_file",
    "copy_group",
]

logger = logging.getLogger(__name__)

#: The 20 observables, in the DNN's input order. Candidates h1/h2 are ordered by pT (h1 leading);
#: inside each candidate the two jets are ordered by pT; btag_1..4 follow [h1 j1, h1 j2, h2 j1, h2 j2].
FEATURE_NAMES: tuple[str, ...] = (
    "h1_pt", "h1_eta", "h1_phi", "h1_mass",
    "h2_pt", "h2_eta", "h2_phi", "h2_mass",
    "h1_delta_r", "h2_delta_r",
    "met", "met_phi", "n_electrons", "n_muons",
    "btag_1", "btag_2", "btag_3", "btag_4",
    "hh_pt", "hh_mass",
)  # fmt: skip
#: The four observables that need the GLOBAL_EXTRA group (MET and lepton counts).
EXTRA_FEATURES: tuple[str, ...] = ("met", "met_phi", "n_electrons", "n_muons")
#: The 16-feature variant used when MET and leptons are not available.
FEATURE_NAMES_NO_EXTRA: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in EXTRA_FEATURES)
#: Name of the m_HH feature (GeV).
M_HH = "hh_mass"
#: Predicted (or true) jet indices of a SPANet-layout file, in pairing-column order.
PAIRING_PATHS: tuple[str, ...] = HH_PAIRING_PATHS



def feature_names(with_extra: bool = True) -> tuple[str, ...]:
    """The 20 names (with MET/leptons) or the 16-name variant."""
    return FEATURE_NAMES if with_extra else FEATURE_NAMES_NO_EXTRA


def valid_pairing(pairing: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which rows of a pairing name four distinct, existing jets.

    pairing: (N, 4) int jet indices (−1 = none); mask: (N, J) bool real jets. Returns (N,) bool.
    """
    pairing = np.asarray(pairing)
    mask = np.asarray(mask, dtype=bool)
    n_jets_max = mask.shape[1]
    in_range = np.all((pairing >= 0) & (pairing < n_jets_max), axis=1)
    safe = np.clip(pairing, 0, n_jets_max - 1)
    exists = np.all(np.take_along_axis(mask, safe, axis=1), axis=1)
    ordered = np.sort(safe, axis=1)
    distinct = np.all(np.diff(ordered, axis=1) != 0, axis=1)
    return in_range & exists & distinct


def canonical_pairing(pairing: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Reorder a pairing so it is invariant under the h1↔h2 and b1↔b2 symmetries.

    Inside each candidate the higher-pT jet comes first; the candidate with the higher vector-sum pT is h1.
    pairing: (N, 4) int (valid rows); pt, eta...: (N, J). Rows with −1 entries are returned unchanged.
    """
    pairing = np.asarray(pairing, dtype=np.int64)
    n_jets_max = pt.shape[1]
    safe = np.clip(pairing, 0, n_jets_max - 1)
    jet_pt = np.take_along_axis(np.asarray(pt, dtype=np.float64), safe, axis=1)  # (N, 4)
    pairs = safe.reshape(-1, 2, 2)  # (N, candidate, jet)
    pairs_pt = jet_pt.reshape(-1, 2, 2)
    swap_jets = pairs_pt[:, :, 1] > pairs_pt[:, :, 0]  # (N, 2)
    pairs = np.where(swap_jets[:, :, None], pairs[:, :, ::-1], pairs)
    return pairs.reshape(-1, 4)  # candidate order is fixed below, from the summed pT


def high_level_features(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mass: np.ndarray,
    btag: np.ndarray,
    pairing: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    met: np.ndarray | None = None,
    met_phi: np.ndarray | None = None,
    n_electrons: np.ndarray | None = None,
    n_muons: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The high-level observables of docs/physics.md §4 from a pairing.

    pt, eta, phi, mass, btag: (N, J) jets (GeV, rad); pairing: (N, 4) jet indices [h1 j1, h1 j2, h2 j1, h2 j2]
    from any method (−1 = missing); mask: (N, J) bool real jets (default: all). met, met_phi (N,) GeV, rad;
    n_electrons, n_muons (N,). With all four extras given the 20 features of FEATURE_NAMES, with none of
    them the 16 of FEATURE_NAMES_NO_EXTRA.

    Returns (features (N, F) float32, canonical pairing (N, 4) int64): h1 is the candidate with the higher
    vector-sum pT and each candidate's leading-pT jet comes first, so features do not depend on how a
    method orders symmetric particles. Rows whose pairing is not four distinct real jets are NaN and their
    pairing row is −1.
    """
    pt = np.asarray(pt, dtype=np.float64)
    n_events, n_jets_max = pt.shape
    pairing = np.asarray(pairing, dtype=np.int64)
    if pairing.shape != (n_events, 4):
        raise ValueError(f"pairing must have shape ({n_events}, 4), got {pairing.shape}")
    extras = (met, met_phi, n_electrons, n_muons)
    n_given = sum(x is not None for x in extras)
    if n_given not in (0, 4):
        raise ValueError("give all of met, met_phi, n_electrons, n_muons or none of them")
    if mask is None:
        mask = np.ones((n_events, n_jets_max), dtype=bool)
    valid = valid_pairing(pairing, mask)
    ordered = canonical_pairing(pairing, pt)  # (N, 4), jets ordered inside each candidate

    def gather(x: np.ndarray) -> np.ndarray:
        return np.take_along_axis(np.asarray(x, dtype=np.float64), ordered, axis=1)  # (N, 4)

    j_pt, j_eta, j_phi, j_mass, j_btag = (gather(x) for x in (pt, eta, phi, mass, btag))
    p4 = ptetaphim_to_p4(j_pt, j_eta, j_phi, j_mass)  # (N, 4 jets, 4 components)
    cand_p4 = p4.reshape(n_events, 2, 2, 4).sum(axis=2)  # (N, 2 candidates, 4)
    cand_pt = np.hypot(cand_p4[..., 1], cand_p4[..., 2])  # (N, 2)
    swap = cand_pt[:, 1] > cand_pt[:, 0]  # (N,)
    cand_order = np.where(swap[:, None], [1, 0], [0, 1])  # (N, 2)
    jet_order = (2 * cand_order[:, :, None] + np.arange(2)).reshape(n_events, 4)  # (N, 4)
    ordered = np.take_along_axis(ordered, jet_order, axis=1)
    j_eta, j_phi, j_btag = (np.take_along_axis(x, jet_order, axis=1) for x in (j_eta, j_phi, j_btag))
    cand_p4 = np.take_along_axis(cand_p4, cand_order[:, :, None], axis=1)  # (N, 2, 4)
    h_pt, h_eta, h_phi, h_mass = p4_to_ptetaphim(cand_p4)  # each (N, 2)
    dr = delta_r(j_eta[:, 0::2], j_phi[:, 0::2], j_eta[:, 1::2], j_phi[:, 1::2])  # (N, 2)
    hh_pt, _, _, hh_mass = p4_to_ptetaphim(cand_p4.sum(axis=1))  # (N,)

    columns = [h_pt[:, 0], h_eta[:, 0], h_phi[:, 0], h_mass[:, 0],
               h_pt[:, 1], h_eta[:, 1], h_phi[:, 1], h_mass[:, 1],
               dr[:, 0], dr[:, 1]]  # fmt: skip
    if n_given == 4:
        columns += [np.asarray(x, dtype=np.float64).reshape(n_events) for x in extras]
    columns += [j_btag[:, i] for i in range(4)] + [hh_pt, hh_mass]
    features = np.stack(columns, axis=1).astype(np.float32)  # (N, F)
    features[~valid] = np.nan
    ordered = np.where(valid[:, None], ordered, -1)
    return features, ordered


# ----------------------------------------------------------------------------------------- file access


def copy_group(source: h5py.File, target: h5py.File, name: str) -> bool:
    """Copy group `name` (or its upstream `SpecialKey.*` spelling) of `source` to `target` as `name`."""
    for spelling in (name, SPECIAL_KEY_SPELLINGS.get(name)):
        if spelling and spelling in source:
            source.copy(source[spelling], target, name=name)
            return True
    return False


def _open(path: str | os.PathLike) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "file not found (expected an HDF5 event file)")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise DataError(path, None, "not a readable HDF5 file") from None


@dataclass
class JetChunk(PaddedJets):
    """A slice of events [start, stop) of an HDF5 event file: PaddedJets (N, J), extras (N,) or None."""

    start: int = field(kw_only=True)
    stop: int = field(kw_only=True)
    extras: dict[str, np.ndarray] | None = field(kw_only=True)


def _event_count(h5: h5py.File, path: str | os.PathLike) -> int:
    mask = resolve_dataset(h5, JET_MASK_PATH)
    if mask is None:
        raise DataError(path, JET_MASK_PATH, "missing (expected the jet mask, bool (N, J))")
    return int(mask.shape[0])


def iter_event_chunks(
    path: str | os.PathLike, *, chunk_size: int = 65536, with_extra: bool | None = None
) -> Iterator[JetChunk]:
    """Read the jets (and MET/lepton extras) of an HDF5 event file in chunks of events.

    with_extra: True requires GLOBAL_EXTRA, False ignores it, None uses it when all four datasets exist.
    """
    with _open(path) as h5:
        n_events = _event_count(h5, path)
        datasets = {}
        for name in (MASK, *JET_FEATURES):
            ds = resolve_dataset(h5, jet_path(name))
            if ds is None:
                raise DataError(path, jet_path(name), "missing (expected a (N, J) jet array)")
            if ds.shape[0] != n_events:
                raise DataError(
                    path, jet_path(name), f"has {ds.shape[0]} events, MASK has {n_events}"
                )
            datasets[name] = ds
        extra_ds = {k: resolve_dataset(h5, p) for k, p in EXTRA_PATHS.items()}
        have_extra = all(ds is not None for ds in extra_ds.values())
        if with_extra and not have_extra:
            missing = [p for k, p in EXTRA_PATHS.items() if extra_ds[k] is None]
            raise DataError(path, missing[0], "missing; the 20-feature set needs MET and lepton counts")
        use_extra = have_extra if with_extra is None else with_extra
        for start in range(0, n_events, chunk_size):
            stop = min(start + chunk_size, n_events)
            arrays = {k: ds[start:stop] for k, ds in datasets.items()}
            extras = {k: extra_ds[k][start:stop] for k in EXTRA_PATHS} if use_extra else None
            yield JetChunk(arrays["pt"], arrays["eta"], arrays["phi"], arrays["mass"], arrays["btag"],
                           arrays[MASK].astype(bool), start=start, stop=stop, extras=extras)  # fmt: skip


def read_pairing(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Jet indices (N, 4) from a predictions file's `TARGETS/h1/b1, h1/b2, h2/b1, h2/b2`."""
    with _open(path) as h5:
        columns = []
        for key in PAIRING_PATHS:
            ds = resolve_dataset(h5, key)
            if ds is None:
                raise DataError(path, key, "missing (expected predicted jet indices, int (N,))")
            columns.append(np.asarray(ds[start:stop], dtype=np.int64))
    return np.stack(columns, axis=1)  # (N, 4)


def compute_pairing(chunk: JetChunk, pairing: str | os.PathLike) -> np.ndarray:
    """(N, 4) jet indices for a chunk: `"min-dr"` runs the min-ΔR baseline, otherwise read the file."""
    if str(pairing) == "min-dr":
        from spanet2.physics.pairing import min_dr_pairing

        return np.asarray(
            min_dr_pairing(chunk.pt, chunk.eta, chunk.phi, chunk.mass, chunk.btag.astype(bool), chunk.mask),
            dtype=np.int64,
        )
    return read_pairing(pairing, chunk.start, chunk.stop)


def check_pairing_source(pairing: str | os.PathLike, n_events: int, event_file: str | os.PathLike) -> None:
    """Fail early (DataError) when a predictions file does not match the event file's event count."""
    if str(pairing) == "min-dr":
        return
    with _open(pairing) as h5:
        for key in PAIRING_PATHS:
            ds = resolve_dataset(h5, key)
            if ds is None:
                raise DataError(pairing, key, "missing (expected predicted jet indices, int (N,))")
            if ds.shape[0] != n_events:
                raise DataError(pairing, key, f"has {ds.shape[0]} events but {event_file} has {n_events}; "
                                "the predictions must come from the same event file")  # fmt: skip
        with _open(event_file) as events:
            check_same_events(h5, str(pairing), events, str(event_file))


def check_same_events(pred: h5py.File, pred_path: str, inp: h5py.File, inp_path: str) -> None:
    """When a predictions file carries a copy of INPUTS, its first jets must be the input's."""
    copied, original = resolve_dataset(pred, jet_path("pt")), resolve_dataset(inp, jet_path("pt"))
    if copied is None or original is None or copied.shape != original.shape:
        return
    n = min(1000, original.shape[0])
    if not np.array_equal(copied[:n], original[:n], equal_nan=True):
        raise DataError(pred_path, jet_path("pt"), f"the events differ from {inp_path}'s: these predictions "
                        "were made on another file (or another order)")  # fmt: skip


def event_count(path: str | os.PathLike) -> int:
    """Number of events of an HDF5 event file (length of INPUTS/Source/MASK)."""
    with _open(path) as h5:
        return _event_count(h5, path)


def iter_feature_chunks(
    path: str | os.PathLike,
    pairing: str | os.PathLike = "min-dr",
    *,
    chunk_size: int = 65536,
    with_extra: bool | None = None,
) -> Iterator[tuple[JetChunk, np.ndarray, np.ndarray]]:
    """Yield (chunk, features (n, F) float32, canonical pairing (n, 4)) over an event file, chunk by chunk."""
    check_pairing_source(pairing, event_count(path), path)
    for chunk in iter_event_chunks(path, chunk_size=chunk_size, with_extra=with_extra):
        raw = compute_pairing(chunk, pairing)
        extras = chunk.extras or {}
        features, ordered = high_level_features(
            chunk.pt, chunk.eta, chunk.phi, chunk.mass, chunk.btag, raw, mask=chunk.mask, **extras
        )
        yield chunk, features, ordered


def has_extra(path: str | os.PathLike) -> bool:
    """True when an event file holds all four GLOBAL_EXTRA datasets the 20-feature set needs."""
    with _open(path) as h5:
        return all(resolve_dataset(h5, p) is not None for p in EXTRA_PATHS.values())


def write_features_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    pairing: str | os.PathLike = "min-dr",
    with_extra: bool | None = None,
    chunk_size: int = 65536,
) -> dict[str, object]:
    """Write `FEATURES/<name>` (N,) float32 per observable and `FEATURES/pairing` (N, 4) for an event file.

    The label, weights and truth groups of the input (CLASSIFICATIONS, WEIGHTS, TRUTH, INPUTS/Kappa) are
    copied so the file alone can train and evaluate the DNN. Returns a summary (events, features, invalid).
    """
    n_events = event_count(input_path)
    use_extra = has_extra(input_path) if with_extra is None else with_extra
    names = feature_names(use_extra)
    n_invalid = 0
    with atomic_path(output_path) as tmp, h5py.File(tmp, "w") as out:
        group = out.create_group(FEATURES)
        group.attrs["names"] = list(names)
        group.attrs["pairing"] = str(pairing)
        datasets = {n: group.create_dataset(n, shape=(n_events,), dtype="f4") for n in names}
        pairing_ds = group.create_dataset("pairing", shape=(n_events, 4), dtype="i8")
        for chunk, features, ordered in iter_feature_chunks(
            input_path, pairing, chunk_size=chunk_size, with_extra=use_extra
        ):
            for i, name in enumerate(names):
                datasets[name][chunk.start : chunk.stop] = features[:, i]
            pairing_ds[chunk.start : chunk.stop] = ordered
            n_invalid += int(np.count_nonzero(ordered[:, 0] < 0))
        with h5py.File(input_path, "r") as src:
            for group_name in (CLASSIFICATIONS, WEIGHTS, TRUTH):
                copy_group(src, out, group_name)
            kappa = resolve_dataset(src, KAPPA_INPUT_PATH)
            if kappa is not None:
                group_path, _, name = KAPPA_INPUT_PATH.rpartition("/")
                src.copy(kappa, out.require_group(group_path), name=name)
    if n_invalid:
        logger.warning(
            "%s: %d of %d events have no valid pairing (features NaN)", input_path, n_invalid, n_events
        )
    return {"events": n_events, "features": list(names), "invalid_pairings": n_invalid}
