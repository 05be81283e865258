"""SPANet2 training and inference (forward + greedy decode) throughput on synthetic events; prints events/s."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spanet2.events.topology import load_topology  # noqa: E402
from spanet2.training.dataset import EventArrays  # noqa: E402
from spanet2.training.decoding import greedy_decode  # noqa: E402
from spanet2.training.losses import compute_loss  # noqa: E402
from spanet2.training.model import SPANet2  # noqa: E402
from spanet2.training.normalization import identity_statistics  # noqa: E402
from spanet2.training.options import load_options  # noqa: E402

TRAIN_TARGET = 1500.0  # events/s, tuned options, 2 CPU cores (MODEL brief)
INFER_TARGET = 5000.0


def synthetic_events(n: int, jets: int, seed: int) -> EventArrays:
    """Random HH-like events: 4..jets real jets, half with all four b jets matched."""
    rng = np.random.default_rng(seed)
    n_jets = rng.integers(4, jets + 1, n)
    mask = np.arange(jets)[None, :] < n_jets[:, None]  # (N, J)
    features = (
        np.stack(
            [
                rng.uniform(5, 30, (n, jets)),
                rng.uniform(20, 300, (n, jets)),
                rng.uniform(-2.5, 2.5, (n, jets)),
                rng.uniform(-3.1, 3.1, (n, jets)),
                rng.random((n, jets)) < 0.7,
            ],
            axis=-1,
        ).astype(np.float32)
        * mask[..., None]
    )  # (N, J, 5)
    order = np.argsort(rng.random((n, jets)) + ~mask * 10, axis=1)[:, :4].reshape(n, 2, 2)  # (N, P, 2)
    signal = rng.random(n) < 0.5
    targets = np.where(signal[:, None, None], order, -1).astype(np.int64)
    return EventArrays(
        sequential={"Source": features},
        sequential_mask={"Source": mask},
        global_inputs={"Kappa": rng.choice([-5.0, 1.0, 5.0], (n, 1)).astype(np.float32)},
        targets=targets,
        target_mask=signal[:, None].repeat(2, 1),
        classifications={"EVENT/signal": signal.astype(np.int64)},
    )


def measure(
    hidden_dim: int, *, batch_size: int, steps: int, jets: int, compile_model: bool
) -> dict[str, tuple[float, float]]:
    """{"train"|"infer": (events per wall-clock second, events per CPU-second of this process)} (medians)."""
    options = load_options(ROOT / "configs/options/spanet2_mixing_kappa.json").replace(
        hidden_dim=hidden_dim, batch_size=batch_size
    )
    topology = load_topology(ROOT / options.event_info_file)
    events = synthetic_events(batch_size * 2, jets, seed=0)
    torch.manual_seed(0)
    model = SPANet2(options, topology, identity_statistics(topology))
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, weight_decay=options.l2_penalty
    )
    batches = [events.batch(np.arange(i * batch_size, (i + 1) * batch_size)) for i in range(2)]

    def train_step(batch: dict) -> None:
        loss, _ = compute_loss(forward(batch), batch, options, topology)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.gradient_clip)
        optimizer.step()

    def infer_step(batch: dict) -> None:
        with torch.inference_mode():
            greedy_decode(forward(batch).assignment_log_probs)

    rates = {}
    for name, step, mode in (("train", train_step, True), ("infer", infer_step, False)):
        model.train(mode)
        for i in range(2):  # warm-up (and compilation)
            step(batches[i % 2])
        wall, cpu = [], []
        for i in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            step(batches[i % 2])
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        rates[name] = (batch_size / statistics.median(wall), batch_size / statistics.median(cpu))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--jets", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure torch.compile'd models (compilation takes minutes on 2 cores)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.2f} (a shared machine inflates the times), batch {args.batch_size}, "
        f"{args.jets} jets"
    )
    print("Rates per wall-clock second, and per CPU-second of this process (less sensitive to other load;")
    print("times the thread count, it is roughly what an otherwise idle machine gives).")
    print(
        "| options | compiled | training ev/s (wall) | training ev/CPU-s | inference ev/s (wall) | inference ev/CPU-s |"
    )
    print("|---|---|---:|---:|---:|---:|")
    tuned = None
    for hidden in args.hidden_dims:
        for compiled in [False, True] if args.compile else [False]:
            rates = measure(
                hidden, batch_size=args.batch_size, steps=args.steps, jets=args.jets, compile_model=compiled
            )
            (train, train_cpu), (infer, infer_cpu) = rates["train"], rates["infer"]
            label = "tuned (hidden_dim 32)" if hidden == 32 else f"tuned, hidden_dim {hidden}"
            print(
                f"| {label} | {'yes' if compiled else 'no'} | {train:,.0f} | {train_cpu:,.0f} | {infer:,.0f} | "
                f"{infer_cpu:,.0f} |",
                flush=True,
            )
            if hidden == 32 and not compiled:
                tuned = (train, infer)
    if tuned is not None:
        print(
            f"tuned options vs targets (wall clock): training {tuned[0] / TRAIN_TARGET:.2f}x of "
            f"{TRAIN_TARGET:,.0f} events/s, inference {tuned[1] / INFER_TARGET:.2f}x of {INFER_TARGET:,.0f} events/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
