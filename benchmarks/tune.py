"""Search throughput: trials per minute at concurrency 1 vs 2 on this machine (tiny SPANet2 trials, one Ray).

Run: .venv/bin/python benchmarks/tune.py [--trials 4] [--epochs 1]. Prints both rates and their ratio; the
ideal on 2 free cores is 2.0 (each trial is single-threaded; Ray gives each trial 1 CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work" / "tune"


def _toy_data():
    # The trainer tests' toy HH -> 4b generator (vectorised numpy, seconds): real HDF5 in the SPANet layout.
    spec = importlib.util.spec_from_file_location(
        "trainer_data", ROOT / "tests" / "training" / "trainer_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--events", type=int, default=4000)
    args = parser.parse_args(argv)

    import ray
    import yaml

    from spanet2.hpc.search_space import load_search_config
    from spanet2.hpc.tune import read_ledger, run_search

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    data = _toy_data()
    event = data.write_topology(WORK / "event.yaml")
    train = data.write_event_file(WORK / "train.h5", args.events, seed=1)
    options = data.write_options(
        WORK / "options.json", event_file=event, training_file=train, epochs=args.epochs, num_gpu=0
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rates = {}
    try:
        for concurrency in (1, 2):
            config_path = WORK / f"search_c{concurrency}.yaml"
            config_path.write_text(
                yaml.safe_dump(
                    {
                        "model": "spanet2",
                        "options": str(options),
                        "objective": "val_loss",
                        "num_samples": args.trials,
                        "epochs": args.epochs,
                        "max_concurrent_trials": concurrency,
                        "resources_per_trial": {"cpu": 1},
                        "scheduler": "fifo",
                        "seed": 0,
                        "space": {
                            "learning_rate": {"loguniform": [1e-4, 1e-2]},
                            "dropout": {"uniform": [0.0, 0.3]},
                        },
                    }
                )
            )
            config = load_search_config(config_path)
            start = time.perf_counter()
            result = run_search(config, WORK / f"out_c{concurrency}")
            wall = time.perf_counter() - start
            ledger = read_ledger(WORK / f"out_c{concurrency}")
            starts = [r["time"] for r in ledger if r["event"] == "start"]
            ends = [r["time"] for r in ledger if r["event"] == "complete"]
            span = max(ends) - min(starts)  # first trial start -> last trial end (excludes driver start-up)
            rates[concurrency] = result.n_finished / span * 60.0
            print(
                f"concurrency {concurrency}: {result.n_finished} trials in {span:.1f} s of trials "
                f"({wall:.1f} s wall incl. driver) -> {rates[concurrency]:.2f} trials/min"
            )
    finally:
        ray.shutdown()
    ratio = rates[2] / rates[1]
    load = os.getloadavg()[0]
    print(
        f"ratio concurrency 2 / 1: {ratio:.2f}  (ideal 2.0 on 2 free cores; 1-min load average now {load:.1f} "
        f"on {os.cpu_count()} cores: other work on the machine lowers the ratio)"
    )
    (WORK / "result.json").write_text(
        json.dumps({"trials_per_min": rates, "ratio": ratio, "load_avg_1min": load}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
