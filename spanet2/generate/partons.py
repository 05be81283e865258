"""Parton-level event record shared by the signal and background generators and the detector."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["PartonEvents"]

logger = logging.getLogger(__name__)


@dataclass
class PartonEvents:
    """Parton-level events (one row per event).

    Attributes
    ----------
    b: (N, 4, 4) lab four-momenta (E, px, py, pz) in GeV of the four b quarks, ordered
        [h1 b, h1 bbar, h2 b, h2 bbar] with h1 the higher-pT Higgs boson (signal). For background: the
        four b partons, leading pT first (the pairs carry no meaning).
    weight: (N,) fb per event at the generated κλ; Σ over the sample = σ × BR × generator-cut efficiency.
    kappa_terms: (N, 3) fb; weight(κλ) = t0 + κλ·t1 + κλ²·t2 (signal); zeros for background.
    kappa: (N,) generated κλ (NaN for background).
    process: (N,) int8; 1 = signal gg → HH → 4b, 0 = QCD 4b.
    x1, x2: (N,) parton momentum fractions.
    scale: (N,) GeV, μ_F = μ_R.
    incoming: (N, 2) int PDG ids of the incoming partons (21 = gluon).
    extra: (N, K, 4) additional final-state partons (E, px, py, pz) GeV, or None.
    extra_pdg: (N, K) PDG ids of ``extra`` (0 = empty slot), or None.
    higgs: (N, 2, 4) Higgs four-momenta [h1, h2] (signal), or None.
    sqrt_s_tev: collider energy in TeV.
    b_pdg: (N, 4) PDG ids (±5) of the four b partons, or None (the approximate background model and the
        signal, whose order [b, b̄, b, b̄] is fixed, leave it unset).
    """

    b: np.ndarray
    weight: np.ndarray
    kappa_terms: np.ndarray
    kappa: np.ndarray
    process: np.ndarray
    x1: np.ndarray
    x2: np.ndarray
    scale: np.ndarray
    incoming: np.ndarray
    extra: np.ndarray | None
    extra_pdg: np.ndarray | None
    higgs: np.ndarray | None
    sqrt_s_tev: float
    b_pdg: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.b)
        if self.b.shape[1:] != (4, 4):
            raise ValueError(f"PartonEvents.b must have shape (N, 4, 4), got {self.b.shape}")
        for name in ("weight", "kappa", "process", "x1", "x2", "scale"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"PartonEvents.{name} must have shape ({n},), got {getattr(self, name).shape}"
                )
        if self.kappa_terms.shape != (n, 3):
            raise ValueError(
                f"PartonEvents.kappa_terms must have shape ({n}, 3), got {self.kappa_terms.shape}"
            )
        if self.incoming.shape != (n, 2):
            raise ValueError(f"PartonEvents.incoming must have shape ({n}, 2), got {self.incoming.shape}")
        if (self.extra is None) != (self.extra_pdg is None):
            raise ValueError("PartonEvents.extra and extra_pdg must both be set or both be None")
        if self.extra is not None and (self.extra.shape[0] != n or self.extra.shape[2:] != (4,)):
            raise ValueError(f"PartonEvents.extra must have shape ({n}, K, 4), got {self.extra.shape}")
        if self.extra_pdg is not None and self.extra_pdg.shape != self.extra.shape[:2]:
            raise ValueError("PartonEvents.extra_pdg must have shape (N, K) matching extra")
        if self.b_pdg is not None and self.b_pdg.shape != (n, 4):
            raise ValueError(f"PartonEvents.b_pdg must have shape ({n}, 4), got {self.b_pdg.shape}")
        if self.higgs is not None and self.higgs.shape != (n, 2, 4):
            raise ValueError(f"PartonEvents.higgs must have shape ({n}, 2, 4), got {self.higgs.shape}")

    def __len__(self) -> int:
        return len(self.b)

    @property
    def n_events(self) -> int:
        """Number of events N."""
        return len(self.b)

    def take(self, idx: np.ndarray) -> PartonEvents:
        """Rows ``idx`` (integer indices or a boolean mask of length N) as a new PartonEvents."""
        idx = np.asarray(idx)
        values = {}
        for field in fields(self):
            value = getattr(self, field.name)
            values[field.name] = value[idx] if isinstance(value, np.ndarray) else value
        return PartonEvents(**values)

    @staticmethod
    def concat(parts: Sequence[PartonEvents]) -> PartonEvents:
        """Concatenate events along N. All parts must share √s; optional arrays are padded.

        ``extra``/``extra_pdg`` with different K are padded with zeros (PDG 0 = empty) to the largest K;
        parts without them get empty slots. ``higgs`` becomes NaN for parts that lack it, unless every
        part lacks it (then None).
        """
        parts = list(parts)
        if not parts:
            raise ValueError("PartonEvents.concat needs at least one part")
        sqrt_s = {float(p.sqrt_s_tev) for p in parts}
        if len(sqrt_s) != 1:
            raise ValueError(f"PartonEvents.concat: parts have different sqrt_s_tev {sorted(sqrt_s)}")
        values: dict[str, object] = {"sqrt_s_tev": parts[0].sqrt_s_tev}
        for name in ("b", "weight", "kappa_terms", "kappa", "process", "x1", "x2", "scale", "incoming"):
            values[name] = np.concatenate([getattr(p, name) for p in parts], axis=0)

        if all(p.extra is None for p in parts):
            values["extra"] = values["extra_pdg"] = None
        else:
            k_max = max(p.extra.shape[1] for p in parts if p.extra is not None)
            extras, pdgs = [], []
            for p in parts:
                n = len(p)
                e = np.zeros((n, k_max, 4), dtype=np.float64)  # (N, K, 4)
                d = np.zeros((n, k_max), dtype=np.int64)  # (N, K)
                if p.extra is not None:
                    k = p.extra.shape[1]
                    e[:, :k] = p.extra
                    d[:, :k] = p.extra_pdg
                extras.append(e)
                pdgs.append(d)
            values["extra"] = np.concatenate(extras, axis=0)
            values["extra_pdg"] = np.concatenate(pdgs, axis=0)

        if all(p.b_pdg is None for p in parts):
            values["b_pdg"] = None
        else:  # parts without charges get the fixed [b, b̄, b, b̄] order
            values["b_pdg"] = np.concatenate(
                [p.b_pdg if p.b_pdg is not None else np.tile([5, -5, 5, -5], (len(p), 1)) for p in parts]
            )
        if all(p.higgs is None for p in parts):
            values["higgs"] = None
        else:
            values["higgs"] = np.concatenate(
                [p.higgs if p.higgs is not None else np.full((len(p), 2, 4), np.nan) for p in parts], axis=0
            )
        return PartonEvents(**values)
