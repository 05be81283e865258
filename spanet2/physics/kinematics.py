"""Vectorised four-vector kinematics on numpy arrays (GeV; eta, phi in (-pi, pi]).

Every function broadcasts over leading axes: pass (N,), (N, J) or (N, J, K) arrays alike.
Four-momenta as arrays use the last axis (E, px, py, pz).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "wrap_phi",
    "delta_phi",
    "delta_r",
    "ptetaphim_to_p4",
    "p4_to_ptetaphim",
    "p4_mass",
    "sum_ptetaphim",
]


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Map angles into (-pi, pi]."""
    out = np.remainder(np.asarray(phi, dtype=np.float64) + np.pi, 2 * np.pi) - np.pi
    return np.where(out == -np.pi, np.pi, out)


def delta_phi(phi1: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """phi1 - phi2 wrapped into (-pi, pi]."""
    return wrap_phi(np.asarray(phi1, dtype=np.float64) - np.asarray(phi2, dtype=np.float64))


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """sqrt(deta^2 + dphi^2) with the phi difference wrapped."""
    deta = np.asarray(eta1, dtype=np.float64) - np.asarray(eta2, dtype=np.float64)
    return np.hypot(deta, delta_phi(phi1, phi2))


def ptetaphim_to_p4(pt, eta, phi, m) -> np.ndarray:
    """(pt, eta, phi, m) -> (..., 4) array of (E, px, py, pz)."""
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(np.maximum(m, 0.0) ** 2 + px**2 + py**2 + pz**2)
    return np.stack(np.broadcast_arrays(e, px, py, pz), axis=-1)


def p4_mass(p4: np.ndarray) -> np.ndarray:
    """Invariant mass of (..., 4) four-momenta; tiny negative m^2 from rounding clip to 0."""
    p4 = np.asarray(p4, dtype=np.float64)
    m2 = p4[..., 0] ** 2 - p4[..., 1] ** 2 - p4[..., 2] ** 2 - p4[..., 3] ** 2
    return np.sqrt(np.maximum(m2, 0.0))


def p4_to_ptetaphim(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(..., 4) (E, px, py, pz) -> (pt, eta, phi, m). eta = 0 for pt = 0 (a beam-axis vector)."""
    p4 = np.asarray(p4, dtype=np.float64)
    px, py, pz = p4[..., 1], p4[..., 2], p4[..., 3]
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), 0.0)), 0.0)
    phi = np.arctan2(py, px)
    return pt, eta, wrap_phi(phi), p4_mass(p4)


def sum_ptetaphim(pt, eta, phi, m, axis: int = -1):
    """Vector sum over `axis` of objects given as (pt, eta, phi, m) arrays -> (pt, eta, phi, m)."""
    p4 = ptetaphim_to_p4(pt, eta, phi, m)
    ax = axis if axis >= 0 else axis - 1  # the four-vector axis was appended last
    return p4_to_ptetaphim(p4.sum(axis=ax))
