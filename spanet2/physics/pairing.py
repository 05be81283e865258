"""The min-ΔR jet pairing baseline (docs/physics.md §3), vectorised over events."""

from __future__ import annotations

import logging
import os

import numpy as np

from spanet2.physics.kinematics import delta_r

__all__ = ["PAIRINGS", "leading_btagged_jets", "min_dr_pairing", "pair_file"]

logger = logging.getLogger(__name__)

#: The three ways of splitting four objects (positions 0..3) into two pairs.
PAIRINGS = np.array([[0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2]], dtype=np.int64)  # (3, 4)


def leading_btagged_jets(pt: np.ndarray, btag: np.ndarray, mask: np.ndarray, n: int = 4) -> np.ndarray:
    """Indices of the `n` highest-pT b-tagged real jets, pT-descending; −1 where fewer exist.

    pt: (N, J) GeV; btag, mask: (N, J) (any truthy dtype). Returns (N, n) int64.
    """
    pt = np.asarray(pt, dtype=np.float64)
    tagged = np.asarray(btag).astype(bool) & np.asarray(mask).astype(bool)
    key = np.where(tagged, pt, -np.inf)  # untagged/padded jets sort last
    order = np.argsort(-key, axis=1, kind="stable")[:, :n]  # (N, n)
    ok = np.take_along_axis(tagged, order, axis=1)
    return np.where(ok, order, -1).astype(np.int64)


def min_dr_pairing(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mass: np.ndarray,
    btag: np.ndarray,
    mask: np.ndarray,
) -> np.ndarray:
    """Pair the four leading b-tagged jets into two Higgs candidates by the min-ΔR rule.

    Of the three splittings of the four highest-pT b-tagged jets into two pairs, choose the one whose
    leading candidate (higher vector-sum pT) has the smallest ΔR between its two jets.

    Inputs are (N, J) arrays: pt, mass in GeV; eta; phi in rad; btag, mask truthy.
    Returns (N, 4) int64 jet indices [h1b1, h1b2, h2b1, h2b2]: h1 is the higher-pT candidate, the two
    jets inside a candidate are in ascending index order, and the row is −1 where an event has fewer
    than four b-tagged jets.
    """
    pt = np.asarray(pt, dtype=np.float64)
    if pt.ndim != 2:
        raise ValueError(f"min_dr_pairing expects (N, J) arrays, got shape {pt.shape}")
    n_events = pt.shape[0]
    out = np.full((n_events, 4), -1, dtype=np.int64)
    if n_events == 0 or pt.shape[1] < 4:
        return out
    lead = leading_btagged_jets(pt, btag, mask)  # (N, 4)
    ok = (lead >= 0).all(axis=1)
    jets = np.where(lead >= 0, lead, 0)  # safe gather index
    sel_pt = np.take_along_axis(pt, jets, axis=1)  # (N, 4)
    sel_eta = np.take_along_axis(np.asarray(eta, dtype=np.float64), jets, axis=1)
    sel_phi = np.take_along_axis(np.asarray(phi, dtype=np.float64), jets, axis=1)
    px = sel_pt * np.cos(sel_phi)
    py = sel_pt * np.sin(sel_phi)

    # Per splitting s and pair k: positions PAIRINGS[s, 2k], PAIRINGS[s, 2k+1].
    first = PAIRINGS[:, 0::2]  # (3, 2)
    second = PAIRINGS[:, 1::2]  # (3, 2)
    pair_pt = np.hypot(px[:, first] + px[:, second], py[:, first] + py[:, second])  # (N, 3, 2)
    pair_dr = delta_r(
        sel_eta[:, first], sel_phi[:, first], sel_eta[:, second], sel_phi[:, second]
    )  # (N, 3, 2)
    leading_pair = np.argmax(pair_pt, axis=2)  # (N, 3); ties -> the first pair
    leading_dr = np.take_along_axis(pair_dr, leading_pair[..., None], axis=2)[..., 0]  # (N, 3)
    best = np.argmin(leading_dr, axis=1)  # (N,)

    rows = np.arange(n_events)
    lp = leading_pair[rows, best]  # (N,) 0 or 1
    positions = PAIRINGS[best]  # (N, 4) positions into the 4 selected jets
    h1 = np.stack([positions[rows, 2 * lp], positions[rows, 2 * lp + 1]], axis=1)  # (N, 2)
    h2 = np.stack([positions[rows, 2 * (1 - lp)], positions[rows, 2 * (1 - lp) + 1]], axis=1)  # (N, 2)
    h1_jets = np.sort(np.take_along_axis(jets, h1, axis=1), axis=1)
    h2_jets = np.sort(np.take_along_axis(jets, h2, axis=1), axis=1)
    out[ok] = np.concatenate([h1_jets, h2_jets], axis=1)[ok]
    return out


def pair_file(
    input_path: str | os.PathLike, output_path: str | os.PathLike, *, source: str = "Source"
) -> int:
    """Write a copy of a SPANet HDF5 file whose TARGETS/h{1,2}/b{1,2} are the min-ΔR pairing.

    Every other dataset (INPUTS, CLASSIFICATIONS, WEIGHTS, TRUTH, GLOBAL_EXTRA) is copied through; the
    root attribute ``pairing`` = "min_dr". Raises DataError when a jet input is missing. Returns the
    number of events.
    """
    from spanet2.events import layout
    from spanet2.events.hdf5 import list_datasets, open_hdf5, read_datasets, write_datasets

    names = [layout.input_path(source, f) for f in (*layout.JET_FEATURES, layout.MASK)]
    jets = read_datasets(input_path, names)
    pairing = min_dr_pairing(*(jets[n] for n in names))  # (N, 4)
    with open_hdf5(input_path) as h5:
        arrays = {name: ds[()] for name, ds in list_datasets(h5).items() if layout.group_of(name) != layout.TARGETS}
        attrs = dict(h5.attrs)
    arrays.update({name: pairing[:, k].copy() for k, name in enumerate(layout.HH_PAIRING_PATHS)})
    attrs["pairing"] = "min_dr"
    write_datasets(output_path, arrays, attrs=attrs)
    logger.info("min-ΔR pairing of %d events written to %s", len(pairing), output_path)
    return len(pairing)
