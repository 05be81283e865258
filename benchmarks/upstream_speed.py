"""SPANet2 vs upstream SPANet 2.1.1: training events/s at equal options, step against step; prints the ratio.

Upstream SPANet is never a project dependency: install it in a separate venv (see docs/network.md) and pass
its Python with --upstream-python (or SPANET_UPSTREAM_PYTHON). Both sides build the network from the same
options JSON, train on the same HDF5 events (synthetic HH-like events by default, or --data FILE), with the
same batch size, thread count, AdamW + gradient clipping, and report the median of --steps timed steps
(after two warm-up steps). Run with nothing else loading the machine: both sides are timed one after the
other, so a load change between them biases the ratio.

On CPU SPANet2 runs each batch in jet-multiplicity groups trimmed of their padding (the same arithmetic,
exactly), so its speed depends on how many of the jet slots are real: the synthetic default has 4–10 real
jets of 10 uniformly (mean 7), generated study events about 5. The numbers in docs/network.md are on
generated events (--data).

    python benchmarks/upstream_speed.py --upstream-python ../upstream-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import synthetic_events  # noqa: E402

from spanet2.events.topology import load_topology  # noqa: E402
from spanet2.training.dataset import read_event_arrays  # noqa: E402
from spanet2.training.engines import build_optimizer  # noqa: E402
from spanet2.training.losses import SPANet2Loss  # noqa: E402
from spanet2.training.model import SPANet2, parameter_counts  # noqa: E402
from spanet2.training.normalization import identity_statistics  # noqa: E402
from spanet2.training.options import SPANET2_KEYS, load_options  # noqa: E402

UPSTREAM_NAMES = {"embedding": "embedding", "encoder": "encoder", "branches": "branch_decoders",
                  "classifiers": "classification_decoder", "total": "total"}  # fmt: skip


def write_synthetic(path: Path, n: int, seed: int = 0) -> None:
    """Synthetic HH-like events in the SPANet HDF5 layout (readable by both implementations)."""
    events = synthetic_events(n, 10, seed)
    features = events.sequential["Source"]
    with h5py.File(path, "w") as h5:
        h5["INPUTS/Source/MASK"] = events.sequential_mask["Source"]
        for i, name in enumerate(("mass", "pt", "eta", "phi", "btag")):
            h5[f"INPUTS/Source/{name}"] = features[..., i]
        h5["INPUTS/Kappa/kappa"] = events.global_inputs["Kappa"][:, 0]
        for p, particle in enumerate(("h1", "h2")):
            for d, daughter in enumerate(("b1", "b2")):
                h5[f"TARGETS/{particle}/{daughter}"] = events.targets[:, p, d]
        h5["CLASSIFICATIONS/EVENT/signal"] = events.classifications["EVENT/signal"]


def measure_ours(
    options, data: Path, threads: int, steps: int, *, compiled: bool = False
) -> tuple[float, dict[str, int], float]:
    """(events per wall-clock second, events per CPU-second of this process, parameters per module, seconds of
    the two warm-up steps — torch.compile's time when compiled)."""
    torch.set_num_threads(threads)
    topology = load_topology(ROOT / options.event_info_file)
    torch.manual_seed(0)
    model = SPANet2(options, topology, identity_statistics(topology)).train()
    forward = torch.compile(model) if compiled else model
    loss_fn = SPANet2Loss(options, topology)
    optimizer = build_optimizer(model, options.optimizer, options.learning_rate, options.l2_penalty)
    arrays = read_event_arrays(data, topology, stop=2 * options.batch_size)
    batches = [arrays.batch(np.arange(i * options.batch_size, (i + 1) * options.batch_size)) for i in range(2)]

    def step(batch: dict) -> None:
        loss = loss_fn(forward(batch), batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.gradient_clip or 1e9)
        optimizer.step()

    start = time.perf_counter()
    for i in range(2):
        step(batches[i % 2])
    warmup = time.perf_counter() - start
    times, cpu = [], []
    for i in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(batches[i % 2])
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    rate, cpu_rate = options.batch_size / statistics.median(times), options.batch_size / statistics.median(cpu)
    return rate, cpu_rate, parameter_counts(model), warmup


def _mean_and_error(values: list[float]) -> str:
    """"m.mm ± e.ee×" (standard error of the mean of the repeats; "± ?" with one repeat)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}x ± ?"
    return f"{mean:.2f} ± {statistics.stdev(values) / len(values) ** 0.5:.2f}x"


SKIP_WITHOUT_UPSTREAM = (
    "skipped: the baseline is upstream SPANet 2.1.1 in its own venv; pass --upstream-python "
    "(or set SPANET_UPSTREAM_PYTHON) — see docs/network.md"
)


def upstream_options(options, **values) -> dict:
    """`options` as upstream 2.1.1 reads them, with `values` on top: SPANet2-only keys dropped, CPU, AdamW and at
    least one loader process (upstream's DataLoader refuses 0 workers with this torch: prefetch_factor)."""
    out = {k: v for k, v in options.to_dict().items() if k not in SPANET2_KEYS}
    out.update(num_gpu=0, optimizer="AdamW", num_dataloader_workers=max(1, options.num_dataloader_workers))
    out.update(values)
    return out


def measure_upstream(python: str, options, data: Path, threads: int, steps: int, tmp: Path) -> dict:
    values = upstream_options(options, training_file=str(data), validation_file="", testing_file="",
                              event_info_file=str(ROOT / options.event_info_file))  # fmt: skip
    path = tmp / f"upstream_options_{options.hidden_dim}.json"
    path.write_text(json.dumps(values))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(
        [python, str(ROOT / "benchmarks" / "_upstream_step.py"), str(path), str(threads), str(steps)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"upstream step failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream-python", default=os.environ.get("SPANET_UPSTREAM_PYTHON"),
                        help="Python of a venv with spanet==2.1.1 (default $SPANET_UPSTREAM_PYTHON)")  # fmt: skip
    parser.add_argument("--options", default=str(ROOT / "configs/options/spanet2_mixing_kappa.json"))
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the options' (2048 tuned)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3,
                        help="measure SPANet2 and upstream in turn this many times; the ratio is the mean of the "
                             "pairs' ratios ± its standard error (the machine's speed drifts between runs)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=None, help="SPANet HDF5 (default: synthetic events)")
    parser.add_argument("--compile", action="store_true",
                        help="also time SPANet2 under torch.compile (options 'compile: true'; compiling takes minutes)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.upstream_python:  # `make bench` runs every benchmark: say why this one has nothing to compare
        print(SKIP_WITHOUT_UPSTREAM)
        return 0
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load:.2f}, {args.steps} timed steps")
    print("Rates per wall-clock second and per CPU-second of the measuring process (the CPU rate is the one to")
    print("trust on a shared machine: other load changes wall time, not the CPU time a step needs). Rates are")
    print(f"medians of {args.repeats} turns (SPANet2, then upstream); ratios the mean ± standard error of the turns'.")
    print("| options | batch | params SPANet2 | params upstream | SPANet2 ev/s | upstream ev/s | ratio | "
          "SPANet2 ev/CPU-s | upstream ev/CPU-s | ratio (CPU) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for hidden in args.hidden_dims:
            options = load_options(args.options).replace(hidden_dim=hidden)
            if args.batch_size:
                options = options.replace(batch_size=args.batch_size)
            data = args.data
            if data is None:
                data = tmp / "events.h5"
                if not data.exists():
                    write_synthetic(data, 2 * options.batch_size + 64)
            timed = read_event_arrays(data, load_topology(ROOT / options.event_info_file), stop=2 * options.batch_size)
            print(f"  data: {data.name}, timed events have {timed.n_jets.mean():.2f} real jets on average "
                  f"({sum(m.shape[1] for m in timed.sequential_mask.values())} slots); SPANet2 trims the padding, upstream pads")  # fmt: skip
            pairs = []  # (ours, ours per CPU-s, upstream, upstream per CPU-s), measured in turn
            for _ in range(args.repeats):
                ours, ours_cpu, counts, _ = measure_ours(options, data, args.threads, args.steps)
                upstream = measure_upstream(args.upstream_python, options, data, args.threads, args.steps, tmp)
                pairs.append((ours, ours_cpu, upstream["events_per_s"], upstream["events_per_cpu_s"]))
            theirs = upstream["parameters"]
            ours, ours_cpu, rate, rate_cpu = (statistics.median(column) for column in zip(*pairs, strict=True))
            ratio, ratio_cpu = (
                _mean_and_error([pair[i] / pair[i + 2] for pair in pairs]) for i in (0, 1)
            )  # fmt: skip
            print(
                f"| hidden_dim {hidden} | {options.batch_size} | {counts['total']:,} | {theirs['total']:,} | "
                f"{ours:,.0f} | {rate:,.0f} | {ratio} | {ours_cpu:,.0f} | {rate_cpu:,.0f} | {ratio_cpu} |"
            )
            if args.compile:
                fast, fast_cpu, _, compile_s = measure_ours(options, data, args.threads, args.steps, compiled=True)
                print(f"| hidden_dim {hidden}, SPANet2 compiled ({compile_s:.0f} s to compile) | "
                      f"{options.batch_size} | | | {fast:,.0f} | {rate:,.0f} | {fast / rate:.2f}x (one turn) | "
                      f"{fast_cpu:,.0f} | {rate_cpu:,.0f} | {fast_cpu / rate_cpu:.2f}x |")  # fmt: skip
            for module, name in UPSTREAM_NAMES.items():
                diff = counts[module] / max(theirs.get(name, 0), 1) - 1
                print(f"|   {module} ({name}) | | {counts[module]:,} | {theirs.get(name, 0):,} | | | {diff:+.1%} | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
