"""The padded-jets record: one type for the generator, Pythia, the Delphes reader and the observables."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

__all__ = ["PaddedJets", "JetEvents"]


@dataclass
class PaddedJets:
    """Jets of N events in J padded slots (one row per event; padded slots are 0 and mask False).

    Attributes
    ----------
    pt, eta, phi, mass: (N, J) float jet kinematics (GeV, rad).
    btag: (N, J) b-tag decision (bool, or 0/1 float as stored in HDF5).
    mask: (N, J) bool, True for a real jet.
    """

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    btag: np.ndarray
    mask: np.ndarray

    #: Per-jet attributes beyond pt (all (N, J)) and per-event ones ((N,)) a subclass adds.
    _PER_JET: ClassVar[tuple[str, ...]] = ("eta", "phi", "mass", "btag", "mask")
    _PER_EVENT: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        kind = type(self).__name__
        shape = np.shape(self.pt)
        if len(shape) != 2:
            raise ValueError(f"{kind}.pt must have shape (N, J), got {shape}")
        for name in self._PER_JET:
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(
                    f"{kind}.{name} must have shape {shape}, got {np.shape(getattr(self, name))}"
                )
        for name in self._PER_EVENT:
            if np.shape(getattr(self, name)) != shape[:1]:
                raise ValueError(
                    f"{kind}.{name} must have shape ({shape[0]},), got {np.shape(getattr(self, name))}"
                )

    def __len__(self) -> int:
        return len(self.pt)


@dataclass
class JetEvents(PaddedJets):
    """Reconstructed jets and event-level objects: PaddedJets plus the flavour truth, MET and leptons.

    Attributes (beyond PaddedJets)
    ------------------------------
    flavour: (N, J) int8 truth flavour label: 5 b, 4 c, 0 light/gluon.
    met, met_phi: (N,) missing transverse momentum (GeV) and its azimuth.
    n_electrons, n_muons: (N,) int counts of isolated leptons above threshold.
    """

    flavour: np.ndarray
    met: np.ndarray
    met_phi: np.ndarray
    n_electrons: np.ndarray
    n_muons: np.ndarray

    _PER_JET: ClassVar[tuple[str, ...]] = (*PaddedJets._PER_JET, "flavour")
    _PER_EVENT: ClassVar[tuple[str, ...]] = ("met", "met_phi", "n_electrons", "n_muons")

    def take(self, idx: np.ndarray) -> JetEvents:
        """Rows `idx` (integer indices or boolean mask) as a new JetEvents."""
        return JetEvents(**{f.name: np.asarray(getattr(self, f.name))[idx] for f in fields(self)})
