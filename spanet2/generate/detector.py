"""A vectorised fast detector: b-jet response, resolution, ISR jets, merging, acceptance, b-tagging, MET.

Parton-level events (four b quarks + optional extra partons) become reconstructed jets the way the
authors' CMS-style Delphes card would see them, to the accuracy of a parametrised model:

- b-jet response: semileptonic b decays (20 %) lose a neutrino energy fraction ~ Beta(1.5, 6)
  (mean 0.2); every jet loses an out-of-cone fraction ~ Exp(mean 0.05) capped at 0.6 — mean b response
  ≈ 0.91 with a low tail (docs/physics.md §8). Light/c jets get the out-of-cone loss only.
- energy resolution σ_E = √((0.05 E)² + 1.5² E) (the CMS card); jet direction vs parton smeared by
  σ(η) = σ(φ) = √(0.03² + (1.4/√(E/GeV))²) — an *effective* parton–jet angular spread (showering,
  hadronisation, soft FSR; 0.14 at 100 GeV) tuned so the truth-matching losses reproduce the note's
  2h/1h fractions (docs/physics.md §8).
- final-state radiation: each b quark emits with probability 0.3 a hard gluon (z ~ P_gq on [0.05, 0.95],
  angle ~ dθ/θ on [0.2, 1.5] × √(100 GeV/E), the fixed-kT scaling); beyond ΔR 0.4 it is a separate
  jet and the b jet axis moves away from the quark (1h events), besides merging and acceptance.
- initial-state radiation: a Poisson number (≤ 6) of extra partons with mean 1.2 · ln(1 + m_hard/100 GeV)
  (harder events radiate more: ≈ 1.9 at m_HH = 400 GeV), pT ~ power law pT⁻³ above 15 GeV,
  η ~ N(0, 2), flavour light/c/b = 0.90/0.07/0.03. ISR recoil on the hard system is not modelled.
- partons closer than ΔR = 0.4 merge into one jet (greedy, closest pair first), as anti-kT R = 0.4 does.
- acceptance |η| < 2.5, pT > 20 GeV; flat b-tagging 0.77 (b), 0.204 (c), 0.0077 (light).
- MET: neutrinos + jet mismeasurement + a Gaussian soft term (σ = 8 GeV per component).
- leptons: a semileptonic lepton (e or μ, equal odds) is counted when isolated (probability 0.1 — most
  b-decay leptons sit inside the jet) with pT > 10 GeV and |η| < 2.5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from spanet2.events.jets import JetEvents
from spanet2.generate.partons import PartonEvents
from spanet2.physics.kinematics import p4_mass, p4_to_ptetaphim, ptetaphim_to_p4

__all__ = [
    "JetEvents",
    "DetectorParameters",
    "DEFAULT_DETECTOR",
    "energy_response",
    "jet_acceptance",
    "apply_btagging",
    "pt_ordered_jets",
    "fast_detector",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorParameters:
    """Free parameters of the fast detector (defaults tuned to docs/physics.md §8; see the module docstring)."""

    jet_radius: float = 0.4
    jet_min_pt: float = 20.0
    jet_max_eta: float = 2.5
    btag_eff_b: float = 0.77
    btag_eff_c: float = 0.204
    btag_eff_light: float = 0.0077
    resolution_constant: float = 0.05
    resolution_stochastic: float = 1.5  # GeV^0.5
    angle_smear: float = 0.03
    angle_smear_stochastic: float = 1.4  # rad·GeV^0.5: σ(η) = σ(φ) = √(angle_smear² + (this / √E)²)
    semileptonic_fraction: float = 0.20
    neutrino_beta: tuple[float, float] = (1.5, 6.0)
    out_of_cone_mean: float = 0.05
    out_of_cone_max: float = 0.6
    jet_mass_over_pt: float = 0.11
    fsr_prob: float = 0.30
    fsr_z_min: float = 0.05
    fsr_angle_range: tuple[float, float] = (0.2, 1.5)
    fsr_reference_energy: float = 100.0  # GeV: emission angles scale as sqrt(E_ref / E) (fixed kT)
    isr_rate: float = 1.2
    isr_reference_mass: float = 100.0
    isr_min_pt: float = 15.0
    isr_pt_power: float = 3.0
    isr_eta_sigma: float = 2.0
    isr_max: int = 6
    isr_flavour_fractions: tuple[float, float, float] = (0.90, 0.07, 0.03)  # light, c, b
    lepton_isolation_prob: float = 0.10
    lepton_min_pt: float = 10.0
    met_soft_sigma: float = 8.0


DEFAULT_DETECTOR = DetectorParameters()


def _flavour_from_pdg(pdg: np.ndarray) -> np.ndarray:
    a = np.abs(pdg)
    return np.where(a == 5, 5, np.where(a == 4, 4, 0)).astype(np.int8)


def _isr_partons(
    n: int, m_hard: np.ndarray, rng: np.random.Generator, par: DetectorParameters
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ISR partons: (N, K, 4) four-momenta, (N, K) flavour, (N, K) bool present."""
    k = par.isr_max
    rate = par.isr_rate * np.log(np.maximum(m_hard, par.isr_reference_mass) / par.isr_reference_mass + 1.0)
    count = np.minimum(rng.poisson(rate), k)  # (N,)
    present = np.arange(k)[None, :] < count[:, None]  # (N, K)
    u = rng.random((n, k))
    pt = par.isr_min_pt * u ** (-1.0 / (par.isr_pt_power - 1.0))  # power law pT^-n above isr_min_pt
    pt = np.minimum(pt, 0.5 * np.maximum(m_hard, 2 * par.isr_min_pt)[:, None])
    eta = rng.normal(0.0, par.isr_eta_sigma, (n, k))
    phi = rng.uniform(-np.pi, np.pi, (n, k))
    fl = rng.choice(np.array([0, 4, 5], dtype=np.int8), size=(n, k), p=np.asarray(par.isr_flavour_fractions))
    p4 = ptetaphim_to_p4(pt, eta, phi, np.zeros_like(pt))  # (N, K, 4)
    return np.where(present[..., None], p4, 0.0), fl, present


def energy_response(
    energy: np.ndarray, rng: np.random.Generator, params: DetectorParameters = DEFAULT_DETECTOR
) -> np.ndarray:
    """Per-jet energy scale factors from the resolution σ_E = √((c E)² + s² E): energy (N, J) GeV -> (N, J).

    One standard normal per slot, in the array's order; the factor is floored at 0.05 (no negative jets).
    Shared by the fast detector and the Pythia back end, so both smear jets the same way.
    """
    sigma = np.sqrt((params.resolution_constant * energy) ** 2 + params.resolution_stochastic**2 * energy)
    return np.maximum(1.0 + sigma / np.maximum(energy, 1e-9) * rng.standard_normal(np.shape(energy)), 0.05)


def jet_acceptance(
    present: np.ndarray, pt: np.ndarray, eta: np.ndarray, params: DetectorParameters = DEFAULT_DETECTOR
) -> np.ndarray:
    """(N, J) bool: real jets (`present`) with measured pT above and |η| below the detector's cuts."""
    return present & (pt > params.jet_min_pt) & (np.abs(eta) < params.jet_max_eta)


def apply_btagging(
    flavour: np.ndarray,
    accepted: np.ndarray,
    rng: np.random.Generator,
    params: DetectorParameters = DEFAULT_DETECTOR,
) -> np.ndarray:
    """Flat b-tagging: (N, J) truth flavour (5, 4, other) and acceptance -> (N, J) bool tag decisions."""
    eff = np.select(
        [flavour == 5, flavour == 4], [params.btag_eff_b, params.btag_eff_c], params.btag_eff_light
    )
    return np.asarray(accepted, bool) & (rng.random(np.shape(flavour)) < eff)


def pt_ordered_jets(
    accepted: np.ndarray,
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mass: np.ndarray,
    btag: np.ndarray,
    flavour: np.ndarray,
    met_x: np.ndarray,
    met_y: np.ndarray,
    n_electrons: np.ndarray,
    n_muons: np.ndarray,
    *,
    trim: bool = False,
) -> JetEvents:
    """The accepted jets as JetEvents, pT-descending, the rejected slots last (zeros, mask False).

    Per-jet arrays (N, J) in any slot order (btag already False outside `accepted`); met_x, met_y (N,) GeV;
    lepton counts (N,). trim: keep only as many slots as the fullest event needs (at least one);
    otherwise all J slots stay.
    """
    key = np.where(accepted, pt, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")  # (N, J) pT-descending, rejected last
    if trim:
        order = order[:, : max(int(accepted.sum(axis=1).max(initial=0)), 1)]

    def ordered(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, order, axis=1)

    mask = ordered(accepted)
    return JetEvents(
        pt=np.where(mask, ordered(pt), 0.0),
        eta=np.where(mask, ordered(eta), 0.0),
        phi=np.where(mask, ordered(phi), 0.0),
        mass=np.where(mask, ordered(mass), 0.0),
        btag=ordered(btag) & mask,
        mask=mask,
        flavour=np.where(mask, ordered(flavour), 0).astype(np.int8),
        met=np.hypot(met_x, met_y),
        met_phi=np.arctan2(met_y, met_x),
        n_electrons=n_electrons.astype(np.int16),
        n_muons=n_muons.astype(np.int16),
    )


def _rotate_away(direction: np.ndarray, angle: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors at polar `angle` from the unit vectors `direction` (..., 3), at `azimuth` around them."""
    helper = np.where(np.abs(direction[..., 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    e1 = np.cross(direction, helper)
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(direction, e1)
    return np.cos(angle)[..., None] * direction + np.sin(angle)[..., None] * (
        np.cos(azimuth)[..., None] * e1 + np.sin(azimuth)[..., None] * e2
    )


def _final_state_radiation(
    b: np.ndarray, rng: np.random.Generator, par: DetectorParameters
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hard collinear gluon emission per b quark with probability FSR_PROB.

    The gluon takes an energy fraction z ~ P_gq(z) = C_F (1 + (1 − z)²)/z on [z_min, 1 − z_min] at an
    opening angle θ ~ dθ/θ on FSR_ANGLE_RANGE (the soft-collinear emission density); the b keeps 1 − z.
    Transverse momentum balances at small angle: the gluon flies at (1 − z)θ from the original b
    direction and the b at zθ on the other side. Returns the new b (N, 4, 4), gluons (N, 4, 4) and
    (N, 4) bool emitted.
    """
    n = len(b)
    emitted = rng.random((n, 4)) < par.fsr_prob
    zmin = par.fsr_z_min
    # Sample z from 1/z (log-uniform), accept with (1 + (1 - z)^2) / 2 <= 1; a few rounds suffice.
    z = np.exp(rng.uniform(np.log(zmin), np.log(1 - zmin), (8, n, 4)))
    accept = rng.random((8, n, 4)) < 0.5 * (1 + (1 - z) ** 2)
    first = np.argmax(accept, axis=0)  # (N, 4); all-rejected rows keep round 0 (probability < 0.5^8)
    z = np.take_along_axis(z, first[None], axis=0)[0]
    lo, hi = par.fsr_angle_range
    theta = np.exp(rng.uniform(np.log(lo), np.log(hi), (n, 4)))
    theta = np.minimum(
        theta * np.sqrt(par.fsr_reference_energy / np.maximum(b[..., 0], 1.0)).clip(0.5, 2.0), 3.0
    )
    azimuth = rng.uniform(-np.pi, np.pi, (n, 4))
    p = b[..., 1:]
    p_abs = np.linalg.norm(p, axis=-1)
    direction = p / np.maximum(p_abs, 1e-12)[..., None]  # (N, 4, 3)
    energy = b[..., 0]
    g_dir = _rotate_away(direction, (1 - z) * theta, azimuth)
    b_dir = _rotate_away(direction, z * theta, azimuth + np.pi)
    e_g = z * energy
    e_b = (1 - z) * energy
    mass_b = np.sqrt(np.maximum(energy**2 - p_abs**2, 0.0))
    pb_abs = np.sqrt(np.maximum(e_b**2 - mass_b**2, 0.0))
    gluon = np.concatenate([e_g[..., None], e_g[..., None] * g_dir], axis=-1)
    new_b = np.concatenate([e_b[..., None], pb_abs[..., None] * b_dir], axis=-1)
    new_b = np.where(emitted[..., None], new_b, b)
    gluon = np.where(emitted[..., None], gluon, 0.0)
    return new_b, gluon, emitted


def _merge_close(p4: np.ndarray, flavour: np.ndarray, present: np.ndarray, radius: float) -> None:
    """Merge objects closer than `radius` in place (closest pair first), vectorised over events.

    p4: (N, P, 4); flavour: (N, P) int8 (merged: the heavier flavour, b > c > light); present (N, P).
    Each pass works only on the events that merged something in the previous pass.
    """
    n, n_obj = present.shape
    iu, ju = np.triu_indices(n_obj, k=1)
    active = np.arange(n)
    for _ in range(n_obj - 1):
        if active.size == 0:
            return
        q = p4[active]  # (A, P, 4)
        pt = np.hypot(q[..., 1], q[..., 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(np.where(pt > 0, q[..., 3] / np.where(pt > 0, pt, 1.0), 0.0))
        phi = np.arctan2(q[..., 2], q[..., 1])
        dphi = np.abs(phi[:, iu] - phi[:, ju])
        dphi = np.minimum(dphi, 2 * np.pi - dphi)
        dr2 = (eta[:, iu] - eta[:, ju]) ** 2 + dphi**2  # (A, pairs)
        ok = present[active][:, iu] & present[active][:, ju] & (dr2 < radius**2)
        dr2 = np.where(ok, dr2, np.inf)
        best = np.argmin(dr2, axis=1)
        todo = ok[np.arange(active.size), best]
        if not todo.any():
            return
        local = np.flatnonzero(todo)
        r = active[local]
        a, b = iu[best[local]], ju[best[local]]
        a_leads = pt[local, a] >= pt[local, b]
        keep = np.where(a_leads, a, b)
        drop = np.where(a_leads, b, a)
        p4[r, keep] += p4[r, drop]
        p4[r, drop] = 0.0
        flavour[r, keep] = np.maximum(flavour[r, keep], flavour[r, drop])  # 5 > 4 > 0
        present[r, drop] = False
        active = r


def fast_detector(
    partons: PartonEvents,
    rng: np.random.Generator,
    params: DetectorParameters = DEFAULT_DETECTOR,
) -> JetEvents:
    """Turn parton-level events into reconstructed jets (see the module docstring for the model).

    partons: N events (partons.b (N, 4, 4) GeV; partons.extra (N, K, 4) used as extra jets when set).
    Returns JetEvents with J = 8 + K + ISR_MAX slots (4 b + 4 FSR gluons + extra + ISR), pT-ordered, padded with zeros (mask False).
    """
    par = params
    b = np.asarray(partons.b, dtype=np.float64)
    n = len(b)
    b_radiated, fsr_gluons, emitted = _final_state_radiation(b, rng, par)
    objs = [b_radiated, fsr_gluons]
    flav = [np.full((n, 4), 5, dtype=np.int8), np.zeros((n, 4), dtype=np.int8)]
    pres = [np.ones((n, 4), dtype=bool), emitted]
    hard = b.sum(axis=1)
    if partons.extra is not None and partons.extra.shape[1] > 0:
        extra = np.where((np.asarray(partons.extra_pdg) != 0)[..., None], partons.extra, 0.0)
        objs.append(extra)
        flav.append(_flavour_from_pdg(partons.extra_pdg))
        pres.append(np.asarray(partons.extra_pdg) != 0)
        hard = hard + extra.sum(axis=1)
    m_hard = p4_mass(hard)  # (N,)
    isr_p4, isr_fl, isr_present = _isr_partons(n, m_hard, rng, par)
    objs.append(isr_p4)
    flav.append(isr_fl)
    pres.append(isr_present)
    p4 = np.concatenate(objs, axis=1)  # (N, P, 4)
    flavour = np.concatenate(flav, axis=1)  # (N, P)
    present = np.concatenate(pres, axis=1)  # (N, P)
    # Compact: real objects first, drop columns that are empty in every event.
    slot_order = np.argsort(~present, axis=1, kind="stable")  # (N, P)
    n_obj = max(int(present.sum(axis=1).max(initial=0)), 1)
    slot_order = slot_order[:, :n_obj]
    p4 = np.take_along_axis(p4, slot_order[..., None], axis=1)  # (N, P', 4)
    flavour = np.take_along_axis(flavour, slot_order, axis=1)
    present = np.take_along_axis(present, slot_order, axis=1)

    # Per-parton response: semileptonic neutrino loss (b only) and out-of-cone loss (all).
    is_b = flavour == 5
    semilep = is_b & (rng.random((n, n_obj)) < par.semileptonic_fraction) & present
    nu_frac = np.where(semilep, rng.beta(*par.neutrino_beta, size=(n, n_obj)), 0.0)
    ooc = np.minimum(rng.exponential(par.out_of_cone_mean, size=(n, n_obj)), par.out_of_cone_max)
    neutrinos = p4 * nu_frac[..., None]  # (N, P, 4)
    lepton_frac = np.where(semilep, rng.beta(*par.neutrino_beta, size=(n, n_obj)), 0.0)
    lepton_iso = semilep & (rng.random((n, n_obj)) < par.lepton_isolation_prob)
    leptons = p4 * lepton_frac[..., None]
    response = (1.0 - nu_frac) * (1.0 - ooc) - np.where(lepton_iso, lepton_frac, 0.0)
    visible = p4 * np.maximum(response, 0.02)[..., None]
    visible = np.where(present[..., None], visible, 0.0)

    _merge_close(visible, flavour, present, par.jet_radius)

    pt, eta, phi, _ = p4_to_ptetaphim(visible)
    energy = visible[..., 0]
    pt_meas = pt * energy_response(energy, rng, par)
    sigma_angle = np.hypot(par.angle_smear, par.angle_smear_stochastic / np.sqrt(np.maximum(energy, 1.0)))
    eta_meas = eta + sigma_angle * rng.standard_normal((n, n_obj))
    phi_meas = phi + sigma_angle * rng.standard_normal((n, n_obj))
    mass_meas = pt_meas * par.jet_mass_over_pt * rng.gamma(6.0, 1.0 / 6.0, size=(n, n_obj))

    accepted = jet_acceptance(present, pt_meas, eta_meas, par)
    btag = apply_btagging(flavour, accepted, rng, par)

    # MET = -(sum of measured visible pT) relative to the truth: neutrinos + mismeasurement + soft term.
    dpt = np.where(present, pt - pt_meas, 0.0)
    met_x = (
        neutrinos[..., 1].sum(axis=1)
        + (dpt * np.cos(phi)).sum(axis=1)
        + par.met_soft_sigma * rng.standard_normal(n)
    )
    met_y = (
        neutrinos[..., 2].sum(axis=1)
        + (dpt * np.sin(phi)).sum(axis=1)
        + par.met_soft_sigma * rng.standard_normal(n)
    )

    lep_pt, lep_eta, _, _ = p4_to_ptetaphim(leptons)
    counted = lepton_iso & (lep_pt > par.lepton_min_pt) & (np.abs(lep_eta) < par.jet_max_eta)
    is_electron = rng.random((n, n_obj)) < 0.5
    n_electrons = (counted & is_electron).sum(axis=1)
    n_muons = (counted & ~is_electron).sum(axis=1)

    return pt_ordered_jets(
        accepted,
        pt_meas,
        eta_meas,
        np.remainder(phi_meas + np.pi, 2 * np.pi) - np.pi,
        mass_meas,
        btag,
        flavour,
        met_x,
        met_y,
        n_electrons,
        n_muons,
    )
