"""Pythia 8 back end: events/s (wall and per CPU-second) and, with --physics, the note's truth-level figures.

Usage: python benchmarks/generate_pythia.py [--events 400] [--kappa 1] [--workers 1] [--no-mpi] [--power-shower]
       python benchmarks/generate_pythia.py --physics --events 6000 --kappa=-5,1,5 [--json out.json]

For each κλ: parton events (gg → HH → 4b, LO with exact top loops) → Pythia 8 shower + hadronisation
(MPI on unless --no-mpi) → anti-kT 0.4 jets, truth flavour, b-tagging → four-tag cut. Prints the Pythia
chain's rate (events/s wall clock and per CPU-second, this process + its workers; the parton sampler is
timed separately). With --physics also: per κλ, the 2h event fractions in the N_jet = 4 / 5 / ≥ 6 bins
and in total (PHYSICS.md §8: SM 0.280 / 0.287 / 0.229, total 0.797; κλ = 5: 0.315 / 0.255 / 0.174) and
the min-ΔR pairing efficiency of the 2h events (note: κλ = −5: 0.644, 1: 0.809, 5: 0.395), next to the
fast detector on the same parton events. Pythia's jets are matched to the H → b b̄ quarks of its own event
record (after the ISR recoil), as a Delphes file's Particle branch would give them.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from spanet2.generate.detector import fast_detector
from spanet2.generate.selection import finalize_events
from spanet2.generate.signal import generate_signal_partons
from spanet2.physics.pairing import min_dr_pairing
from spanet2.training.metrics import assignment_table

NOTE = {
    -5.0: (None, 0.644),
    1.0: ((0.280, 0.287, 0.229, 0.797), 0.809),
    5.0: ((0.315, 0.255, 0.174, 0.745), 0.395),
}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _figures(events: dict[str, np.ndarray]) -> dict[str, float]:
    targets = np.stack([events[f"TARGETS/h{h}/b{b}"] for h in (1, 2) for b in (1, 2)], axis=1)  # (M, 4)
    pred = min_dr_pairing(
        events["INPUTS/Source/pt"],
        events["INPUTS/Source/eta"],
        events["INPUTS/Source/phi"],
        events["INPUTS/Source/mass"],
        events["INPUTS/Source/btag"],
        events["INPUTS/Source/MASK"],
    )
    table = assignment_table(pred, targets, events["INPUTS/Source/MASK"].sum(axis=1)).as_dict()
    n_higgs = events["TRUTH/n_higgs_matched"]
    return {
        "selected": int(len(n_higgs)),
        "frac_2h_4": table["=4"]["event_fraction"],
        "frac_2h_5": table["=5"]["event_fraction"],
        "frac_2h_6": table[">=6"]["event_fraction"],
        "frac_2h": table["Total"]["event_fraction"],
        "frac_1h": float((n_higgs == 1).mean()) if len(n_higgs) else float("nan"),
        "min_dr_efficiency": table["Total"]["event_efficiency"],
        "n_2h": table["Total"]["n_events"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400, help="parton events per κλ point")
    parser.add_argument("--kappa", default="1", help="comma-separated κλ points")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-mpi", action="store_true")
    parser.add_argument(
        "--power-shower", action="store_true", help="ISR up to the kinematic limit (Pythia default)"
    )
    parser.add_argument(
        "--physics", action="store_true", help="also print 2h fractions and min-ΔR efficiency"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()
    try:
        from spanet2.generate.pythia_backend import PythiaSettings, pythia_shower
    except ImportError as exc:  # `make bench` without the [pythia] extra
        print(f"skipped: {exc}")
        return
    settings = PythiaSettings(mpi=not args.no_mpi, power_shower=args.power_shower)
    kappas = [float(k) for k in args.kappa.split(",")]

    results = {}
    for i, kappa in enumerate(kappas):
        rng = np.random.default_rng([args.seed, i])
        t0 = time.perf_counter()
        partons = generate_signal_partons(args.events, kappa=kappa, sqrt_s_tev=13.0, rng=rng)
        t_partons = time.perf_counter() - t0
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        jets, showered = pythia_shower(partons, rng, workers=args.workers, settings=settings)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        row = {
            "kappa": kappa,
            "events": args.events,
            "partons_s": t_partons,
            "pythia_wall_s": wall,
            "pythia_cpu_s": cpu,
            "events_per_s": args.events / wall,
            "events_per_cpu_s": args.events / cpu,
            "mean_n_jets": float(jets.mask.sum(axis=1).mean()),
        }
        print(
            f"κλ = {kappa:g}: {args.events} events, partons {t_partons:.1f} s; Pythia chain {wall:.1f} s wall "
            f"({row['events_per_s']:.1f} events/s), {cpu:.1f} CPU-s ({row['events_per_cpu_s']:.1f} events/CPU-s, "
            f"{1e3 * cpu / args.events:.1f} ms/event); <N_jet> = {row['mean_n_jets']:.2f}",
            flush=True,
        )
        if args.physics:
            k_in = np.full(len(partons), kappa)
            row["pythia"] = _figures(finalize_events(jets, showered, kappa_input=k_in))
            row["fast"] = _figures(
                finalize_events(
                    fast_detector(partons, np.random.default_rng([args.seed, i, 1])),
                    partons,
                    kappa_input=k_in,
                )
            )
            for name in ("pythia", "fast"):
                f = row[name]
                print(
                    f"  {name:6s} selected {f['selected']:5d} (eff {f['selected'] / args.events:.4f}); 2h fraction "
                    f"N=4 {f['frac_2h_4']:.3f} / N=5 {f['frac_2h_5']:.3f} / N>=6 {f['frac_2h_6']:.3f} / total "
                    f"{f['frac_2h']:.3f}, 1h {f['frac_1h']:.3f}; min-ΔR efficiency {f['min_dr_efficiency']:.3f} "
                    f"({f['n_2h']} 2h events)",
                    flush=True,
                )
            fractions, efficiency = NOTE.get(kappa, (None, None))
            if fractions:
                print(
                    f"  note   2h fraction N=4 {fractions[0]:.3f} / N=5 {fractions[1]:.3f} / N>=6 {fractions[2]:.3f} "
                    f"/ total {fractions[3]:.3f}",
                    flush=True,
                )
            if efficiency:
                print(f"  note   min-ΔR efficiency {efficiency:.3f}", flush=True)
        results[str(kappa)] = row
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
