"""Signal yield as a quadratic in κλ: per-event weight terms or morphing of discrete κλ samples, normalisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from spanet2.physics import xsec

__all__ = [
    "REFERENCE_CURVES",
    "SM_SIGMA_RATIO_14_OVER_13",
    "curve_coefficients",
    "known_curves",
    "lagrange_weights",
    "morph_terms",
    "morphing_matrix",
    "sigma_of_kappa",
    "signal_yields",
    "term_scale_factors",
]

logger = logging.getLogger(__name__)

# σ(gg → HH)(κλ) = a0 + a1 κλ + a2 κλ² in fb (docs/physics.md §5) come from the physics layer. The LO MadGraph
# curves ("lo_madgraph_13/14") are least-squares quadratics through the authors' LO points (their generator,
# which ours reproduces): the "as generated" σ(κλ) when a store does not record its own.
REFERENCE_CURVES: dict[str, tuple[float, float, float]] = dict(xsec.CURVES)
_LO_CURVES = {"lo_madgraph_13": 13.0, "lo_madgraph_14": 14.0}
# 14 TeV / 13 TeV SM σ(gg → HH): the study reached 14 TeV by rescaling the 13 TeV cross sections
# (kinematics alike), which is what a 13 TeV curve gets when √s = 14 is asked for.
SM_SIGMA_RATIO_14_OVER_13 = xsec.SM_14_OVER_13


def morphing_matrix(sample_kappas: Sequence[float]) -> np.ndarray:
    """(3, K) matrix M with terms = M @ samples: exact for K = 3 (Lagrange), least squares for K > 3.

    Rows of the design matrix are [1, k_i, k_i²] (docs/physics.md §7). Raises ValueError for fewer than 3
    distinct κλ values.
    """
    kappas = np.asarray(sample_kappas, dtype=np.float64)
    if np.unique(kappas).size < 3:
        raise ValueError(f"morphing needs at least 3 distinct κλ samples, got {sorted(set(kappas.tolist()))}")
    design = np.stack([np.ones_like(kappas), kappas, kappas**2], axis=1)  # (K, 3)
    return np.linalg.pinv(design)  # (3, K)


def lagrange_weights(sample_kappas: Sequence[float], kappa: float) -> np.ndarray:
    """(K,) weights c_i(κλ) with S(κλ) = Σ c_i S(k_i) (Lagrange for 3 samples, pseudo-inverse beyond)."""
    return np.array([1.0, kappa, kappa**2]) @ morphing_matrix(sample_kappas)


def morph_terms(sample_kappas: Sequence[float], sample_histograms: np.ndarray) -> np.ndarray:
    """Quadratic terms (3, ...) from K histograms (K, ...) of samples generated at κλ = sample_kappas."""
    hists = np.asarray(sample_histograms, dtype=np.float64)
    matrix = morphing_matrix(sample_kappas)
    if hists.shape[0] != matrix.shape[1]:
        raise ValueError(f"{hists.shape[0]} histograms for {matrix.shape[1]} κλ values")
    return np.tensordot(matrix, hists, axes=(1, 0))  # (3, ...)


def curve_coefficients(curve: str | Sequence[float], *, sqrt_s_tev: float | None = None) -> np.ndarray:
    """(3,) coefficients (a0, a1, a2) in fb of a named σ(κλ) curve, or user coefficients.

    A 13 TeV curve asked for at √s = 14 TeV is rescaled by the SM 14/13 ratio (the study's method);
    a 14 TeV curve asked for at 13 TeV by its inverse. Names: see REFERENCE_CURVES, plus
    "lo_madgraph_13" / "lo_madgraph_14". Raises KeyError for an unknown name.
    """
    if isinstance(curve, str):
        coeffs = _named_curve(curve)
        native = 14.0 if ("_14" in curve) else 13.0
    else:
        coeffs = np.asarray(curve, dtype=np.float64)
        if coeffs.shape != (3,):
            raise ValueError(f"σ(κλ) coefficients must be three numbers (a0, a1, a2), got {list(coeffs)}")
        native = None
    if sqrt_s_tev is not None and native is not None and abs(sqrt_s_tev - native) > 1e-9:
        if {round(sqrt_s_tev), round(native)} != {13, 14}:
            raise ValueError(f"no rescaling from {native} to {sqrt_s_tev} TeV (only 13 <-> 14)")
        ratio = SM_SIGMA_RATIO_14_OVER_13 if sqrt_s_tev > native else 1.0 / SM_SIGMA_RATIO_14_OVER_13
        coeffs = coeffs * ratio
    return coeffs


def _named_curve(name: str) -> np.ndarray:
    if name in _LO_CURVES:
        kappas = xsec.LO_MADGRAPH_KAPPAS
        design = np.stack([np.ones_like(kappas), kappas, kappas**2], axis=1)  # (7, 3)
        return np.linalg.lstsq(design, xsec.LO_MADGRAPH_FB[_LO_CURVES[name]], rcond=None)[0]
    if name not in REFERENCE_CURVES:
        raise KeyError(name)
    return np.asarray(REFERENCE_CURVES[name], dtype=np.float64)


def known_curves() -> list[str]:
    """Names accepted by `curve_coefficients`."""
    return sorted([*REFERENCE_CURVES, *_LO_CURVES])


def sigma_of_kappa(coefficients: Sequence[float], kappa: np.ndarray | float) -> np.ndarray:
    """σ(κλ) = a0 + a1 κλ + a2 κλ² (fb), broadcast over κλ."""
    a0, a1, a2 = np.asarray(coefficients, dtype=np.float64)
    kappa = np.asarray(kappa, dtype=np.float64)
    return a0 + a1 * kappa + a2 * kappa**2


def term_scale_factors(generated: Sequence[float], reference: Sequence[float]) -> np.ndarray:
    """(3,) per-term factors reference_k / generated_k (box, interference, triangle).

    Scaling each term keeps the yield quadratic in κλ and makes the total follow the reference curve
    exactly: Σ_events w(κλ) × factors → σ_ref(κλ) × BR × efficiency when the generated terms sum to σ_gen.
    """
    gen = np.asarray(generated, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if np.any(gen == 0):
        raise ValueError(f"generated σ(κλ) coefficients contain a zero: {gen.tolist()}")
    return ref / gen


def signal_yields(terms: np.ndarray, kappa: np.ndarray | float) -> np.ndarray:
    """Signal per bin at κλ: terms (3, B) → (B,) for scalar κλ or (K, B) for κλ of shape (K,).

    Negative values (possible only after morphing with statistical noise) are clipped at zero.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    powers = np.stack([np.ones_like(kappa), kappa, kappa**2], axis=-1)  # (..., 3)
    return np.clip(powers @ np.asarray(terms, dtype=np.float64), 0.0, None)
