"""The detector response on Pythia's particle-level jets: the fast detector's smearing, acceptance and tagging.

The jets of a ShoweredBlock pass through the same model as the fast detector's (``generate/detector.py``):

- energy smeared with the CMS-card resolution σ_E = √((0.05 E)² + 1.5² E) (``energy_response``), the
  direction kept; kept with pT > 20 GeV, |η| < 2.5 after smearing (``jet_acceptance``).
- b-tagging with the flat model 0.77 / 0.204 / 0.0077 on the truth flavour (``apply_btagging``).
- MET: the vector sum of neutrino pT (from the extraction) plus the jet mismeasurement.
"""

from __future__ import annotations

import numpy as np

from spanet2.events.jets import JetEvents
from spanet2.generate.detector import (
    DetectorParameters,
    apply_btagging,
    energy_response,
    jet_acceptance,
    pt_ordered_jets,
)
from spanet2.generate.pythia.extraction import ShoweredBlock, _eta_phi


def _detector_response(block: ShoweredBlock, rng: np.random.Generator, par: DetectorParameters) -> JetEvents:
    """Energy smearing, acceptance, b-tagging and MET on particle-level jets (vectorised).

    Draws from `rng`: one standard normal per jet slot (the energy scale), then one uniform per slot (the tag).
    Returns JetEvents with as many slots as the fullest event keeps, pT-descending, padding last.
    """
    p4 = block.jet_p4
    measured = p4 * energy_response(p4[..., 0], rng, par)[..., None]  # (N, J, 4)
    pt_true = np.hypot(p4[..., 1], p4[..., 2])
    pt, eta, phi = _eta_phi(measured[..., 1], measured[..., 2], measured[..., 3])
    mass = np.sqrt(np.maximum(measured[..., 0] ** 2 - (measured[..., 1:] ** 2).sum(axis=-1), 0.0))
    accepted = jet_acceptance(block.jet_mask, pt, eta, par)
    btag = apply_btagging(block.flavour, accepted, rng, par)
    dpt = np.where(block.jet_mask, pt_true - pt, 0.0)
    met_x = block.nu_px + (dpt * np.cos(phi)).sum(axis=1)
    met_y = block.nu_py + (dpt * np.sin(phi)).sum(axis=1)
    return pt_ordered_jets(
        accepted,
        pt,
        eta,
        phi,
        mass,
        btag,
        block.flavour,
        met_x,
        met_y,
        block.n_electrons,
        block.n_muons,
        trim=True,
    )
