"""Reference gg → HH cross sections σ(κλ) (fb), H → bb̄ branching ratio, and the LO MadGraph table."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from spanet2.errors import ConfigError

__all__ = [
    "BR_HBB",
    "CURVES",
    "SM_14_OVER_13",
    "LO_MADGRAPH_KAPPAS",
    "LO_MADGRAPH_FB",
    "quadratic_coefficients",
    "sigma_hh_reference",
    "lo_madgraph_reference",
]

logger = logging.getLogger(__name__)

BR_HBB = 0.5824  # BR(H → bb̄), m_H = 125 GeV (LHC Higgs WG YR4)

# σ(κλ) = a0 + a1 κλ + a2 κλ² in fb
_LHCHWG_NNLO_13 = (70.3874, -50.4111, 11.0595)  # LHC HH WG, NNLO-FTapprox, 13 TeV (SM 31.05 fb)
_NLO_13 = (62.5339, -44.3231, 9.6340)  # NLO (full m_t), 13 TeV
_HEINRICH_14 = (73.65, -51.98, 11.26)  # quadratic fit to the NLO points of Heinrich et al., JHEP06(2019)066
SM_14_OVER_13 = 36.69 / 31.05  # NNLO-FTapprox σ_SM(14 TeV) / σ_SM(13 TeV)

CURVES: dict[str, tuple[float, float, float]] = {
    "lhchwg_nnlo_13": _LHCHWG_NNLO_13,
    "nlo_13": _NLO_13,
    "heinrich_14": _HEINRICH_14,
    # the 13 TeV NNLO-FTapprox shape scaled to the 14 TeV SM value
    "lhchwg_nnlo_14_scaled": tuple(SM_14_OVER_13 * a for a in _LHCHWG_NNLO_13),
}

# Reference data (not a model): LO MadGraph (loop_sm, NNPDF2.3 LO) σ(gg → HH) in fb from the study's authors.
LO_MADGRAPH_KAPPAS = np.array([-1.0, 0.0, 1.0, 2.0, 2.4, 3.0, 5.0])
LO_MADGRAPH_FB = {
    13.0: np.array([74.62, 41.96, 20.27, 9.56, 8.33, 9.81, 43.55]),
    14.0: np.array([87.93, 49.45, 24.05, 11.34, 9.90, 11.55, 50.68]),
}


def quadratic_coefficients(curve: str = "lhchwg_nnlo_13") -> tuple[float, float, float]:
    """(a0, a1, a2) in fb of σ(κλ) = a0 + a1 κλ + a2 κλ² for a named reference curve (see ``CURVES``)."""
    try:
        return CURVES[curve]
    except KeyError:
        raise ConfigError(
            None, "curve", f"unknown cross-section curve {curve!r}; expected one of {sorted(CURVES)}"
        ) from None


def sigma_hh_reference(kappa: npt.ArrayLike, curve: str = "lhchwg_nnlo_13") -> np.ndarray:
    """σ(gg → HH) in fb at κλ (scalar or array) from a reference curve (before any branching ratio)."""
    a0, a1, a2 = quadratic_coefficients(curve)
    k = np.asarray(kappa, dtype=np.float64)
    return a0 + a1 * k + a2 * k**2


def lo_madgraph_reference(sqrt_s_tev: float) -> tuple[np.ndarray, np.ndarray]:
    """(κλ points, σ_LO fb) of the authors' LO MadGraph table at 13 or 14 TeV (reference data for tests)."""
    key = float(sqrt_s_tev)
    if key not in LO_MADGRAPH_FB:
        raise ConfigError(None, "sqrt_s_tev", f"LO MadGraph table exists for 13 and 14 TeV, not {sqrt_s_tev}")
    return LO_MADGRAPH_KAPPAS.copy(), LO_MADGRAPH_FB[key].copy()
