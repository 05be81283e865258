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

__all__ = [
    "EQUIVALENT_QUANTITIES",
    "IntervalSettings",
    "equivalent_entry",
    "equivalent_luminosities",
    "equivalent_luminosity",
    "intervals_at",
    "solve_equivalent",
    "solve_equivalent_luminosity",
    "target_reason",
]

logger = logging.getLogger(__name__)

_MAX_LUMI_FACTOR = 1e4  # search L' within [L / 1e4, L × 1e4]
_EDGE_BISECTIONS = 40  # the edge of the defined range to 2^-40 of a factor-2 step in ln L


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
    target: float, quantity: Callable[[float], float | None], lumi_guess: float, *, rtol: float = 1e-6
) -> float | None:
    """The L′ with quantity(L′) = target (Brent's method on ln L), or None; see `solve_equivalent_luminosity`."""
    return solve_equivalent_luminosity(target, quantity, lumi_guess, rtol=rtol)[0]


def solve_equivalent_luminosity(
    target: float, quantity: Callable[[float], float | None], lumi_guess: float, *, rtol: float = 1e-6
) -> tuple[float | None, str | None]:
    """The L′ with quantity(L′) = target, by Brent's method on ln L; returns (L′, None) or (None, why).

    quantity returns None where undefined: an interval open at low L (it reaches the grid's end) or gone at
    high L (CLs excludes every κλ). The search walks a ladder of factors of 2 out from `lumi_guess` (the side
    where |quantity − target| falls first) up to L/1e4 … L·1e4; where the ladder steps from a defined to an
    undefined value the edge of the defined range is bisected, so a root between the last defined rung and
    that edge is found too (both ends of the bracket are pulled back onto the finite range). rtol: L′ to
    this relative precision (an absolute tolerance in ln L).
    """
    centre, step = math.log(lumi_guess), math.log(2)
    n_rungs = int(math.ceil(math.log(_MAX_LUMI_FACTOR) / step))
    values: dict[float, float] = {}

    def f(log_lumi: float) -> float:
        if log_lumi not in values:
            value = quantity(math.exp(log_lumi))
            values[log_lumi] = math.nan if value is None else float(value) - target
        return values[log_lumi]

    def root(a: float, b: float) -> float:
        if f(a) == 0:
            return math.exp(a)
        if f(b) == 0:
            return math.exp(b)
        return math.exp(brentq(f, min(a, b), max(a, b), xtol=rtol, rtol=1e-12))

    def edge(defined: float, undefined: float) -> float | None:
        """Bisect between a defined and an undefined rung; a root on the defined side is returned."""
        for _ in range(_EDGE_BISECTIONS):
            mid = 0.5 * (defined + undefined)
            if not np.isfinite(f(mid)):
                undefined = mid
            elif f(mid) * f(defined) <= 0:
                return root(defined, mid)
            else:
                defined = mid
        return None

    def walk(direction: int) -> float | None:
        prev = centre
        for k in range(1, n_rungs + 1):
            cur = centre + direction * k * step
            a, b = f(prev), f(cur)
            if np.isfinite(a) and np.isfinite(b):
                if a * b <= 0:
                    return root(prev, cur)
            elif np.isfinite(a):  # the defined range ends between prev and cur: nothing beyond it
                return edge(prev, cur)
            elif np.isfinite(b):  # the defined range starts between prev and cur
                found = edge(cur, prev)
                if found is not None:
                    return found
            prev = cur
        return None

    up, down = f(centre + step), f(centre - step)
    first = 1 if not np.isfinite(down) or (np.isfinite(up) and abs(up) <= abs(down)) else -1
    for direction in (first, -first):
        found = walk(direction)
        if found is not None:
            return found, None
    defined = sorted((x, v) for x, v in values.items() if np.isfinite(v))
    span = f"[{lumi_guess / _MAX_LUMI_FACTOR:.3g}, {lumi_guess * _MAX_LUMI_FACTOR:.3g}] fb⁻¹"
    if not defined:
        return None, f"the interval has no such bound at any L′ tried in {span}"
    lo, hi = min(v for _, v in defined) + target, max(v for _, v in defined) + target
    return None, (
        f"never reaches {target:.3g}: it ranges over [{lo:.3g}, {hi:.3g}] for L′ in "
        f"[{math.exp(defined[0][0]):.3g}, {math.exp(defined[-1][0]):.3g}] fb⁻¹ where it is defined "
        f"(searched {span})"
    )


def target_reason(interval: Interval, what: str, lumi_ifb: float) -> str | None:
    """Why the reference's interval gives no target for `what` (width, lower, upper) at L; None if it does."""
    if getattr(interval, what) is not None:
        return None
    if not interval.pieces:
        return (
            f"no target: the reference's {interval.statistic.upper()} excludes every κλ at {lumi_ifb:g} fb⁻¹"
        )
    return (
        f"no target: the reference's {interval.statistic.upper()} region at {lumi_ifb:g} fb⁻¹ reaches the end "
        f"of the κλ grid [{interval.grid[0]:g}, {interval.grid[1]:g}]"
    )


def solve_equivalent(
    other: Templates,
    settings: IntervalSettings,
    lumi_ifb: float,
    stat: str,
    what: str,
    target: float | None,
    why: str | None = None,
) -> tuple[float | None, str | None]:
    """One equivalent-luminosity solve: the L′ at which `other`'s `stat` interval reaches `target` for `what`.

    (L′, None), or (None, why) when the target is missing (`why` from `target_reason`) or never reached.
    """
    if target is None:
        return None, why or "no target"
    one = IntervalSettings(
        settings.grid,
        settings.likelihood,
        pl_threshold=settings.pl_threshold,
        cls_level=settings.cls_level,
        statistics=(stat,),
    )

    @lru_cache(maxsize=256)
    def other_at(lumi: float) -> Interval:
        return intervals_at(other, lumi, one)[stat]

    return solve_equivalent_luminosity(target, lambda lumi: getattr(other_at(round(lumi, 9)), what), lumi_ifb)


EQUIVALENT_QUANTITIES = ("width", "lower", "upper")


def equivalent_luminosities(
    reference: Templates, other: Templates, lumi_ifb: float, settings: IntervalSettings
) -> dict[str, dict]:
    """For each statistic: L′ at which `other` reaches `reference`'s Δκλ, lower and upper bound at L.

    Returns {"pl": {"width": L′, "lower": L′, "upper": L′, "target_width": Δκλ, ..., "why": {what: reason}},
    "cls": {...}}; "why" names, for each L′ that is None, why there is none. With the method against
    itself every L′ equals L (a test pins it). The scan runs the same solves as Dask tasks.
    """
    ref = intervals_at(reference, lumi_ifb, settings)
    return {
        stat: equivalent_entry(
            interval,
            {
                what: solve_equivalent(
                    other,
                    settings,
                    lumi_ifb,
                    stat,
                    what,
                    getattr(interval, what),
                    target_reason(interval, what, lumi_ifb),
                )
                for what in EQUIVALENT_QUANTITIES
            },
        )
        for stat, interval in ref.items()
    }


def equivalent_entry(interval: Interval, solved: dict[str, tuple[float | None, str | None]]) -> dict:
    """The JSON entry of one statistic: targets, L′ per quantity, and why for each missing L′."""
    entry: dict = {
        "target_lower": interval.lower,
        "target_upper": interval.upper,
        "target_width": interval.width,
    }
    for what, (value, _) in solved.items():
        entry[what] = value
    entry["why"] = {what: reason for what, (value, reason) in solved.items() if value is None}
    return entry
