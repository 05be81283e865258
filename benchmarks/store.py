"""Event-store build throughput and peak memory: `spanet2 store build` on a synthetic N-event file (default 1M).

Writes a labelled input HDF5 (10 jet slots, weights, κλ terms, targets, MET/leptons), a SPANet2-style
predictions file and a score file, then runs `spanet2 store build` with two methods (SPANet2 pairing from
the predictions, min-ΔR pairing computed + separate scores) in a child process and prints events/s and the
child's peak RSS. Target: peak RSS < 2 GiB for 1M events, i.e. memory bounded by the chunk size.

    python benchmarks/store.py [--events 1000000] [--chunk_size 65536] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

MAX_JETS = 10
PAIRING_KEYS = ("TARGETS/h1/b1", "TARGETS/h1/b2", "TARGETS/h2/b1", "TARGETS/h2/b2")


def synthetic_chunk(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n events of 4–10 pT-ordered jets, the first four b-tagged (throughput only; no physics claim)."""
    n_jets = rng.integers(4, MAX_JETS + 1, n)
    real = np.arange(MAX_JETS)[None, :] < n_jets[:, None]  # (n, J)
    pt = np.sort(rng.exponential(60.0, (n, MAX_JETS)) + 20.0, axis=1)[:, ::-1] * real
    label = (rng.random(n) < 0.5).astype(np.int64)
    targets = np.where(label[:, None] == 1, np.argsort(rng.random((n, 4)), axis=1), -1)
    weight = np.where(label == 1, 0.577, 6060.0) / 5e5
    return {
        "INPUTS/Source/MASK": real,
        "INPUTS/Source/pt": pt.astype(np.float32),
        "INPUTS/Source/eta": (rng.normal(0, 1.2, (n, MAX_JETS)) * real).astype(np.float32),
        "INPUTS/Source/phi": (rng.uniform(-np.pi, np.pi, (n, MAX_JETS)) * real).astype(np.float32),
        "INPUTS/Source/mass": ((rng.exponential(8, (n, MAX_JETS)) + 4) * real).astype(np.float32),
        "INPUTS/Source/btag": real & (np.arange(MAX_JETS)[None, :] < 4),
        "INPUTS/Kappa/kappa": rng.choice([-5.0, -3, -1, 1, 2, 3, 5, 7, 9, 12], n).astype(np.float32),
        "TARGETS/h1/b1": targets[:, 0], "TARGETS/h1/b2": targets[:, 1],
        "TARGETS/h2/b1": targets[:, 2], "TARGETS/h2/b2": targets[:, 3],
        "CLASSIFICATIONS/EVENT/signal": label,
        "WEIGHTS/weight": weight,
        "WEIGHTS/kappa_terms": weight[:, None] * np.array([2.27, -1.62, 0.36]) * label[:, None],
        "GLOBAL_EXTRA/met": rng.exponential(25, n).astype(np.float32),
        "GLOBAL_EXTRA/met_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        "GLOBAL_EXTRA/n_electrons": rng.poisson(0.05, n).astype(np.int16),
        "GLOBAL_EXTRA/n_muons": rng.poisson(0.05, n).astype(np.int16),
    }  # fmt: skip


def write_inputs(workdir: Path, n_events: int, chunk: int, seed: int) -> tuple[Path, Path, Path]:
    """The input, predictions and score files, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    paths = workdir / "input.h5", workdir / "pred.h5", workdir / "scores.h5"
    with (
        h5py.File(paths[0], "w") as inp,
        h5py.File(paths[1], "w") as pred,
        h5py.File(paths[2], "w") as scores,
    ):
        inp.attrs["sqrt_s_tev"] = 13.0
        for start in range(0, n_events, chunk):
            n = min(chunk, n_events - start)
            arrays = synthetic_chunk(rng, n)
            score = np.clip(0.6 * arrays["CLASSIFICATIONS/EVENT/signal"] + rng.normal(0.2, 0.2, n), 0, 1)
            predicted = np.argsort(rng.random((n, 4)), axis=1)  # a valid pairing of the four leading jets
            outputs = [
                (inp, arrays),
                (
                    pred,
                    {
                        **{k: predicted[:, i] for i, k in enumerate(PAIRING_KEYS)},
                        "CLASSIFICATIONS/EVENT/signal_probability": score.astype(np.float32),
                    },
                ),
                (scores, {"CLASSIFICATIONS/EVENT/signal_probability": (1 - score).astype(np.float32)}),
            ]
            for h5, data in outputs:
                for key, value in data.items():
                    if key not in h5:
                        h5.create_dataset(
                            key,
                            shape=(n_events, *value.shape[1:]),
                            dtype=value.dtype,
                            chunks=(min(chunk, n_events), *value.shape[1:]),
                        )
                    h5[key][start : start + n] = value
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk_size", type=int, default=65536, help="events read at a time by the builder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep the files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        inp, pred, scores = write_inputs(workdir, args.events, 131072, args.seed)
        print(f"wrote {args.events} synthetic events in {time.perf_counter() - t0:.1f} s "
              f"({inp.stat().st_size / 2**20:.0f} MiB input)")  # fmt: skip
        command = [sys.executable, "-m", "spanet2", "store", "build", "--input", str(inp),
                   "--method", f"spanet2={pred}", "--method", f"min_dr_dnn=min-dr:{scores}",
                   "--output", str(workdir / "events.zarr"), "--overwrite", "--quiet",
                   "--chunk_size", str(args.chunk_size)]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
        print(
            f"store build: {args.events} events, 2 methods, in {seconds:.1f} s = {args.events / seconds:,.0f} events/s"
        )
        print(f"peak RSS of the build: {peak_mib:.0f} MiB ({peak_mib / 2048:.2f} of the 2 GiB budget)")
    return 0 if peak_mib < 2048 else 1


if __name__ == "__main__":
    sys.exit(main())
