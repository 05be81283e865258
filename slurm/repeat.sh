#!/usr/bin/env bash
# Repeated trainings (n seeds) on a SLURM allocation, two ways, or on a local Ray without SLURM:
#
#   Ray mode: one job, a Ray cluster over its nodes, the seeds spread over them:
#     sbatch slurm/repeat.sh configs/options/spanet2_mixing_kappa.json -n 10 --log_dir runs/repeat
#     sbatch --nodes=2 --gpus-per-node=4 slurm/repeat.sh OPTIONS.json -n 10 --gpus-per-run 1
#   Array mode: one array task per seed (task I trains seed SEED+I, no Ray); the task that finishes the
#   last seed writes the summary (repeat.json):
#     sbatch --array=0-9 slurm/repeat.sh configs/options/spanet2_mixing_kappa.json -n 10 --log_dir runs/repeat
#   No SLURM:
#     bash slurm/repeat.sh OPTIONS.json -n 3                        # local Ray
#
# Arguments after OPTIONS go to `spanet2 repeat`. Every seed trains for the epochs of its own options file
# (pass -e only to override them). #SBATCH defaults below can be overridden on the sbatch line.
# A requeued or resubmitted job reuses the seeds that already have evaluation.json (no retraining).
#
#SBATCH --job-name=spanet2-repeat
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
    echo "usage: $0 OPTIONS.json [spanet2 repeat flags, e.g. -n 10 --log_dir runs/repeat]" >&2
    exit 2
fi
ROOT=${SPANET2_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}
if [[ -n "${SPANET2_VENV:-}" ]]; then
    # shellcheck disable=SC1091
    source "$SPANET2_VENV/bin/activate"
fi
command -v spanet2 >/dev/null || { echo "spanet2 is not on PATH (activate its environment or set SPANET2_VENV)" >&2; exit 2; }

DRIVER_PID=""
on_term() {
    echo "repeat.sh: SIGTERM received; finished seeds are kept (rerun to complete the rest)"
    if [[ -n "$DRIVER_PID" ]]; then kill -TERM "$DRIVER_PID" 2>/dev/null || true; fi
}
trap on_term TERM

ARGS=(repeat "$@")
if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    echo "repeat.sh: array task $SLURM_ARRAY_TASK_ID of job ${SLURM_ARRAY_JOB_ID:-?} on ${SLURMD_NODENAME:-$(hostname)}: one seed, no Ray"
    ARGS+=(--task-index "$SLURM_ARRAY_TASK_ID")
elif [[ -n "${SLURM_JOB_ID:-}" ]]; then
    # shellcheck source=slurm/ray-cluster.sh
    source "$ROOT/slurm/ray-cluster.sh"
    trap 'ray_cluster_stop' EXIT
    echo "repeat.sh: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST"
    ray_cluster_start  # exports RAY_ADDRESS (and RAY_AUTH_MODE): spanet2 attaches to this cluster
else
    echo "repeat.sh: no SLURM job: running on a local Ray"
fi

set +e
spanet2 "${ARGS[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
RC=$?
while kill -0 "$DRIVER_PID" 2>/dev/null; do
    wait "$DRIVER_PID"
    RC=$?
done
set -e
echo "repeat.sh: done (rc $RC)"
exit "$RC"
