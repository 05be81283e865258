#!/usr/bin/env bash
# GPU readiness check of SPANet2 on ONE CUDA GPU, bounded to GPU_CHECK_BUDGET_S (default 480 s = 8 min):
#   1. training throughput of configs/options/spanet2_mixing_kappa.json, fp32 and bf16 (events/s of epoch 2,
#      peak GPU memory), ratio bf16 / fp32;
#   2. DeepSpeed ZeRO-2 (bf16, torch AdamW) on the GPU: events/s, memory, ratio vs the plain bf16 run;
#   3. a 4-trial search with 0.25 GPU per trial (`spanet2 tune`): the 4 trials must overlap in time (from the
#      search ledger) and each sees the GPU; summed events/s of the 4 vs one fp32 run alone (sharing ratio);
#   4. inference throughput of `predict --gpu`; 5. the gpu-marked tests of tests/training and tests/hpc.
# Every step gets what is left of the budget (`timeout`); a step without time left is reported SKIPPED.
# Data: synthetic events in the contract layout (tests/training/trainer_data.py), so the numbers measure the
# trainer, not the generator.
# Usage: bash benchmarks/gpu_check.sh [PYTHON]   (default: .venv/bin/python if present, else python3)
# Env: N_TRAIN (default 200000 events), N_TEST (50000), N_TUNE (20000 events per trial),
#      RESULTS (folder for gpu_check_summary.txt; default the work dir), GPU_CHECK_BUDGET_S (480).
# CPU dry run of the script itself (no GPU needed, ~3-5 min on 2 cores):
#   GPU_CHECK_ALLOW_CPU=1 N_TRAIN=2000 N_TEST=500 N_TUNE=600 bash benchmarks/gpu_check.sh
# DeepSpeed missing on the machine (e.g. a bare CUDA image): put its wheels in .whl/ or the step is SKIPPED.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then PY=$1; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
WORK=benchmarks/_work/gpu_check
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS=${RESULTS:-$WORK}
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/gpu_check_summary.txt"
: >"$SUMMARY"
export PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/spanet2/torch_extensions}
N_TRAIN=${N_TRAIN:-200000}
N_TEST=${N_TEST:-50000}
N_TUNE=${N_TUNE:-20000}
DEADLINE=$(($(date +%s) + ${GPU_CHECK_BUDGET_S:-480}))
FAILED=0
say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((DEADLINE - $(date +%s))); }
# step NAME MAX_SECONDS CMD...: run CMD with min(MAX_SECONDS, time left) seconds; SKIPPED when < 20 s are left
step() {
    local name=$1 max=$2 budget
    shift 2
    budget=$(left)
    if ((budget > max)); then budget=$max; fi
    if ((budget < 20)); then
        say "$name: SKIPPED (budget of ${GPU_CHECK_BUDGET_S:-480} s spent)"
        return 1
    fi
    echo "== $name (up to $budget s)"
    # through bash -c: `timeout` runs programs, and CMD may be one of this script's functions (exported)
    if ! timeout "$budget" bash -c '"$@"' _ "$@"; then
        say "$name: FAILED or timed out (limit $budget s)"
        FAILED=1
        return 1
    fi
}

GPU=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
if INFO=$("$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>/dev/null); then
    say "$INFO"
else
    [ "${GPU_CHECK_ALLOW_CPU:-0}" = "1" ] || { say "no CUDA torch: stopping (GPU_CHECK_ALLOW_CPU=1 for a CPU dry run)"; exit 1; }
    say "no CUDA: CPU dry run of the script (GPU_CHECK_ALLOW_CPU=1); numbers are not GPU numbers"
    GPU=0
fi
if ! "$PY" -c "import deepspeed" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# Peak GPU memory of a step: nvidia-smi samples every 200 ms in the background (covers Ray trial processes).
MEM_PID=""
mem_start() {
    : >"$WORK/mem.csv"
    if ((GPU)); then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$WORK/mem.csv" 2>/dev/null &
        MEM_PID=$!
    fi
}
mem_stop() {  # prints "peak N MiB"
    if [ -n "$MEM_PID" ]; then kill "$MEM_PID" 2>/dev/null; wait "$MEM_PID" 2>/dev/null; MEM_PID=""; fi
    awk 'BEGIN { m = -1 } $1 + 0 > m { m = $1 + 0 } END { print (m < 0 ? "peak GPU memory n/a" : "peak GPU memory " m " MiB") }' "$WORK/mem.csv"
}

"$PY" - "$WORK" "$N_TRAIN" "$N_TEST" "$N_TUNE" "$GPU" <<'PYEOF' || exit 1
import importlib.util, sys
from pathlib import Path
import yaml
work, n_train, n_test, n_tune, gpu = Path(sys.argv[1]).resolve(), *map(int, sys.argv[2:])
spec = importlib.util.spec_from_file_location("trainer_data", "tests/training/trainer_data.py")
data = importlib.util.module_from_spec(spec); spec.loader.exec_module(data)
data.write_event_file(work / "train.h5", n_train, seed=1)
data.write_event_file(work / "test.h5", n_test, seed=2)
data.write_event_file(work / "tune.h5", n_tune, seed=3)
# 4 trials x 0.25 GPU of the same network as the throughput runs (fp32), 2 epochs each
resources = {"cpu": 1, "gpu": 0.25} if gpu else {"cpu": 0.5}
config = {"model": "spanet2", "options": str(Path("configs/options/spanet2_mixing_kappa.json").resolve()),
          "event_file": str(Path("configs/events/hh4b.yaml").resolve()), "training_file": str(work / "tune.h5"),
          "objective": "val_loss", "num_samples": 4, "epochs": 2,
          "max_concurrent_trials": 4, "resources_per_trial": resources, "scheduler": "fifo", "seed": 0,
          "space": {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "dropout": {"uniform": [0.0, 0.3]}}}
(work / "quarter.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
PYEOF
say "data: synthetic (tests/training/trainer_data.py): $N_TRAIN training, $N_TEST test, $N_TUNE per tune trial"

train() {  # name, extra flags...
    local name=$1
    shift
    "$PY" -m spanet2.train -of configs/options/spanet2_mixing_kappa.json -ef configs/events/hh4b.yaml \
        -tf "$WORK/train.h5" --log_dir "$WORK/logs" --name "$name" --gpus "$GPU" --no-progress "$@" 2>&1 | tail -3
    test -s "$WORK/logs/$name/version_0/metrics.jsonl"
}
export PY WORK GPU
export -f train
rate() {  # run name -> events/s of its last epoch
    "$PY" -c "import json,sys; print(round(json.loads(open(sys.argv[1]).read().splitlines()[-1])['train_events_per_second']))" \
        "$WORK/logs/$1/version_0/metrics.jsonl" 2>/dev/null || echo 0
}
ratio() { "$PY" -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{a / b:.2f}' if b else 'n/a')" "$1" "$2"; }

echo "== 1. training throughput, mixing-kappa options"
mem_start; step "train fp32" 150 train fp32 -e 2 --precision 32; MEM=$(mem_stop)
FP32=$(rate fp32); say "fp32: $FP32 train events/s (epoch 2), $MEM"
mem_start; step "train bf16" 150 train bf16 -e 2 --precision bf16; MEM=$(mem_stop)
BF16=$(rate bf16); say "bf16: $BF16 train events/s (epoch 2), $MEM; ratio bf16/fp32 $(ratio "$BF16" "$FP32")"

echo "== 2. DeepSpeed ZeRO-2 bf16 on one GPU"
if "$PY" -c "import deepspeed" 2>/dev/null; then
    # bf16 weights under CPU autocast break layer_norm (mixed dtypes): the CPU dry run checks fp32 instead
    DS_PRECISION=bf16
    if ((!GPU)); then DS_PRECISION=32; fi
    mem_start
    step "deepspeed" 180 train deepspeed -e 2 --engine deepspeed --zero_stage 2 --precision "$DS_PRECISION"
    MEM=$(mem_stop)
    DS=$(rate deepspeed)
    say "deepspeed ZeRO-2 $DS_PRECISION: $DS train events/s (epoch 2), $MEM; ratio vs plain bf16 $(ratio "$DS" "$BF16")"
else
    say "deepspeed: SKIPPED (not importable on this machine)"
fi

echo "== 3. four trials at 0.25 GPU each"
mem_start
step "tune 4 x 0.25 GPU" 180 "$PY" -m spanet2 tune "$WORK/quarter.yaml" --output "$WORK/quarter" --num-cpus 8
MEM=$(mem_stop)
"$PY" - "$WORK/quarter" "$FP32" "$GPU" "$MEM" <<'PYEOF' | tee -a "$SUMMARY" || FAILED=1
import json, sys
from pathlib import Path
from spanet2.hpc.tune import read_ledger
out, fp32, gpu, mem = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
ledger = read_ledger(out)
starts = {r["trial_id"]: r for r in ledger if r["event"] == "start"}
ends = {r["trial_id"]: r["time"] for r in ledger if r["event"] == "complete"}
events = sorted([(r["time"], 1) for r in starts.values()] + [(t, -1) for t in ends.values()])
running = peak = 0
for _, change in events:
    running += change
    peak = max(peak, running)
rates = []
for tid in ends:
    lines = (out / "trials" / tid / "version_0" / "metrics.jsonl").read_text().splitlines()
    rates.append(json.loads(lines[-1])["train_events_per_second"])
total = sum(rates)
share = f"{total / fp32:.2f}" if fp32 else "n/a"
print(f"tune 4 x 0.25 GPU: {len(ends)}/4 finished, peak {peak} concurrent, {total:.0f} train events/s summed "
      f"over the trials, ratio vs one fp32 run alone {share}, {mem}")
ok = len(ends) == 4 and peak == 4 and (not gpu or all(r.get("cuda_visible_devices") for r in starts.values()))
sys.exit(0 if ok else 1)
PYEOF

echo "== 4. inference: predict --gpu"
START=$(date +%s.%N)
if step "predict" 90 "$PY" -m spanet2.predict "$WORK/logs/bf16/version_0" "$WORK/pred.h5" -tf "$WORK/test.h5" --gpu -bs 8192; then
    END=$(date +%s.%N)
    say "predict --gpu: $("$PY" -c "print(f'{$N_TEST / ($END - $START):.0f} events/s end to end (incl. start-up, HDF5 read/write)')")"
fi

echo "== 5. gpu-marked tests"
if ((GPU)); then
    step "gpu tests" 150 "$PY" -m pytest -q -m gpu tests/training tests/hpc -p no:cacheprovider >"$WORK/gpu_tests.log" 2>&1
    tail -5 "$WORK/gpu_tests.log" | tee -a "$SUMMARY"
else
    say "gpu tests: SKIPPED (no GPU)"
fi
say "total $((${GPU_CHECK_BUDGET_S:-480} - $(left))) s of the ${GPU_CHECK_BUDGET_S:-480} s budget; $([ $FAILED = 0 ] && echo OK || echo 'SOME STEPS FAILED')"
echo "== summary ($SUMMARY)"
cat "$SUMMARY"
exit "$FAILED"
