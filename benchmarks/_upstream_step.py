"""Upstream SPANet's training step, timed — run ONLY with the Python of a separate upstream SPANet 2.1.1 venv.

Called by benchmarks/upstream_speed.py:  UPSTREAM_PYTHON _upstream_step.py OPTIONS.json THREADS STEPS
Prints one JSON line: {"events_per_s": …, "events_per_cpu_s": …, "parameters": {module: count}}. Uses upstream's public API only
(JetReconstructionModel, Options); the batches come from its own dataset (already on the CPU, as they would
be after its DataLoader), so its per-event DataLoader cost is left out: the comparison is step against step.
"""

import json
import statistics
import sys
import time

import torch


def main() -> None:
    options_path, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from spanet import JetReconstructionModel, Options

    options = Options.load(options_path)
    model = JetReconstructionModel(options)
    model.log = lambda *args, **kwargs: None  # no Lightning trainer attached
    model.train()
    optimizer = model.configure_optimizers()[0][0]
    batch_size = options.batch_size
    batches = [model.training_dataset[i * batch_size : (i + 1) * batch_size] for i in range(2)]

    def step(batch) -> None:
        loss = model.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.gradient_clip or 1e9)
        optimizer.step()

    for i in range(2):
        step(batches[i % 2])
    times, cpu = [], []
    for i in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(batches[i % 2])
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    counts = {
        name: sum(p.numel() for p in module.parameters() if p.requires_grad)
        for name, module in model.named_children()
    }
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(json.dumps({"events_per_s": batch_size / statistics.median(times),
                      "events_per_cpu_s": batch_size / statistics.median(cpu), "parameters": counts}))


if __name__ == "__main__":
    main()
