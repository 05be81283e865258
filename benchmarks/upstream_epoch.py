"""SPANet2 vs upstream SPANet 2.1.1, end to end: training events/s of a whole epoch through each tool's own
`train` command (data loading, optimiser, gradient clipping, per-epoch validation, logging); prints the ratio.

Both commands train the same options JSON (upstream gets it without SPANet2's extra keys) on the same HDF5 file
with the same thread count. Each is run for E and E + 1 epochs from scratch; the difference of the two wall
times is one epoch, so start-up (imports, reading the file, building the model) cancels:

    events/s = training events of one epoch / (t(E + 1) − t(E))

An untimed one-epoch run of each tool comes first, so that one-time caches (upstream compiles numba kernels on
its first run, ~200 s) are not counted.

benchmarks/upstream_speed.py compares single optimiser steps instead (no data loading, no validation). Upstream
SPANet is never a project dependency: install it in a separate venv (docs/network.md) and pass its Python.

    python benchmarks/upstream_epoch.py --upstream-python ../upstream-venv/bin/python --data data/classification_train.h5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from upstream_speed import SKIP_WITHOUT_UPSTREAM, upstream_options, write_synthetic  # noqa: E402

from spanet2.training.options import load_options  # noqa: E402


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream-python", default=os.environ.get("SPANET_UPSTREAM_PYTHON"),
                        help="Python of a venv with spanet==2.1.1 (default $SPANET_UPSTREAM_PYTHON)")  # fmt: skip
    parser.add_argument("--options", default=str(ROOT / "configs/options/spanet2_mixing_kappa.json"))
    parser.add_argument("--data", type=Path, default=None,
                        help="SPANet HDF5 training file, e.g. generated (default: 20 batches of synthetic events)")  # fmt: skip
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the options' (2048 tuned)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="E: runs of E and E + 1 epochs are timed")
    parser.add_argument("--train-split", type=float, default=0.9,
                        help="train_validation_split for both (upstream crashes when validation < one batch)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.upstream_python:  # `make bench` runs every benchmark: say why this one has nothing to compare
        print(SKIP_WITHOUT_UPSTREAM)
        return 0
    scratch = tempfile.TemporaryDirectory()
    if args.data is None:
        batch = args.batch_size or load_options(args.options).batch_size
        args.data = Path(scratch.name) / "events.h5"
        write_synthetic(args.data, 20 * batch)
    data = args.data.resolve()
    with h5py.File(data, "r") as h5:
        n_events = len(h5["INPUTS/Source/MASK"])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    ours_cli = [sys.executable, "-m", "spanet2", "train"]
    print(f"{data.name}: {n_events} events, {args.threads} threads, load average {os.getloadavg()[0]:.2f}; "
          f"one epoch = t({args.epochs + 1} epochs) − t({args.epochs})")  # fmt: skip
    print("| options | batch | training events/epoch | SPANet2 s/epoch | upstream s/epoch | SPANet2 ev/s | "
          "upstream ev/s | ratio |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for hidden in args.hidden_dims:
            options = load_options(args.options).replace(hidden_dim=hidden, training_file=str(data),
                                                         validation_file="", testing_file="",
                                                         train_validation_split=args.train_split)  # fmt: skip
            if args.batch_size:
                options = options.replace(batch_size=args.batch_size)
            options = options.replace(event_info_file=str(ROOT / options.event_info_file))
            ours_path = tmp / f"spanet2_{hidden}.json"
            ours_path.write_text(json.dumps(options.to_dict()))
            theirs = upstream_options(options)
            theirs_path = tmp / f"upstream_{hidden}.json"
            theirs_path.write_text(json.dumps(theirs))
            seconds = {}
            for tool in ("spanet2", "upstream"):
                walls = []
                # an untimed first run fills the caches (upstream's numba kernels compile on first use, ~200 s)
                for epochs in (1, args.epochs, args.epochs + 1):
                    name = f"{tool}_{hidden}_{epochs}_{len(walls)}"
                    if tool == "spanet2":
                        command = ours_cli + [
                            "-of",
                            str(ours_path),
                            "-l",
                            str(tmp),
                            "-n",
                            name,
                            "--epochs",
                            str(epochs),
                        ]
                    else:
                        command = [args.upstream_python, "-m", "spanet.train", "-of", str(theirs_path), "-l",
                                   str(tmp), "-n", name, "--epochs", str(epochs), "--gpus", "0"]  # fmt: skip
                    walls.append(_timed(command, env, tmp))
                seconds[tool] = walls[2] - walls[1]
            n_train = int(round(n_events * options.dataset_limit * options.train_validation_split))
            ours_rate, theirs_rate = n_train / seconds["spanet2"], n_train / seconds["upstream"]
            print(
                f"| hidden_dim {hidden} | {options.batch_size} | {n_train:,} | {seconds['spanet2']:.1f} | "
                f"{seconds['upstream']:.1f} | {ours_rate:,.0f} | {theirs_rate:,.0f} | {ours_rate / theirs_rate:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
