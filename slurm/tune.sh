#!/usr/bin/env bash
# A SPANet2 / DNN hyper-parameter search on a SLURM allocation (Ray head on the first node, workers on the
# rest), or on a local Ray when run without SLURM:
#
#   sbatch slurm/tune.sh configs/tune/spanet2.yaml [OUTPUT_DIR] [more `spanet2 tune` flags]
#   sbatch --nodes=2 --gpus-per-node=4 --time=12:00:00 slurm/tune.sh configs/tune/spanet2.yaml runs/tune
#   sbatch --nodes=2 --cpus-per-task=8 slurm/tune.sh configs/tune/dnn.yaml runs/tune_dnn
#   bash slurm/tune.sh configs/tune/dnn.yaml runs/tune_dnn            # no SLURM: local Ray
#
# Every #SBATCH default below can be overridden on the sbatch command line. SIGTERM (scancel, preemption,
# or --signal before the time limit) makes the search save its state; the job is requeued and the requeued
# run resumes the same OUTPUT_DIR without re-running finished trials. A node lost mid-search: its trials
# restart on the remaining nodes (`max_failures` of the search config). trials.csv names each trial's node.
# Activate the environment that has spanet2 before sbatch (it is inherited), or set SPANET2_VENV=/path/to/.venv.
#
#SBATCH --job-name=spanet2-tune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --open-mode=append

set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 CONFIG.yaml [OUTPUT_DIR] [spanet2 tune flags]" >&2
    exit 2
fi
CONFIG=$1
shift
OUTPUT="runs/tune_${SLURM_JOB_ID:-local}"
if [[ $# -ge 1 && $1 != -* ]]; then
    OUTPUT=$1
    shift
fi

# sbatch copies this script to a spool dir: find the repository from the submit dir
ROOT=${SPANET2_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}
if [[ -n "${SPANET2_VENV:-}" ]]; then
    # shellcheck disable=SC1091
    source "$SPANET2_VENV/bin/activate"
fi
command -v spanet2 >/dev/null || { echo "spanet2 is not on PATH (activate its environment or set SPANET2_VENV)" >&2; exit 2; }

DRIVER_PID=""
INTERRUPTED=0
on_term() {
    # Preemption / scancel / time limit: ask the search to save its state and stop (Tune then exits).
    INTERRUPTED=1
    echo "tune.sh: SIGTERM received, checkpointing the search"
    if [[ -n "$DRIVER_PID" ]]; then kill -TERM "$DRIVER_PID" 2>/dev/null || true; fi
}
trap on_term TERM

ARGS=(tune "$CONFIG" --output "$OUTPUT" --auto-resume "$@")
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    # shellcheck source=slurm/ray-cluster.sh
    source "$ROOT/slurm/ray-cluster.sh"
    trap 'ray_cluster_stop' EXIT
    echo "tune.sh: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST, output $OUTPUT"
    ray_cluster_start  # exports RAY_ADDRESS (and RAY_AUTH_MODE): spanet2 attaches to this cluster
else
    echo "tune.sh: no SLURM job: running on a local Ray, output $OUTPUT"
fi

set +e
spanet2 "${ARGS[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
RC=$?
# `wait` returns early when the trap fires: wait again for the driver to finish checkpointing.
while kill -0 "$DRIVER_PID" 2>/dev/null; do
    wait "$DRIVER_PID"
    RC=$?
done
set -e

if [[ $INTERRUPTED == 1 && -n "${SLURM_JOB_ID:-}" ]]; then
    # Time limit near (--signal): requeue ourselves. scancel (CANCELLED) or preemption (SLURM requeues
    # by itself): leave it. Either way the next run of this job resumes OUTPUT.
    STATE=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -1)
    if [[ $STATE == RUNNING ]]; then
        echo "tune.sh: search interrupted (rc $RC); requeueing job $SLURM_JOB_ID to resume $OUTPUT"
        scontrol requeue "$SLURM_JOB_ID" || echo "tune.sh: requeue refused; resubmit: sbatch $0 $CONFIG $OUTPUT"
    else
        echo "tune.sh: search interrupted (rc $RC, job $STATE); resume: sbatch slurm/tune.sh $CONFIG $OUTPUT"
    fi
fi
echo "tune.sh: done (rc $RC); results in $OUTPUT (ranking.md, trials.csv, best_options.json)"
exit "$RC"
