"""Benchmark, scaling: `spanet2 scan` on a 20M-event store — 3 methods × 4 luminosities × PL and CLs with the
equivalent luminosity against SPANet2 — without nuisance parameters, and with them (background
normalisation 5 %, signal theory 10 %, per-bin MC statistics; pyhf fits at every κλ point), on 1 and on
2 Dask workers. Each run is a fresh `spanet2 scan` process (cluster start-up, store read on the workers,
all tasks, files); its wall time and the peak resident memory of the driver and its workers together
(sampled every 0.1 s) are printed with the 1 → 2 worker ratio.

    .venv/bin/python benchmarks/scan_scaling.py [--events 20000000] [--store PATH] [--workdir DIR]

--store reuses (or first writes) the store at PATH. With nuisances each equivalent-luminosity evaluation
is a whole pyhf grid scan at another L′, so that run scans a coarser grid (κλ −10…15, step 1) and by
default leaves the equivalent luminosity out (--nuisance-equivalent puts it back; hours on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from spanet2.stats.synthetic import MethodQuality, write_analytic_store

METHODS = {
    "min_dr_dnn": MethodQuality(signal_a=1.5, background_b=2.5, resolution=0.09),
    "spanet2_dnn": MethodQuality(signal_a=1.45, background_b=2.45, resolution=0.08),
    "spanet2": MethodQuality(signal_a=1.6, background_b=2.6, resolution=0.07),
}
LUMIS = [139, 300, 1000, 3000]
SPANET2 = str(Path(sys.executable).parent / "spanet2")


def _config(path: Path, store: Path, out: Path, *, nuisances: bool, equivalent: bool) -> Path:
    raw = {
        "store": str(store),
        "output": str(out),
        "sqrt_s_tev": 14,
        "signal": {"normalisation": "reference", "reference_curve": "lhchwg_nnlo_14_scaled"},
        "methods": [{"name": name, "threshold": 0.9} for name in METHODS],
        "kappa_grid": {"start": -10, "stop": 15, "step": 1.0}
        if nuisances
        else {"start": -20, "stop": 25, "step": 0.5},
        "luminosities": LUMIS,
    }
    if equivalent:
        raw["equivalent_luminosity"] = {"reference": "spanet2"}
    if nuisances:
        raw["uncertainties"] = {"background_norm": 0.05, "signal_theory": 0.1, "mc_stat": True}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _run(config: Path, workers: int) -> tuple[float, float, int]:
    """(wall s, peak RSS GiB of the process tree, exit code) of one `spanet2 scan`."""
    peak = [0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [SPANET2, "scan", str(config), "--workers", str(workers), "--no-plots"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return wall, peak[0] / 2**30, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--signal-fraction", type=float, default=0.2)
    parser.add_argument("--store", default=None, help="reuse (or write) the store here")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--nuisance-equivalent", action="store_true")
    parser.add_argument("--skip-nuisances", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        store = Path(args.store) if args.store else Path(tmp) / "events.zarr"
        n_signal = int(args.events * args.signal_fraction)
        if not store.exists():
            t0 = time.perf_counter()
            write_analytic_store(
                store,
                n_signal=n_signal,
                n_background=args.events - n_signal,
                methods=METHODS,
                seed=3,
                sqrt_s_tev=13.0,
                batch_size=1_000_000,
                pairing=False,
            )
            print(f"store: {args.events} events written in {time.perf_counter() - t0:.0f} s")
        size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**30
        print(f"store {store}: {args.events} events, {size:.2f} GiB on disk; {os.cpu_count()} cores")
        runs = [(False, True)] + ([] if args.skip_nuisances else [(True, args.nuisance_equivalent)])
        for nuisances, equivalent in runs:
            label = "with nuisances (pyhf fits)" if nuisances else "without nuisances (closed forms)"
            times = {}
            for workers in (1, 2):
                out = Path(tmp) / f"out_{int(nuisances)}_{workers}"
                config = _config(
                    Path(tmp) / f"scan_{int(nuisances)}.yaml",
                    store,
                    out,
                    nuisances=nuisances,
                    equivalent=equivalent,
                )
                load = os.getloadavg()[0]
                wall, rss, rc = _run(config, workers)
                times[workers] = wall
                print(
                    f"{label}, equivalent L {'on' if equivalent else 'off'}, {workers} worker(s): {wall:.1f} s, "
                    f"peak RSS driver+workers {rss:.2f} GiB, rc {rc}, load average before {load:.1f}"
                )
            print(f"{label}: 2 workers {times[1] / times[2]:.2f}x faster than 1")


if __name__ == "__main__":
    main()
