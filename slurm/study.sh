#!/usr/bin/env bash
# The whole study on a SLURM allocation: a Ray cluster over the job's nodes (head on the first) carries the
# searches and repeated trainings; the κλ scans use a Dask LocalCluster on the first node.
#
#   sbatch slurm/study.sh configs/study/full.yaml [OUTPUT_DIR] [more `spanet2 study` flags]
#   sbatch --nodes=2 --gpus-per-node=4 --time=24:00:00 slurm/study.sh configs/study/full.yaml runs/full
#   bash slurm/study.sh configs/study/demo.yaml runs/demo                  # no SLURM: local Ray
#
# The study is resumable stage by stage: a requeued or resubmitted job skips finished stages.
# Activate the environment that has spanet2 before sbatch (it is inherited), or set SPANET2_VENV.
#
#SBATCH --job-name=spanet2-study
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --requeue
#SBATCH --open-mode=append

set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 STUDY.yaml [OUTPUT_DIR] [spanet2 study flags]" >&2
    exit 2
fi
CONFIG=$1
shift
ARGS=(study "$CONFIG")
if [[ $# -ge 1 && $1 != -* ]]; then
    ARGS+=(--output "$1")
    shift
fi
ROOT=${SPANET2_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}
if [[ -n "${SPANET2_VENV:-}" ]]; then
    # shellcheck disable=SC1091
    source "$SPANET2_VENV/bin/activate"
fi
command -v spanet2 >/dev/null || { echo "spanet2 is not on PATH (activate its environment or set SPANET2_VENV)" >&2; exit 2; }

if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    # shellcheck source=slurm/ray-cluster.sh
    source "$ROOT/slurm/ray-cluster.sh"
    trap 'ray_cluster_stop' EXIT
    echo "study.sh: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST"
    ray_cluster_start
    ARGS+=(--ray-address "$RAY_ADDRESS" --workers "${SLURM_CPUS_PER_TASK:-2}")
fi
cd "$ROOT"
spanet2 "${ARGS[@]}" "$@"
