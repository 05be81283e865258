#!/usr/bin/env bash
# Repeated trainings (n seeds in parallel) on a SLURM allocation, or on a local Ray without SLURM:
#
#   sbatch slurm/repeat.sh configs/options/spanet2_mixing_kappa.json -n 10 --log_dir runs/repeat
#   sbatch --nodes=2 --gpus-per-node=4 slurm/repeat.sh OPTIONS.json -n 10 --gpus-per-run 1
#   bash slurm/repeat.sh OPTIONS.json -n 3                        # no SLURM: local Ray
#
# Arguments after OPTIONS go to `spanet2 repeat`. #SBATCH defaults below can be overridden on the sbatch line.
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
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    # shellcheck source=slurm/ray-cluster.sh
    source "$ROOT/slurm/ray-cluster.sh"
    trap 'ray_cluster_stop' EXIT
    echo "repeat.sh: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST"
    ray_cluster_start
    ARGS+=(--address "$RAY_ADDRESS")
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
