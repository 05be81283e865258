"""From Pythia's event record to particle-level jets, leptons, neutrinos and the H → b b̄ truth (vectorised).

Per batch the showered events come back as awkward arrays (``nextBatch``); everything here works on
their flattened particle arrays at once:

- jets: anti-kT R = 0.4 (fastjet; the detector parameters' ``jet_radius``) on visible final-state
  particles with |η| < 5, isolated leptons and neutrinos removed; kept above 10 GeV before the detector
  response (``response.py``) smears and cuts them.
- truth flavour: b when a last-in-chain B hadron with pT > 5 GeV lies within ΔR < 0.4 of the jet, else c
  for a C hadron, else light.
- neutrinos: their vector pT sum per event (the truth part of the MET).
- leptons: final-state e / μ with pT > 10 GeV, |η| < 2.5 and a relative isolation (scalar pT sum of other
  visible particles within ΔR < 0.3, over the lepton pT) below 0.12 (e) / 0.25 (μ), as in the Delphes
  CMS card; no identification efficiency.
- truth quarks: ISR gives the Higgs pair a transverse recoil, so the truth-matching reference becomes
  the H → b b̄ quarks of Pythia's event record (``_higgs_decays``; ``_showered_truth`` puts them into a
  copy of the caller's partons).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import awkward as ak
import fastjet
import numpy as np

from spanet2.generate.partons import PartonEvents
from spanet2.physics.kinematics import delta_r

if TYPE_CHECKING:  # only a type here; shower.py imports this module
    from spanet2.generate.pythia.shower import PythiaSettings

__all__ = ["ShoweredBlock"]


@dataclass
class ShoweredBlock:
    """Particle-level jets of a block of events (before detector smearing and tagging).

    jet_p4: (N, J, 4) (E, px, py, pz) GeV, pT-descending, zeros where absent; jet_mask (N, J) bool;
    flavour (N, J) int8 (5, 4, 0); nu_px, nu_py (N,) GeV; n_electrons, n_muons (N,) int16;
    failed (N,) bool (Pythia gave up on the event: no jets);
    higgs_b (N, 4, 4) (E, px, py, pz) of the Higgs decay quarks in the event record (after the ISR recoil),
    in the input's order [H1 b, H1 b̄, H2 b, H2 b̄]; higgs (N, 2, 4) their parents; NaN where absent.
    """

    jet_p4: np.ndarray
    jet_mask: np.ndarray
    flavour: np.ndarray
    nu_px: np.ndarray
    nu_py: np.ndarray
    n_electrons: np.ndarray
    n_muons: np.ndarray
    failed: np.ndarray
    higgs_b: np.ndarray
    higgs: np.ndarray


def _heaviest_quark(pdg: np.ndarray) -> np.ndarray:
    """Heaviest quark flavour (0 when none) of hadrons; 0 for leptons, quarks, gluons, diquarks."""
    a = np.abs(pdg)
    code = a % 10000  # strip the radial/orbital digits of excited states
    q1, q2, q3 = (code // 1000) % 10, (code // 100) % 10, (code // 10) % 10
    hadron = (a >= 100) & (a < 1_000_000) & (q3 != 0)
    return np.where(hadron, np.where(q1 > 0, q1, q2), 0)


def _pad(
    values: np.ndarray, event: np.ndarray, n_events: int, fill=np.nan, width: int | None = None
) -> np.ndarray:
    """Scatter flat values (M,) with event index (M,) (sorted) into (n_events, width) rows, padded."""
    counts = np.bincount(event, minlength=n_events)
    width = int(counts.max(initial=0)) if width is None else width
    out = np.full((n_events, max(width, 1)), fill, dtype=np.result_type(values, type(fill)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(event)) - starts[event]
    keep = slot < out.shape[1]
    out[event[keep], slot[keep]] = values[keep]
    return out


def _eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), np.sign(pz) * 1e3))
    return pt, eta, np.arctan2(py, px)


def _same_event_pairs(
    cand: np.ndarray, vis_event: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All (candidate, particle of the same event) pairs: (T,) candidate position, (T,) flat particle index."""
    ev = vis_event[cand]
    n_pairs = counts[ev]
    total = int(n_pairs.sum())
    owner = np.repeat(np.arange(cand.size), n_pairs)  # (T,)
    offset = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    other = starts[ev][owner] + offset  # (T,) flat visible index
    return owner, other


def _higgs_decays(
    pid: np.ndarray,
    status: np.ndarray,
    mother: np.ndarray,
    has_mother: np.ndarray,
    event_of: np.ndarray,
    n_events: int,
    p4: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The H → b b̄ quarks of the event record, (N, 4, 4), and their Higgs parents, (N, 2, 4); NaN where absent.

    Flat record arrays (M,): pid, status, mother (global index of mother1), has_mother, event_of; p4 (M, 4).
    Each decay quark's Higgs is traced back through its recoil copies to the hard-process Higgs (status
    −22); the first hard-process Higgs of an event is H1 (the input order), b before b̄.
    """
    quarks = np.full((n_events, 4, 4), np.nan)
    parents = np.full((n_events, 2, 4), np.nan)
    is_b = (np.abs(pid) == 5) & has_mother & (pid[mother] == 25)
    cand = np.flatnonzero(is_b)
    if cand.size == 0:
        return quarks, parents
    decayed = mother[cand]  # the Higgs copy that decayed
    origin = decayed.copy()
    for _ in range(64):  # recoil copies: follow mother1 while it is a Higgs
        up = mother[origin]
        step = (np.abs(status[origin]) != 22) & has_mother[origin] & (pid[up] == 25)
        if not step.any():
            break
        origin = np.where(step, up, origin)
    hard_higgs = np.flatnonzero((pid == 25) & (np.abs(status) == 22))
    first_of_event = np.full(n_events, np.iinfo(np.int64).max)
    np.minimum.at(first_of_event, event_of[hard_higgs], hard_higgs)
    event = event_of[cand]
    which = (origin != first_of_event[event]).astype(np.int64)  # 0: H1, 1: H2
    slot = 2 * which + (pid[cand] < 0)
    per_event = np.bincount(event * 4 + slot, minlength=4 * n_events).reshape(n_events, 4)
    complete = (per_event == 1).all(axis=1)
    keep = complete[event]
    quarks[event[keep], slot[keep]] = p4[cand[keep]]
    parents[event[keep], which[keep]] = p4[decayed[keep]]
    return quarks, parents


@functools.cache
def _quiet_fastjet() -> None:
    """Send fastjet's one-time banner nowhere (it would land on the CLI's stdout); once per process."""
    try:
        from fastjet import _swig

        _swig.ClusterSequence.set_fastjet_banner_stream(None)
    except (ImportError, AttributeError):  # pragma: no cover - other fastjet builds
        pass


def _extract(events, n_events: int, settings: PythiaSettings, r: float) -> ShoweredBlock:
    """The ShoweredBlock of `n_events` showered events (awkward, Pythia's ``prt`` record per event).

    Jets are anti-kT with radius `r`; the cuts (hadron pT, isolation, ...) come from `settings`.
    """
    _quiet_fastjet()
    prt = events.prt
    counts = ak.to_numpy(ak.num(prt)).astype(np.int64)  # (n,)
    event_of = np.repeat(np.arange(n_events), counts)  # (M,)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pid = ak.to_numpy(ak.flatten(prt.id)).astype(np.int64)
    status = ak.to_numpy(ak.flatten(prt.status))
    mother1 = ak.to_numpy(ak.flatten(prt.mother1)).astype(np.int64)
    p = prt.p
    px = ak.to_numpy(ak.flatten(p.px))
    py = ak.to_numpy(ak.flatten(p.py))
    pz = ak.to_numpy(ak.flatten(p.pz))
    energy = ak.to_numpy(ak.flatten(p.e))
    pt, eta, phi = _eta_phi(px, py, pz)
    apid = np.abs(pid)
    final = status > 0

    # --- truth hadrons: last-in-chain B (C) hadrons with pT > 5 GeV
    heavy = _heaviest_quark(pid)
    has_mother = (mother1 > 0) & (mother1 < np.repeat(counts, counts))
    mother_global = np.where(has_mother, offsets[event_of] + mother1, 0)
    not_last = np.zeros(len(pid), dtype=bool)
    for flavour in (5, 4):
        child = (heavy == flavour) & has_mother
        parent = mother_global[child]
        not_last[parent[heavy[parent] == flavour]] = True
    hadron_ok = ~not_last & (pt > settings.hadron_min_pt)
    higgs_b, higgs = _higgs_decays(
        pid, status, mother_global, has_mother, event_of, n_events, np.stack([energy, px, py, pz], axis=1)
    )
    b_had = np.flatnonzero((heavy == 5) & hadron_ok)
    c_had = np.flatnonzero((heavy == 4) & hadron_ok)

    # --- neutrinos (MET) and visible particles
    neutrino = final & ((apid == 12) | (apid == 14) | (apid == 16))
    nu_px = np.bincount(event_of[neutrino], weights=px[neutrino], minlength=n_events)
    nu_py = np.bincount(event_of[neutrino], weights=py[neutrino], minlength=n_events)
    visible = np.flatnonzero(final & ~neutrino & (np.abs(eta) < settings.particle_max_eta))
    vis_event = event_of[visible]
    vis_counts = np.bincount(vis_event, minlength=n_events)
    vis_starts = np.concatenate([[0], np.cumsum(vis_counts)[:-1]])
    v_pt, v_eta, v_phi = pt[visible], eta[visible], phi[visible]

    # --- isolated leptons
    lep_id = apid[visible]
    cand = np.flatnonzero(
        ((lep_id == 11) | (lep_id == 13))
        & (v_pt > settings.lepton_min_pt)
        & (np.abs(v_eta) < settings.lepton_max_eta)
    )
    isolated_local = np.zeros(cand.size, dtype=bool)
    if cand.size:
        owner, other = _same_event_pairs(cand, vis_event, vis_starts, vis_counts)
        dr = delta_r(v_eta[cand][owner], v_phi[cand][owner], v_eta[other], v_phi[other])
        near = (dr < settings.isolation_dr) & (other != cand[owner])
        iso_sum = np.bincount(owner[near], weights=v_pt[other[near]], minlength=cand.size)
        limit = np.where(lep_id[cand] == 11, settings.electron_isolation, settings.muon_isolation)
        isolated_local = iso_sum / v_pt[cand] < limit
    iso = cand[isolated_local]
    n_electrons = np.bincount(vis_event[iso][lep_id[iso] == 11], minlength=n_events).astype(np.int16)
    n_muons = np.bincount(vis_event[iso][lep_id[iso] == 13], minlength=n_events).astype(np.int16)

    # --- anti-kT jets on the visible particles minus isolated leptons
    use = np.ones(visible.size, dtype=bool)
    use[iso] = False
    inputs_idx = visible[use]
    jet_counts = np.bincount(event_of[inputs_idx], minlength=n_events)
    particles = ak.unflatten(
        ak.zip({"px": px[inputs_idx], "py": py[inputs_idx], "pz": pz[inputs_idx], "E": energy[inputs_idx]}),
        jet_counts,
    )
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, r)
    clustered = fastjet.ClusterSequence(particles, jetdef).inclusive_jets(min_pt=settings.jet_cluster_min_pt)
    n_jet = ak.to_numpy(ak.num(clustered)).astype(np.int64)
    jet_event = np.repeat(np.arange(n_events), n_jet)
    j_px = ak.to_numpy(ak.flatten(clustered.px))
    j_py = ak.to_numpy(ak.flatten(clustered.py))
    j_pz = ak.to_numpy(ak.flatten(clustered.pz))
    j_e = ak.to_numpy(ak.flatten(clustered.E))
    j_pt, j_eta, j_phi = _eta_phi(j_px, j_py, j_pz)
    # pT-descending within each event
    order = np.lexsort((-j_pt, jet_event))
    jet_event, j_px, j_py, j_pz, j_e, j_pt, j_eta, j_phi = (
        a[order] for a in (jet_event, j_px, j_py, j_pz, j_e, j_pt, j_eta, j_phi)
    )
    width = max(int(n_jet.max(initial=0)), 1)
    jet_p4 = np.stack([_pad(a, jet_event, n_events, 0.0, width) for a in (j_e, j_px, j_py, j_pz)], axis=-1)
    jet_mask = _pad(np.ones(len(jet_event), dtype=bool), jet_event, n_events, False, width)
    eta_pad = _pad(j_eta, jet_event, n_events, np.nan, width)  # (n, J)
    phi_pad = _pad(j_phi, jet_event, n_events, np.nan, width)

    def near_any(hadrons: np.ndarray) -> np.ndarray:
        if hadrons.size == 0:
            return np.zeros((n_events, width), dtype=bool)
        h_eta = _pad(eta[hadrons], event_of[hadrons], n_events)  # (n, H)
        h_phi = _pad(phi[hadrons], event_of[hadrons], n_events)
        dr = delta_r(
            eta_pad[:, :, None], phi_pad[:, :, None], h_eta[:, None, :], h_phi[:, None, :]
        )  # (n, J, H)
        return (dr < settings.flavour_dr).any(axis=2)  # NaN compares False

    flavour = np.where(near_any(b_had), 5, np.where(near_any(c_had), 4, 0)).astype(np.int8)
    flavour = np.where(jet_mask, flavour, 0).astype(np.int8)
    return ShoweredBlock(
        jet_p4,
        jet_mask,
        flavour,
        nu_px,
        nu_py,
        n_electrons,
        n_muons,
        np.zeros(n_events, dtype=bool),
        higgs_b,
        higgs,
    )


def _extract_empty() -> ShoweredBlock:
    """A block of no events (one jet slot), for an empty input or a block Pythia gave nothing back for."""
    return ShoweredBlock(
        np.zeros((0, 1, 4)),
        np.zeros((0, 1), bool),
        np.zeros((0, 1), np.int8),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0, np.int16),
        np.zeros(0, np.int16),
        np.zeros(0, bool),
        np.zeros((0, 4, 4)),
        np.zeros((0, 2, 4)),
    )


def _showered_truth(partons: PartonEvents, block: ShoweredBlock) -> PartonEvents:
    """A copy of `partons` whose signal b quarks and Higgs bosons are the event record's (after ISR recoil).

    Rows without a complete H → b b̄ record (background, failed events) keep the input momenta; h1/h2 are
    re-ordered so that h1 stays the higher-pT Higgs.
    """
    b = np.array(partons.b, dtype=np.float64, copy=True)  # (N, 4, 4)
    higgs = (
        np.array(partons.higgs, dtype=np.float64, copy=True)
        if partons.higgs is not None
        else np.full((len(partons), 2, 4), np.nan)
    )
    use = (np.asarray(partons.process) == 1) & np.isfinite(block.higgs_b).all(axis=(1, 2))
    use &= np.isfinite(block.higgs).all(axis=(1, 2))
    b[use] = block.higgs_b[use]
    higgs[use] = block.higgs[use]
    higgs_pt = np.hypot(higgs[..., 1], higgs[..., 2])  # (N, 2)
    swap = use & (higgs_pt[:, 1] > higgs_pt[:, 0])
    b[swap] = b[swap][:, [2, 3, 0, 1]]
    higgs[swap] = higgs[swap][:, ::-1]
    out = partons.take(np.arange(len(partons)))
    out.b = b
    out.higgs = higgs if (partons.higgs is not None or use.any()) else None
    return out
