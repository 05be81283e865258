#!/usr/bin/env bash
# GPU path of `spanet2 tune` (run on a machine with one CUDA GPU):
#   1. four trials with 0.25 GPU each run CONCURRENTLY on the one GPU (checked from the search ledger:
#      overlapping [start, complete] intervals, and every trial saw CUDA_VISIBLE_DEVICES);
#   2. one trial with the DeepSpeed engine (ZeRO-2, bf16) on the GPU;
#   3. the gpu-marked pytest tests of the hpc area.
# Usage: bash benchmarks/gpu_tune_check.sh [PYTHON]     (default .venv/bin/python); ~3-5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
WORK=benchmarks/_work/gpu_tune
rm -rf "$WORK"
mkdir -p "$WORK"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

"$PY" - "$WORK" <<'PYEOF'
import importlib.util, json, sys
from pathlib import Path
import yaml
work = Path(sys.argv[1]).resolve()
spec = importlib.util.spec_from_file_location("trainer_data", "tests/training/trainer_data.py")
data = importlib.util.module_from_spec(spec); spec.loader.exec_module(data)
event = data.write_topology(work / "event.yaml")
train = data.write_event_file(work / "train.h5", 4000, seed=1)
options = data.write_options(work / "options.json", event_file=event, training_file=train, epochs=2,
                             batch_size=256, num_gpu=1)
space = {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "dropout": {"uniform": [0.0, 0.3]}}
common = {"model": "spanet2", "options": str(options), "objective": "val_loss", "epochs": 2,
          "scheduler": "fifo", "seed": 0, "space": space}
(work / "quarter.yaml").write_text(yaml.safe_dump(dict(common, num_samples=4, max_concurrent_trials=4,
                                                       resources_per_trial={"cpu": 1, "gpu": 0.25})))
(work / "deepspeed.yaml").write_text(yaml.safe_dump(dict(common, num_samples=1, max_concurrent_trials=1,
                                                         engine="deepspeed",
                                                         overrides={"zero_stage": 2, "precision": "bf16"},
                                                         resources_per_trial={"cpu": 2, "gpu": 1})))
PYEOF

echo "== 4 trials x 0.25 GPU"
"$PY" -m spanet2 tune "$WORK/quarter.yaml" --output "$WORK/quarter" --num-cpus 8
"$PY" - "$WORK/quarter" <<'PYEOF'
import sys
from spanet2.hpc.tune import read_ledger
ledger = read_ledger(sys.argv[1])
starts = {r["trial_id"]: r for r in ledger if r["event"] == "start"}
ends = {r["trial_id"]: r["time"] for r in ledger if r["event"] == "complete"}
events = sorted([(r["time"], 1) for r in starts.values()] + [(t, -1) for t in ends.values()])
running = peak = 0
for _, step in events:
    running += step
    peak = max(peak, running)
devices = {tid: r.get("cuda_visible_devices") for tid, r in starts.items()}
print(f"finished {len(ends)}/4, peak concurrent trials {peak}, CUDA_VISIBLE_DEVICES per trial {devices}")
assert len(ends) == 4 and peak == 4 and all(devices.values()), "expected 4 concurrent GPU trials"
PYEOF

echo "== one DeepSpeed trial (ZeRO-2, bf16) on the GPU"
"$PY" -m spanet2 tune "$WORK/deepspeed.yaml" --output "$WORK/deepspeed" --num-cpus 8
test -f "$WORK/deepspeed/best_options.json"

echo "== gpu-marked tests"
"$PY" -m pytest -q -m gpu tests/hpc
echo "gpu_tune_check: OK"
