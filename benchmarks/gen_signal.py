"""Parton-level gg → HH sampler throughput: events/s at κλ = 1 and 5 (13 TeV), one process.

Target (LOOPS brief): ≥ 200k accepted parton events per minute on one core, so that the fast chain
(partons + detector + selection) reaches ≥ 50k events/min on 2 cores. Also prints the one-off cost of
the form-factor table and the direct (analytic C0/D0) form-factor evaluation rate.

    python benchmarks/gen_signal.py [--events 200000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spanet2.generate import hh_amplitude
from spanet2.generate.signal import generate_signal_partons, signal_cross_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    hh_amplitude.default_form_factor_table()
    print(f"form-factor table (top + bottom loops, 301 x 25 knots): {time.perf_counter() - t0:.2f} s")

    rng = np.random.default_rng(0)
    n = 20_000
    m = 250.0 + 1000.0 * rng.random(n)
    t, _ = hh_amplitude.mandelstam_t(m**2, 2.0 * rng.random(n) - 1.0)
    t0 = time.perf_counter()
    hh_amplitude.box_form_factors(m**2, t)
    print(f"direct F_box, G_box (analytic C0/D0): {n / (time.perf_counter() - t0):,.0f} points/s")

    for kappa in (1.0, 5.0):
        generate_signal_partons(
            1000, kappa=kappa, sqrt_s_tev=13.0, rng=np.random.default_rng(1)
        )  # warm caches
        t0 = time.perf_counter()
        events = generate_signal_partons(
            args.events, kappa=kappa, sqrt_s_tev=13.0, rng=np.random.default_rng(2)
        )
        dt = time.perf_counter() - t0
        rate = len(events) / dt
        print(
            f"kappa={kappa:g}: {len(events)} events in {dt:.2f} s = {rate:,.0f} events/s "
            f"= {60 * rate:,.0f} events/min (target 200,000/min: ratio {60 * rate / 2e5:.1f})"
        )

    t0 = time.perf_counter()
    sigma, err = signal_cross_section(1.0, 13.0, n_points=400_000)
    print(
        f"sigma_LO(SM, 13 TeV) = {sigma:.3f} +- {err:.3f} fb in {time.perf_counter() - t0:.2f} s (MadGraph LO 20.27)"
    )


if __name__ == "__main__":
    main()
