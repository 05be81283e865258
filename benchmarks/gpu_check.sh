#!/usr/bin/env bash
# GPU check of the SPANet2 trainer (one CUDA GPU; ~3-4 min on an H200):
#   1. training throughput (events/s, epoch 2 of 2) for configs/options/spanet2_mixing_kappa.json in fp32 and bf16;
#   2. inference throughput of `predict --gpu` (forward + greedy decoding + HDF5 write);
#   3. one DeepSpeed run (ZeRO-2, bf16, torch AdamW) on the GPU;
#   4. the gpu-marked tests of tests/training.
# Data: synthetic events in the contract layout (tests/training/trainer_data.py) by default, so the numbers measure the
# trainer, not the generator; GPU_CHECK_GENERATE=1 uses `spanet2 generate sets` instead (falls back to synthetic).
# Usage: bash benchmarks/gpu_check.sh [PYTHON]   (default: .venv/bin/python if present, else python3)
# Env: N_TRAIN (default 400000 events), N_TEST (100000), RESULTS (folder for the summary; default the work dir).
# DeepSpeed missing on the machine (e.g. a bare CUDA image): put its wheels in .whl/ (README of the device tool) or the
# DeepSpeed step is reported as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then PY=$1; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
WORK=benchmarks/_work/gpu_check
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS=${RESULTS:-$WORK}
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/gpu_check_summary.txt"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/spanet2/torch_extensions}
N_TRAIN=${N_TRAIN:-400000}
N_TEST=${N_TEST:-100000}
say() { echo "$*" | tee -a "$SUMMARY"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
if ! "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
     2>/dev/null | tee -a "$SUMMARY"; then
  # GPU_CHECK_ALLOW_CPU=1 runs the same steps on the CPU (to check this script itself on a machine without a GPU)
  [ "${GPU_CHECK_ALLOW_CPU:-0}" = "1" ] || { say "no CUDA torch: stopping"; exit 1; }
  say "no CUDA: running on the CPU (GPU_CHECK_ALLOW_CPU=1)"
fi
if ! "$PY" -c "import deepspeed" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

echo "== data ($N_TRAIN training, $N_TEST test events)"
DATA_OK=0
if [ "${GPU_CHECK_GENERATE:-0}" = "1" ]; then
  if timeout 600 "$PY" -m spanet2 generate sets --signal-per-kappa $((N_TRAIN / 20)) --background $((N_TRAIN / 2)) \
       --output-dir "$WORK/data" --workers 16 --seed 1 --no-progress; then
    cp "$WORK/data/classification_train.h5" "$WORK/train.h5" && cp "$WORK/data/classification_test.h5" "$WORK/test.h5" \
      && DATA_OK=1 && say "data: spanet2 generate sets"
  fi
fi
if [ "$DATA_OK" = "0" ]; then
  "$PY" - "$WORK" "$N_TRAIN" "$N_TEST" <<'PYEOF' || exit 1
import importlib.util, sys
from pathlib import Path
work, n_train, n_test = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
spec = importlib.util.spec_from_file_location("trainer_data", "tests/training/trainer_data.py")
data = importlib.util.module_from_spec(spec); spec.loader.exec_module(data)
data.write_event_file(work / "train.h5", n_train, seed=1)
data.write_event_file(work / "test.h5", n_test, seed=2)
PYEOF
  say "data: synthetic (tests/training/trainer_data.py)"
fi

train() {  # name, extra flags...
  local name=$1; shift
  "$PY" -m spanet2.train -of configs/options/spanet2_mixing_kappa.json -ef configs/events/hh4b.yaml \
    -tf "$WORK/train.h5" --log_dir "$WORK/logs" --name "$name" --gpus 1 --quiet "$@" 2>&1 | tail -4
}
rate() {  # name -> "events/s of the last epoch, epoch seconds, val metrics"
  "$PY" - "$WORK/logs/$1/version_0/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
r = rows[-1]
print(f"{r['train_events_per_second']:.0f} train events/s (epoch {r['epoch']}: {r['epoch_seconds']:.2f} s, "
      f"val_loss {r['val_loss']:.4f}, pairing eff {r.get('val_pairing_efficiency')}, AUC {r.get('val_auc')})")
PYEOF
}

echo "== training throughput, mixing-kappa options (hidden 32, batch 2048)"
train fp32 -e 2 --precision 32 && say "fp32: $(rate fp32)"
train bf16 -e 2 --precision bf16 && say "bf16: $(rate bf16)"

echo "== inference: predict --gpu"
START=$(date +%s.%N)
"$PY" -m spanet2.predict "$WORK/logs/bf16/version_0" "$WORK/pred.h5" -tf "$WORK/test.h5" --gpu -b 8192
END=$(date +%s.%N)
say "predict --gpu: $("$PY" -c "print(f'{$N_TEST / ($END - $START):.0f} events/s end to end (incl. start-up, HDF5 read/write)')")"
"$PY" -m spanet2.test "$WORK/logs/bf16/version_0" -tf "$WORK/test.h5" --gpu | tee -a "$SUMMARY"

echo "== DeepSpeed (ZeRO-2, bf16) on the GPU"
if "$PY" -c "import deepspeed" 2>/dev/null; then
  train deepspeed -e 1 --engine deepspeed --zero_stage 2 --precision bf16 && say "deepspeed bf16 ZeRO-2: $(rate deepspeed)"
else
  say "deepspeed: SKIPPED (not importable on this machine)"
fi

echo "== gpu-marked tests"
"$PY" -m pytest -q -m gpu tests/training -p no:cacheprovider 2>&1 | tail -5 | tee -a "$SUMMARY"
echo "== summary"
cat "$SUMMARY"
