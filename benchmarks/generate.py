"""Throughput of the fast generation chain (partons → fast detector → four-tag selection), events/min.

Usage: python benchmarks/generate.py [--events 20000] [--workers 1 2] [--background 500]
Prints accepted (four-tag) events per minute for the signal at κλ = 1 per worker count (wall clock),
the rate per CPU-minute (this process + its workers; what a free core delivers when the machine is
shared), the projection onto 2 free cores, their ratios to the 50k/min target, and the background rate.
The first call warms the signal sampler's caches.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from spanet2.generate.writer import produce_sample

TARGET_PER_MIN = 50_000


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="accepted signal events per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--background", type=int, default=500, help="accepted background events (0 = skip)")
    args = parser.parse_args()
    print(f"cores available: {os.cpu_count()}")
    produce_sample("signal", 100, sqrt_s_tev=13.0, seed=1, kappa=1.0)  # warm-up (form-factor table, PDF)
    for workers in args.workers:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        sample = produce_sample("signal", args.events, sqrt_s_tev=13.0, seed=2, kappa=1.0, workers=workers)
        minutes = (time.perf_counter() - start) / 60
        cpu_minutes = (_cpu_seconds() - cpu_start) / 60
        rate = sample.n_events / minutes
        per_cpu = sample.n_events / max(cpu_minutes, 1e-9)
        print(
            f"signal κλ=1, workers={workers}: {sample.n_events} accepted of {sample.n_generated} generated "
            f"in {minutes * 60:.1f} s wall -> {rate:,.0f} accepted/min (ratio to 50k/min: "
            f"{rate / TARGET_PER_MIN:.2f}); {per_cpu:,.0f} per CPU-minute -> 2 free cores "
            f"{2 * per_cpu:,.0f}/min (ratio {2 * per_cpu / TARGET_PER_MIN:.2f})"
        )
    if args.background:
        start = time.perf_counter()
        sample = produce_sample("background", args.background, sqrt_s_tev=13.0, seed=3)
        minutes = (time.perf_counter() - start) / 60
        print(
            f"background, workers=1: {sample.n_events} accepted of {sample.n_generated} generated "
            f"(pass rate {sample.info['efficiency']:.4f}) -> {sample.n_events / minutes:,.0f} accepted/min"
        )


if __name__ == "__main__":
    main()
