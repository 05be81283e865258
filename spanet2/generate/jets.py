"""Reconstructed-jet record shared by the fast detector, the Pythia back end and the selection."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["JetEvents"]


@dataclass
class JetEvents:
    """Reconstructed jets and event-level objects (one row per event, J jet slots padded with zeros).

    Attributes
    ----------
    pt, eta, phi, mass: (N, J) float jet kinematics (GeV, rad); padded slots are 0.
    btag: (N, J) bool b-tag decision.
    mask: (N, J) bool, True for a real jet.
    flavour: (N, J) int8 truth flavour label: 5 b, 4 c, 0 light/gluon.
    met, met_phi: (N,) missing transverse momentum (GeV) and its azimuth.
    n_electrons, n_muons: (N,) int counts of isolated leptons above threshold.
    """

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    btag: np.ndarray
    mask: np.ndarray
    flavour: np.ndarray
    met: np.ndarray
    met_phi: np.ndarray
    n_electrons: np.ndarray
    n_muons: np.ndarray

    def __post_init__(self) -> None:
        shape = np.shape(self.pt)
        if len(shape) != 2:
            raise ValueError(f"JetEvents.pt must have shape (N, J), got {shape}")
        for name in ("eta", "phi", "mass", "btag", "mask", "flavour"):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(
                    f"JetEvents.{name} must have shape {shape}, got {np.shape(getattr(self, name))}"
                )
        for name in ("met", "met_phi", "n_electrons", "n_muons"):
            if np.shape(getattr(self, name)) != shape[:1]:
                raise ValueError(
                    f"JetEvents.{name} must have shape ({shape[0]},), got {np.shape(getattr(self, name))}"
                )

    def __len__(self) -> int:
        return len(self.pt)

    def take(self, idx: np.ndarray) -> JetEvents:
        """Rows `idx` (integer indices or boolean mask) as a new JetEvents."""
        return JetEvents(**{f.name: np.asarray(getattr(self, f.name))[idx] for f in fields(self)})
