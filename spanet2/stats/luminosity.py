"""Intervals as a function of luminosity, and the equivalent luminosity of one method against another."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq

from spanet2.stats.histograms import Templates
from spanet2.stats.intervals import Interval, cls_interval, profile_likelihood_interval
from spanet2.stats.likelihood import KappaLikelihood, LikelihoodSettings

__all__ = ["IntervalSettings", "equivalent_luminosities", "equivalent_luminosity", "intervals_at"]

logger = logging.getLogger(__name__)

_MAX_LUMI_FACTOR = 1e4  # search L' within [L / 1e4, L × 1e4]


class IntervalSettings:
    """Grid, thresholds and likelihood settings shared by every interval of a scan."""

    def __init__(
        self,
        grid: Sequence[float],
        likelihood: LikelihoodSettings,
        *,
        pl_threshold: float = 3.84,
        cls_level: float = 0.05,
        statistics: Sequence[str] = ("pl", "cls"),
    ):
        self.grid = np.asarray(grid, dtype=np.float64)
        self.likelihood = likelihood
        self.pl_threshold = pl_threshold
        self.cls_level = cls_level
        self.statistics = tuple(statistics)


def intervals_at(
    templates: Templates,
    lumi_ifb: float,
    settings: IntervalSettings,
    *,
    grid_values: dict[str, np.ndarray] | None = None,
) -> dict[str, Interval]:
    """{"pl": Interval, "cls": Interval} for one method at one luminosity (fb⁻¹).

    grid_values: precomputed {"twice_nll": (G,), "cls": (G,)} on settings.grid (from Dask tasks).
    """
    model = KappaLikelihood(templates, lumi_ifb, settings.likelihood)
    grid_values = grid_values or {}
    out = {}
    if "pl" in settings.statistics:
        out["pl"] = profile_likelihood_interval(
            model, settings.grid, threshold=settings.pl_threshold, values=grid_values.get("twice_nll")
        )
    if "cls" in settings.statistics:
        out["cls"] = cls_interval(
            model, settings.grid, level=settings.cls_level, values=grid_values.get("cls")
        )
    return out


def equivalent_luminosity(
    target: float, quantity: Callable[[float], float | None], lumi_guess: float, *, rtol: float = 1e-4
) -> float | None:
    """The L′ with quantity(L′) = target, by Brent's method on ln L (quantity monotonic in L).

    quantity returns None where undefined (an open interval); the bracket grows from [L/2, 2L] by factors
    of 2 up to [L/1e4, L·1e4]. Returns None when no L′ in that range reaches the target.
    """

    def f(log_lumi: float) -> float:
        value = quantity(math.exp(log_lumi))
        return math.nan if value is None else value - target

    centre = math.log(lumi_guess)
    lo, hi = centre - math.log(2), centre + math.log(2)
    f_lo, f_hi = f(lo), f(hi)
    limit = math.log(_MAX_LUMI_FACTOR)
    while not (np.isfinite(f_lo) and np.isfinite(f_hi) and f_lo * f_hi <= 0):
        if hi - centre > limit:
            return None
        # widen both ends; a NaN end (interval open at low L) moves back toward the centre-side value
        lo, hi = lo - math.log(2), hi + math.log(2)
        f_lo, f_hi = f(lo), f(hi)
        if not np.isfinite(f_lo):
            lo_probe = lo
            while not np.isfinite(f_lo) and lo_probe < centre:
                lo_probe += math.log(2) / 2
                f_lo = f(lo_probe)
            lo = lo_probe
    if f_lo == 0:
        return math.exp(lo)
    if f_hi == 0:
        return math.exp(hi)
    return math.exp(brentq(f, lo, hi, rtol=rtol, xtol=1e-8))


def equivalent_luminosities(
    reference: Templates, other: Templates, lumi_ifb: float, settings: IntervalSettings
) -> dict[str, dict[str, float | None]]:
    """For each statistic: L′ at which `other` reaches `reference`'s Δκλ, lower and upper bound at L.

    Returns {"pl": {"width": L′, "lower": L′, "upper": L′, "target_width": Δκλ, ...}, "cls": {...}}.
    With the method against itself every L′ equals L (a test pins it).
    """
    ref = intervals_at(reference, lumi_ifb, settings)

    @lru_cache(maxsize=256)
    def other_at(lumi: float) -> dict[str, Interval]:
        return intervals_at(other, lumi, settings)

    out: dict[str, dict[str, float | None]] = {}
    for stat, interval in ref.items():
        entry: dict[str, float | None] = {
            "target_lower": interval.lower,
            "target_upper": interval.upper,
            "target_width": interval.width,
        }
        for what in ("width", "lower", "upper"):
            target = getattr(interval, what)
            if target is None:
                entry[what] = None
                continue
            entry[what] = equivalent_luminosity(
                target, lambda lumi, s=stat, w=what: getattr(other_at(round(lumi, 9))[s], w), lumi_ifb
            )
        out[stat] = entry
    return out
