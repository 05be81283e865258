"""Benchmark, like for like: the κλ table (3 methods × 2 luminosities × PL and CLs, and the equivalent
luminosity by Δκλ of each method against SPANet2) by `spanet2 scan` against the study's method, on the same
store, the same templates and the same κλ points (the integers −10…15).

    .venv/bin/python benchmarks/scan.py [--signal 200000] [--background 1000000] [--workdir DIR]

The study's method: at each integer κλ the 95 % CL upper limit on the signal strength from a μ scan (pyhf
`upper_limit`), a cubic spline through the integer points, its crossings (CLs); −2Δ ln L at the integer
points, a spline, its crossings (PL); equivalent luminosity: the other method's intervals at L × {1/2, 1/√2,
√2, 2} (the one at L is the table's, reused), Δκλ interpolated in ln L. Ours: closed forms on the same grid,
every crossing refined by root finding, Brent on ln L for L′ — timed end to end from the store (read
included) in this process (scheduler "synchronous": no cluster start-up in the timing). Prints both wall
times, the speed-up "NNx" (target ≥ 20x) and the largest bound difference (target ≤ 0.02).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicSpline

from spanet2.stats.config import parse_scan_config
from spanet2.stats.intervals import allowed_region, study_cls_interval
from spanet2.stats.likelihood import KappaLikelihood
from spanet2.stats.scan import format_equivalent_table, format_interval_table, prepare_templates, run_scan
from spanet2.stats.synthetic import MethodQuality, write_analytic_store

METHODS = {
    "min_dr_dnn": MethodQuality(signal_a=1.5, background_b=2.5, resolution=0.09),
    "spanet2_dnn": MethodQuality(signal_a=1.45, background_b=2.45, resolution=0.08),
    "spanet2": MethodQuality(signal_a=1.6, background_b=2.6, resolution=0.07),
}
REFERENCE = "spanet2"
LUMIS = (300.0, 3000.0)
KAPPAS = np.arange(-10.0, 16.0)  # the study's integer κλ points; our grid is the same
LUMI_STEPS = np.array([0.5, 2**-0.5, 2**0.5, 2.0])  # the study's extra luminosities for L′ (× L)


def study_pl_interval(model: KappaLikelihood, threshold: float):
    """The study's PL: −2 ln L at the integer κλ, a cubic spline, Δ against the spline's minimum, crossings."""
    values = model.twice_nll(KAPPAS)
    spline = CubicSpline(KAPPAS, values)
    fine = np.linspace(KAPPAS[0], KAPPAS[-1], 100 * (KAPPAS.size - 1) + 1)
    best = float(spline(fine).min())
    return allowed_region(
        spline(fine) - best,
        fine,
        lambda k: float(spline(k)) - best,
        threshold,
        allowed_below=True,
        statistic="pl_study",
    )


def study_interval(templates, lumi: float, settings, stat: str, threshold: float):
    model = KappaLikelihood(templates, lumi, settings)
    return study_cls_interval(model, KAPPAS)[0] if stat == "cls" else study_pl_interval(model, threshold)


def study_equivalent_lumi(target: float, lumi: float, value_at_lumi: float, values_at_steps) -> float:
    """The quantity (Δκλ, lower or upper bound; monotonic in L) interpolated linearly in ln L through
    (L × steps, values) and the table's own value at L; the L′ where it equals the target."""
    lumis = np.concatenate([[lumi], lumi * LUMI_STEPS])
    values = np.concatenate([[value_at_lumi], values_at_steps])
    ok = np.isfinite(values)
    order = np.argsort(values[ok])  # ln L as a function of the quantity
    return float(np.exp(np.interp(target, values[ok][order], np.log(lumis[ok])[order])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--signal", type=int, default=200_000)
    parser.add_argument("--background", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        store = Path(tmp) / "events.zarr"
        t0 = time.perf_counter()
        write_analytic_store(
            store, n_signal=args.signal, n_background=args.background, methods=METHODS, seed=args.seed
        )
        print(
            f"store: {args.signal} signal + {args.background} background events, 3 methods, "
            f"written in {time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.1f}"
        )
        config = parse_scan_config(
            {
                "store": str(store),
                "output": str(Path(tmp) / "scan"),
                "sqrt_s_tev": 14,
                "signal": {"normalisation": "reference", "reference_curve": "lhchwg_nnlo_14_scaled"},
                "methods": [{"name": name, "threshold": 0.9} for name in METHODS],
                "kappa_grid": KAPPAS.tolist(),
                "luminosities": list(LUMIS),
                "equivalent_luminosity": {"reference": REFERENCE},
            }
        )

        # ---- ours: store → templates → grid → root-found intervals → equivalent luminosity (L′ by Δκλ etc.)
        t0 = time.perf_counter()
        result = run_scan(config, scheduler="synchronous", plots=False)
        fast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare_templates(config)  # the store-read part of the above, timed alone
        read_s = time.perf_counter() - t0
        print(format_interval_table(result))
        print()
        print(format_equivalent_table(result))

        # ---- the study's method on the same templates, κλ points and intervals
        t0 = time.perf_counter()
        study = {
            (name, lumi, stat): study_interval(tpl, lumi, config.likelihood, stat, config.pl_threshold)
            for name, tpl in result.templates.items()
            for lumi in LUMIS
            for stat in ("pl", "cls")
        }
        study_eq = {}
        for name, tpl in result.templates.items():
            if name == REFERENCE:
                continue
            for lumi in LUMIS:
                for stat in ("pl", "cls"):
                    steps = [
                        study_interval(tpl, lumi * f, config.likelihood, stat, config.pl_threshold)
                        for f in LUMI_STEPS
                    ]
                    for what in ("width", "lower", "upper"):  # the same L′ quantities as ours, same intervals
                        values = [getattr(iv, what) for iv in steps]
                        study_eq[(name, lumi, stat, what)] = study_equivalent_lumi(
                            getattr(study[(REFERENCE, lumi, stat)], what),
                            lumi,
                            getattr(study[(name, lumi, stat)], what),
                            np.array([math.nan if v is None else v for v in values]),
                        )
        study_s = time.perf_counter() - t0

    worst = 0.0
    print("\n| method | L | stat | ours lower | study lower | ours upper | study upper |")
    print("|---|---|---|---|---|---|---|")
    for (name, lumi, stat), iv in study.items():
        ours = result.intervals[name][lumi][stat]
        worst = max(worst, abs(ours.lower - iv.lower), abs(ours.upper - iv.upper))
        print(
            f"| {name} | {lumi:g} | {stat} | {ours.lower:.3f} | {iv.lower:.3f} | {ours.upper:.3f} | {iv.upper:.3f} |"
        )
    print("\n| method | L | stat | L′ by | ours L′ | study L′ |")
    print("|---|---|---|---|---|---|")
    for (name, lumi, stat, what), value in study_eq.items():
        ours_eq = result.equivalent[name][lumi][stat][what]
        print(f"| {name} | {lumi:g} | {stat} | {what} | {ours_eq:.0f} | {value:.0f} |")
    kappa_s = fast_s - read_s
    ratio = study_s / kappa_s
    print(
        f"\nours, end to end (store read {read_s:.2f} s + 3 methods x 2 L x PL+CLs + every L′ + files): "
        f"{fast_s:.2f} s"
    )
    print(f"study's method (integer-κλ μ-scan upper_limit + splines, same table and L′): {study_s:.1f} s")
    print(
        f"speed-up on the same work from the same templates: {ratio:.0f}x "
        f"(target >= 20x: {'yes' if ratio >= 20 else 'NO'})"
    )
    print(f"speed-up with our store read included: {study_s / fast_s:.0f}x")
    print(f"largest bound difference: {worst:.4f} (target <= 0.02: {'yes' if worst <= 0.02 else 'NO'})")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores, shared)")


if __name__ == "__main__":
    main()
