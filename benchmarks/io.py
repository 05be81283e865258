"""I/O benchmark: write 1M- and 4M-event HDF5 files, convert each to Zarr (and validate) in a fresh process; print rates and peak RSS."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["write_synthetic", "main"]

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.3


def write_synthetic(
    path: Path, n_events: int, *, n_jets: int = 10, chunk: int = 262144, seed: int = 1
) -> float:
    """Write an hh4b-layout file (inputs, targets, labels, WEIGHTS) chunk by chunk; return seconds."""
    from spanet2.events.hdf5 import HDF5Writer

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with HDF5Writer(path, attrs={"sqrt_s_tev": 14.0, "synthetic": True}, chunk_rows=65536) as writer:
        for start in range(0, n_events, chunk):
            n = min(chunk, n_events - start)
            n_real = rng.integers(4, n_jets + 1, n)
            mask = np.arange(n_jets)[None, :] < n_real[:, None]  # (n, J)
            feats = {
                name: np.where(mask, rng.random((n, n_jets), dtype=np.float32), 0).astype(np.float32)
                for name in ("mass", "pt", "eta", "phi")
            }
            perm = np.argsort(rng.random((n, 4)), axis=1)  # (n, 4) distinct real jets
            targets = np.where(rng.random((n, 4)) < 0.85, perm, -1).astype(np.int64)
            label = rng.integers(0, 2, n).astype(np.int64)
            chunk_arrays = {
                "INPUTS/Source/MASK": mask,
                **{f"INPUTS/Source/{k}": v for k, v in feats.items()},
                "INPUTS/Source/btag": mask & (rng.random((n, n_jets)) < 0.6),
                "INPUTS/Kappa/kappa": rng.choice([-5.0, 1.0, 5.0], n).astype(np.float32),
                "CLASSIFICATIONS/EVENT/signal": label,
                "WEIGHTS/weight": rng.random(n) * 1e-3,
                "WEIGHTS/kappa_terms": rng.random((n, 3)) * 1e-3 * label[:, None],
            }
            for k, name in enumerate(("h1/b1", "h1/b2", "h2/b1", "h2/b2")):
                chunk_arrays[f"TARGETS/{name}"] = targets[:, k]
            writer.append(chunk_arrays)
    return time.perf_counter() - t0


def _vm_hwm_mib() -> float:
    """This process's own peak RSS (VmHWM; reset at exec, unlike ru_maxrss which keeps the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(task: str, h5: str, out: str | None) -> None:
    """Runs in a fresh interpreter: one conversion (or validation); prints a JSON line with time and RSS."""
    if task == "write":
        seconds = write_synthetic(Path(h5), int(out))
        print(json.dumps({"seconds": seconds}))
        return
    from spanet2.events.hdf5 import validate_file
    from spanet2.events.store import convert_hdf5_to_store, open_store
    from spanet2.events.topology import load_topology

    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if task == "convert":
        summary = convert_hdf5_to_store(h5, out)
        n = summary.n_events
        assert sum(open_store(out).n_events(s) for s in open_store(out).samples) == n
    else:
        n = validate_file(load_topology(REPO / "configs/events/hh4b.yaml"), h5).n_events
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    print(
        json.dumps(
            {
                "n": n,
                "seconds": seconds,
                "peak_rss_mib": peak_kib / 1024,
                "import_rss_mib": base_kib / 1024,
                "vm_hwm_mib": _vm_hwm_mib(),
            }
        )
    )


def _measure(task: str, h5: Path, out: Path | str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, str(h5)] + (
        [str(out)] if out else []
    )
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[1_000_000, 4_000_000], metavar=("SMALL", "LARGE")
    )
    parser.add_argument("--tmp", default=None, help="folder for the temporary files (default: system temp)")
    parser.add_argument("--no-validate", action="store_true", help="skip the validation measurement")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.child[2] if len(args.child) > 2 else None)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="spanet2-io-", dir=args.tmp))
    results: dict[str, dict[int, dict]] = {"convert": {}, "validate": {}}
    try:
        for n in args.sizes:
            h5 = tmp / f"events_{n}.h5"
            # written in its own process too: this parent stays small, since a child's ru_maxrss
            # starts from its parent's peak at fork/exec
            seconds = _measure("write", h5, str(n))["seconds"]
            size_mib = h5.stat().st_size / 2**20
            print(
                f"wrote {n:>9,d} events: {size_mib:8.1f} MiB in {seconds:6.1f} s ({n / seconds:,.0f} events/s)"
            )
            results["convert"][n] = _measure("convert", h5, tmp / f"events_{n}.zarr")
            if not args.no_validate:
                results["validate"][n] = _measure("validate", h5, None)
            h5.unlink()
            shutil.rmtree(tmp / f"events_{n}.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    small, large = args.sizes
    ok = True
    print(
        f"\n{'task':<9} {'events':>10} {'seconds':>8} {'events/s':>12} {'ru_maxrss MiB':>14} "
        f"{'after import':>13} {'VmHWM MiB':>10}"
    )
    for task, by_n in results.items():
        for n, r in by_n.items():
            print(
                f"{task:<9} {n:>10,d} {r['seconds']:8.2f} {n / r['seconds']:12,.0f} {r['peak_rss_mib']:14.1f} "
                f"{r['import_rss_mib']:13.1f} {r['vm_hwm_mib']:10.1f}"
            )
        if by_n:
            ratio = by_n[large]["peak_rss_mib"] / by_n[small]["peak_rss_mib"]
            ok &= ratio <= TARGET_RATIO
            print(
                f"{task}: peak RSS ratio {large:,d} / {small:,d} events = {ratio:.3f} "
                f"(target <= {TARGET_RATIO}) {'OK' if ratio <= TARGET_RATIO else 'FAIL'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
