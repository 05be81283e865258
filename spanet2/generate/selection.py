"""Truth matching (jets ↔ Higgs b quarks), the four-tag cut and the SPANet HDF5 contract dict."""

from __future__ import annotations

import logging

import numpy as np

from spanet2.events import layout as L
from spanet2.events.jets import JetEvents
from spanet2.generate.partons import PartonEvents
from spanet2.physics.kinematics import delta_r, p4_mass, p4_to_ptetaphim

__all__ = [
    "FOUR_TAG_MIN_PT",
    "FOUR_TAG_MAX_ETA",
    "MATCH_DR",
    "four_tag_mask",
    "match_jets_to_quarks",
    "targets_from_matching",
    "finalize_events",
]

logger = logging.getLogger(__name__)

FOUR_TAG_MIN_PT = 40.0  # GeV (docs/physics.md §1)
FOUR_TAG_MAX_ETA = 2.5
MATCH_DR = 0.4


def match_jets_to_quarks(
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    jet_mask: np.ndarray,
    quark_eta: np.ndarray,
    quark_phi: np.ndarray,
    *,
    max_dr: float = MATCH_DR,
) -> np.ndarray:
    """Greedy ΔR matching of jets to quarks, one jet per quark and one quark per jet.

    jet_eta, jet_phi, jet_mask: (N, J); quark_eta, quark_phi: (N, Q) (NaN = no quark).
    Repeatedly takes the globally smallest remaining (jet, quark) ΔR below `max_dr` in each event.
    Returns (N, Q) int64 jet indices, −1 for an unmatched quark.
    """
    jet_eta = np.asarray(jet_eta, dtype=np.float64)
    quark_eta = np.asarray(quark_eta, dtype=np.float64)
    n_events, n_jets = jet_eta.shape
    n_quarks = quark_eta.shape[1]
    out = np.full((n_events, n_quarks), -1, dtype=np.int64)
    if n_events == 0 or n_jets == 0:
        return out
    dr = delta_r(
        jet_eta[:, :, None],
        np.asarray(jet_phi)[:, :, None],
        quark_eta[:, None, :],
        np.asarray(quark_phi)[:, None, :],
    )  # (N, J, Q)
    usable = np.asarray(jet_mask, dtype=bool)[:, :, None] & (dr < max_dr)  # NaN compares False
    dr = np.where(usable, dr, np.inf).reshape(n_events, n_jets * n_quarks)  # (N, J*Q)
    rows = np.arange(n_events)
    for _ in range(min(n_jets, n_quarks)):
        flat = np.argmin(dr, axis=1)  # (N,)
        found = np.isfinite(dr[rows, flat])
        if not found.any():
            break
        jet, quark = np.divmod(flat, n_quarks)
        out[rows[found], quark[found]] = jet[found]
        view = dr.reshape(n_events, n_jets, n_quarks)  # (N, J, Q)
        view[rows[found], jet[found], :] = np.inf
        view[rows[found], :, quark[found]] = np.inf
    return out


def four_tag_mask(jets: JetEvents) -> np.ndarray:
    """(N,) bool: at least four b-tagged jets with pT > 40 GeV and |η| < 2.5."""
    good = (
        np.asarray(jets.mask, bool)
        & np.asarray(jets.btag, bool)
        & (jets.pt > FOUR_TAG_MIN_PT)
        & (np.abs(jets.eta) < FOUR_TAG_MAX_ETA)
    )
    return good.sum(axis=1) >= 4


def targets_from_matching(matched: np.ndarray, is_signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets (N, 4) [h1b1, h1b2, h2b1, h2b2] and the number of fully matched Higgs (N,) int8.

    matched: (N, 4) jet index per quark [h1 b, h1 bbar, h2 b, h2 bbar]. Daughters of a fully matched
    Higgs are stored ascending (the b1 ↔ b2 symmetry); background rows are all −1.
    """
    targets = np.where(np.asarray(is_signal, bool)[:, None], matched, -1).astype(np.int64)
    pairs = targets.reshape(-1, 2, 2)  # (N, higgs, daughter)
    full = (pairs >= 0).all(axis=2)  # (N, 2)
    pairs = np.where(full[..., None], np.sort(pairs, axis=2), pairs)
    return pairs.reshape(-1, 4), full.sum(axis=1).astype(np.int8)


def finalize_events(
    jets: JetEvents,
    partons: PartonEvents,
    *,
    kappa_input: np.ndarray,
    max_jets: int = 10,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Apply the four-tag cut and build the HDF5 contract dict for the passing events.

    jets: (N, J) reconstructed jets; partons: the N parton-level events they came from; kappa_input:
    (N,) the κλ fed to the network (signal: generated κλ; background: drawn from the κλ list).
    Jets are pT-ordered and cut to `max_jets`; jets ↔ Higgs b quarks are matched within ΔR < 0.4.
    Weights are passed through unchanged (the caller normalises files). `rng` is unused (kept for the
    interface; the selection is deterministic).

    Returns {dataset path: array} with M = number of passing events: INPUTS/Source/{MASK (M, max_jets)
    bool, mass, pt, eta, phi, btag float32}, INPUTS/Kappa/kappa (M,) float32, TARGETS/h{1,2}/b{1,2}
    (M,) int64, CLASSIFICATIONS/EVENT/signal (M,) int64, WEIGHTS/{weight (M,), kappa_terms (M, 3)} fb,
    TRUTH/{process, kappa, n_jets, n_higgs_matched, m_hh, higgs_pt (M, 2), b_pt, b_eta, b_phi (M, 4)},
    GLOBAL_EXTRA/{met, met_phi, n_electrons, n_muons}.
    """
    del rng
    n_events = len(jets)
    if len(partons) != n_events:
        raise ValueError(f"finalize_events: {n_events} jet events but {len(partons)} parton events")
    kappa_input = np.broadcast_to(np.asarray(kappa_input, dtype=np.float32), (n_events,))
    passed = four_tag_mask(jets)
    idx = np.flatnonzero(passed)
    j = jets.take(idx)
    p = partons.take(idx)
    m = len(idx)

    # pT-order the jets (padding last) and keep at most max_jets.
    key = np.where(np.asarray(j.mask, bool), np.asarray(j.pt, np.float64), -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :max_jets]  # (M, <=max_jets)
    width = order.shape[1]

    def gather(a: np.ndarray, dtype) -> np.ndarray:
        out = np.zeros((m, max_jets), dtype=dtype)
        out[:, :width] = np.take_along_axis(np.asarray(a), order, axis=1)
        return out

    mask = gather(j.mask, bool)
    pt = np.where(mask, gather(j.pt, np.float32), 0).astype(np.float32)
    eta = np.where(mask, gather(j.eta, np.float32), 0).astype(np.float32)
    phi = np.where(mask, gather(j.phi, np.float32), 0).astype(np.float32)
    mass = np.where(mask, gather(j.mass, np.float32), 0).astype(np.float32)
    btag = (mask & gather(j.btag, bool)).astype(np.float32)

    b_pt, b_eta, b_phi, _ = p4_to_ptetaphim(p.b)  # (M, 4) each
    is_signal = np.asarray(p.process) == 1
    quark_eta = np.where(is_signal[:, None], b_eta, np.nan)
    matched = match_jets_to_quarks(eta, phi, mask, quark_eta, b_phi)  # (M, 4)
    targets, n_higgs = targets_from_matching(matched, is_signal)

    if p.higgs is not None:
        higgs = np.where(np.isfinite(p.higgs), p.higgs, 0.0)
        m_hh_signal = p4_mass(higgs.sum(axis=1))
        higgs_pt = np.hypot(higgs[..., 1], higgs[..., 2])  # (M, 2)
    else:
        m_hh_signal = np.zeros(m)
        higgs_pt = np.zeros((m, 2))
    m_4b = p4_mass(p.b.sum(axis=1))
    m_hh = np.where(is_signal & (m_hh_signal > 0), m_hh_signal, m_4b)
    higgs_pt = np.where(is_signal[:, None], higgs_pt, np.nan)

    return {
        L.JET_MASK_PATH: mask,
        L.jet_path("mass"): mass,
        L.jet_path("pt"): pt,
        L.jet_path("eta"): eta,
        L.jet_path("phi"): phi,
        L.jet_path("btag"): btag,
        L.KAPPA_INPUT_PATH: kappa_input[idx].astype(np.float32),
        **{path: targets[:, k].copy() for k, path in enumerate(L.HH_PAIRING_PATHS)},
        L.SIGNAL_LABEL_PATH: is_signal.astype(np.int64),
        L.WEIGHT_PATH: np.asarray(p.weight, dtype=np.float64),
        L.KAPPA_TERMS_PATH: np.asarray(p.kappa_terms, dtype=np.float64),
        L.TRUTH_PROCESS_PATH: np.asarray(p.process, dtype=np.int8),
        L.TRUTH_KAPPA_PATH: np.where(is_signal, p.kappa, np.nan).astype(np.float32),
        L.truth_path("n_jets"): mask.sum(axis=1).astype(np.int16),
        L.truth_path("n_higgs_matched"): n_higgs,
        L.truth_path("m_hh"): m_hh.astype(np.float32),
        L.truth_path("higgs_pt"): higgs_pt.astype(np.float32),
        L.truth_path("b_pt"): b_pt.astype(np.float32),
        L.truth_path("b_eta"): b_eta.astype(np.float32),
        L.truth_path("b_phi"): b_phi.astype(np.float32),
        L.EXTRA_PATHS["met"]: np.asarray(j.met, dtype=np.float32),
        L.EXTRA_PATHS["met_phi"]: np.asarray(j.met_phi, dtype=np.float32),
        L.EXTRA_PATHS["n_electrons"]: np.asarray(j.n_electrons, dtype=np.int16),
        L.EXTRA_PATHS["n_muons"]: np.asarray(j.n_muons, dtype=np.int16),
    }
