"""Reference σ(κλ) curves, BR(H → bb̄) and the LO MadGraph reference table."""

import numpy as np
import pytest

from spanet2.errors import ConfigError
from spanet2.physics import xsec
from spanet2.physics.xsec import (
    BR_HBB,
    SM_14_OVER_13,
    lo_madgraph_reference,
    quadratic_coefficients,
    sigma_hh_reference,
)


def test_published_sm_values():
    assert BR_HBB == 0.5824
    assert sigma_hh_reference(1.0) == pytest.approx(31.05, abs=0.02)  # LHC HH WG NNLO-FTapprox
    assert sigma_hh_reference(1.0, "nlo_13") == pytest.approx(27.84, abs=0.01)
    assert sigma_hh_reference(1.0, "lhchwg_nnlo_14_scaled") == pytest.approx(36.69, abs=0.03)
    assert sigma_hh_reference(1.0, "heinrich_14") == pytest.approx(32.93, abs=0.01)
    assert SM_14_OVER_13 == pytest.approx(36.69 / 31.05)


def test_curves_are_quadratics_with_minimum_near_2p3():
    for name in xsec.CURVES:
        a0, a1, a2 = quadratic_coefficients(name)
        assert a2 > 0 and 2.0 < -a1 / (2 * a2) < 2.5
        k = np.array([-2.0, 0.0, 3.0])
        np.testing.assert_allclose(sigma_hh_reference(k, name), a0 + a1 * k + a2 * k**2)


def test_lo_madgraph_table():
    kappas, sigma13 = lo_madgraph_reference(13)
    _, sigma14 = lo_madgraph_reference(14.0)
    assert list(kappas) == [-1.0, 0.0, 1.0, 2.0, 2.4, 3.0, 5.0]
    assert sigma13[2] == 20.27 and sigma14[2] == 24.05
    # the authors' LO points lie on one parabola (to their MC precision) with its minimum near 2.4–2.5
    coeff = np.polyfit(kappas, sigma13, 2)
    assert np.max(np.abs(np.polyval(coeff, kappas) / sigma13 - 1)) < 0.01
    assert 2.3 < -coeff[1] / (2 * coeff[0]) < 2.6
    sigma13[0] = -1.0  # a copy: the module's table is untouched
    assert lo_madgraph_reference(13)[1][0] == 74.62


def test_bad_names_raise_config_errors():
    with pytest.raises(ConfigError, match="curve"):
        sigma_hh_reference(1.0, "nnnlo_100")
    with pytest.raises(ConfigError, match="sqrt_s_tev"):
        lo_madgraph_reference(27.0)


def test_public_api():
    assert set(xsec.__all__) == {
        "BR_HBB",
        "CURVES",
        "SM_14_OVER_13",
        "LO_MADGRAPH_KAPPAS",
        "LO_MADGRAPH_FB",
        "quadratic_coefficients",
        "sigma_hh_reference",
        "lo_madgraph_reference",
    }
