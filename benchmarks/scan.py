"""Benchmark: the full κλ table (3 methods × 2 luminosities × PL and CLs, with equivalent luminosity) by
SPANet2's scan against the study's method (μ-scan `upper_limit` at every integer κλ in −10…15, splines).

    .venv/bin/python benchmarks/scan.py [--signal 200000] [--background 1000000] [--workdir DIR]

Both run on the same store (built here) and the same templates. Prints the wall times, their ratio (target
≥ 20×) and the largest bound difference (target ≤ 0.02).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicSpline

from spanet2.stats.config import parse_scan_config
from spanet2.stats.intervals import allowed_region, study_cls_interval
from spanet2.stats.likelihood import KappaLikelihood
from spanet2.stats.scan import format_equivalent_table, format_interval_table, run_scan
from spanet2.stats.synthetic import MethodQuality, write_analytic_store

METHODS = {
    "min_dr_dnn": MethodQuality(signal_a=1.5, background_b=2.5, resolution=0.09),
    "spanet2_dnn": MethodQuality(signal_a=1.45, background_b=2.45, resolution=0.08),
    "spanet2": MethodQuality(signal_a=1.6, background_b=2.6, resolution=0.07),
}
LUMIS = (300.0, 3000.0)
STUDY_KAPPAS = np.arange(-10.0, 16.0)  # the study's integer κλ points


def study_pl_interval(model: KappaLikelihood, threshold: float):
    """The study's PL (closed form too): −2Δ ln L on a 0.1 grid over −10…15, a cubic spline, its crossings."""
    kappas = np.linspace(-10.0, 15.0, 251)
    values = model.twice_nll(kappas)
    spline = CubicSpline(kappas, values - values.min())
    fine = np.linspace(kappas[0], kappas[-1], 5001)
    return allowed_region(
        spline(fine), fine, lambda k: float(spline(k)), threshold, allowed_below=True, statistic="pl_study"
    )


def study_equivalent_lumi(templates, settings, target_width: float, lumi: float, stat: str, threshold: float):
    """The study's way to an equivalent luminosity: intervals at L × {1/2, 1/√2, 1, √2, 2}, Δκλ interpolated
    linearly in ln L, the target crossing read off."""
    lumis = lumi * np.array([0.5, 2**-0.5, 1.0, 2**0.5, 2.0])
    widths = []
    for value in lumis:
        model = KappaLikelihood(templates, value, settings)
        iv = study_cls_interval(model)[0] if stat == "cls" else study_pl_interval(model, threshold)
        widths.append(iv.width if iv.width is not None else math.nan)
    widths = np.asarray(widths)
    ok = np.isfinite(widths)
    order = np.argsort(widths[ok])  # Δκλ falls with L: interpolate ln L as a function of Δκλ
    return float(np.exp(np.interp(target_width, widths[ok][order], np.log(lumis[ok])[order])))


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
            store,
            n_signal=args.signal,
            n_background=args.background,
            methods=METHODS,
            seed=args.seed,
            sqrt_s_tev=13.0,
        )
        print(
            f"store: {args.signal} signal + {args.background} background events, 3 methods, "
            f"written in {time.perf_counter() - t0:.1f} s"
        )
        config = parse_scan_config(
            {
                "store": str(store),
                "output": str(Path(tmp) / "scan"),
                "sqrt_s_tev": 14,
                "signal": {"normalisation": "reference", "reference_curve": "lhchwg_nnlo_14_scaled"},
                "methods": [{"name": name, "threshold": 0.9} for name in METHODS],
                "kappa_grid": {"start": -20, "stop": 25, "step": 0.5},
                "luminosities": list(LUMIS),
                "equivalent_luminosity": {"reference": "spanet2"},
            }
        )

        # ---- SPANet2: store → templates → grid → root-found intervals → equivalent luminosity
        t0 = time.perf_counter()
        result = run_scan(config, scheduler="synchronous", plots=False)
        fast_s = time.perf_counter() - t0
        print(format_interval_table(result))
        print()
        print(format_equivalent_table(result))

        # ---- the study's method on the same templates
        t0 = time.perf_counter()
        study: dict[tuple[str, float, str], object] = {}
        study_eq: dict[tuple[str, float, str], float] = {}
        for name, tpl in result.templates.items():
            for lumi in LUMIS:
                model = KappaLikelihood(tpl, lumi, config.likelihood)
                study[(name, lumi, "pl")] = study_pl_interval(model, config.pl_threshold)
                study[(name, lumi, "cls")] = study_cls_interval(model)[0]
        for name, tpl in result.templates.items():
            if name == "spanet2":
                continue
            for lumi in LUMIS:
                for stat in ("pl", "cls"):
                    target = study[("spanet2", lumi, stat)].width
                    study_eq[(name, lumi, stat)] = study_equivalent_lumi(
                        tpl, config.likelihood, target, lumi, stat, config.pl_threshold
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
    print("\n| method | L | stat | ours L′ (Δκλ) | study L′ (Δκλ) |")
    print("|---|---|---|---|---|")
    for (name, lumi, stat), value in study_eq.items():
        print(
            f"| {name} | {lumi:g} | {stat} | {result.equivalent[name][lumi][stat]['width']:.0f} | {value:.0f} |"
        )
    ratio = study_s / fast_s
    print(f"\nSPANet2 scan (store read + 3 methods x 2 L x PL+CLs + equivalent L): {fast_s:.2f} s")
    print(f"study's method (integer-κλ μ-scan upper_limit + splines, same table): {study_s:.1f} s")
    print(f"speed-up: {ratio:.1f}x (target >= 20x: {'yes' if ratio >= 20 else 'NO'})")
    print(f"largest bound difference: {worst:.4f} (target <= 0.02: {'yes' if worst <= 0.02 else 'NO'})")


if __name__ == "__main__":
    main()
