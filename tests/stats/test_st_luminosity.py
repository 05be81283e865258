"""Equivalent luminosity: the root is found where the defined range ends (a vanishing CLs interval)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spanet2.stats.likelihood import LikelihoodSettings
from spanet2.stats.luminosity import (
    IntervalSettings,
    equivalent_luminosities,
    intervals_at,
    solve_equivalent_luminosity,
)

GRID = np.arange(-20.0, 25.01, 0.5)


@pytest.fixture
def templates(st_templates):
    return st_templates


def test_a_root_next_to_the_vanishing_point_is_found():
    """Δκλ(L) = √(1 − L/L_v), gone beyond L_v: the ladder's upper rung is undefined, the root is not."""
    vanish = 1500.0

    def width(lumi: float) -> float | None:
        return math.sqrt(1.0 - lumi / vanish) if lumi < vanish else None

    value, why = solve_equivalent_luminosity(0.3, width, 1000.0)
    assert why is None and value == pytest.approx(vanish * (1 - 0.09), rel=1e-6)
    # the defined range starts above the guess too (an interval open at low L): found from the other side
    value, why = solve_equivalent_luminosity(0.3, lambda lumi: width(lumi) if lumi > 1200 else None, 700.0)
    assert why is None and value == pytest.approx(vanish * (1 - 0.09), rel=1e-6)


def test_no_root_says_why():
    value, why = solve_equivalent_luminosity(0.5, lambda lumi: 1.0 + 1.0 / lumi, 300.0)
    assert value is None and "never reaches 0.5" in why
    value, why = solve_equivalent_luminosity(0.5, lambda lumi: None, 300.0)
    assert value is None and "no such bound" in why


def test_vanishing_cls_interval_equivalent_luminosity_is_found(templates):
    """CLs with background-only Asimov data excludes every κλ above ~10⁴ fb⁻¹ for these templates: at
    8000 fb⁻¹ the interval still exists but is gone at 2 L. The method against itself must give L′ = L."""
    settings = IntervalSettings(GRID, LikelihoodSettings(asimov="background"))
    spanet2 = templates["spanet2"]
    assert intervals_at(spanet2, 8000.0, settings)["cls"].closed
    assert not intervals_at(spanet2, 16000.0, settings)["cls"].pieces  # every κλ excluded at 2 L
    eq = equivalent_luminosities(spanet2, spanet2, 8000.0, settings)
    for stat in ("pl", "cls"):
        for what in ("width", "lower", "upper"):
            assert eq[stat][what] == pytest.approx(8000.0, rel=2e-3), (stat, what, eq[stat])
        assert eq[stat]["why"] == {}
    # the weaker method reaches the reference's narrow CLs interval just before its own interval vanishes
    other = equivalent_luminosities(spanet2, templates["min_dr_dnn"], 10000.0, settings)["cls"]
    assert other["width"] is not None and 10000.0 < other["width"] < 30000.0
    iv = intervals_at(templates["min_dr_dnn"], other["width"], settings)["cls"]
    assert iv.width == pytest.approx(other["target_width"], abs=2e-3)


def test_a_vanished_reference_interval_has_no_target_and_says_why(templates):
    settings = IntervalSettings(GRID, LikelihoodSettings(asimov="background"))
    eq = equivalent_luminosities(templates["spanet2"], templates["min_dr_dnn"], 15000.0, settings)
    assert eq["cls"]["width"] is None and eq["cls"]["target_width"] is None
    assert "excludes every κλ at 15000 fb⁻¹" in eq["cls"]["why"]["width"]
    assert eq["pl"]["width"] is not None and eq["pl"]["why"] == {}  # PL still has an interval
