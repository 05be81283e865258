#!/usr/bin/env bash
# Batch κλ limit scans on a Dask cluster inside a SLURM allocation, or locally without SLURM:
#
#   sbatch slurm/scan.sh configs/scan/hh4b_13tev.yaml configs/scan/hh4b_14tev.yaml
#   sbatch --nodes=2 --cpus-per-task=16 slurm/scan.sh configs/scan/*.yaml
#   bash slurm/scan.sh configs/scan/hh4b_13tev.yaml        # no SLURM: each scan on a Dask LocalCluster
#
# In a job: a Dask scheduler (srun step on the first node) and one worker step per node with
# --cpus-per-task single-threaded worker processes; ports derive from the job id so two jobs on one node
# do not collide. All CONFIGs then run as one batch against that cluster (`spanet2 scan A B ...`, or
# `spanet2 lumi` with SPANET2_SCAN_COMMAND=lumi): one pass of the workers over the store for all of them.
# Finished points are appended to each output's points.jsonl, so a requeued or resubmitted job computes
# only what is missing. The scheduler listens on 127.0.0.1 on a single node (on the first node's address
# with several) and speaks TLS with job-private certificates (written by `python -m spanet2.stats.security`
# into a mode-0700 folder): a client or worker without them is refused. The dashboard always listens on
# 127.0.0.1 (use an SSH tunnel). With several nodes set SPANET2_SCAN_TMP to a folder on a shared file
# system (the workers on the other nodes read the credentials there; default: $TMPDIR or /tmp). Activate
# the environment that has spanet2 before sbatch (it is inherited), or set SPANET2_VENV.
#
#SBATCH --job-name=spanet2-scan
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out
#SBATCH --requeue
#SBATCH --open-mode=append

set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 CONFIG.yaml [CONFIG.yaml ...] [-- extra spanet2 scan flags]" >&2
    exit 2
fi
CONFIGS=()
while [[ $# -gt 0 && $1 != "--" ]]; do
    CONFIGS+=("$1")
    shift
done
[[ $# -gt 0 ]] && shift
EXTRA=("$@")
COMMAND=${SPANET2_SCAN_COMMAND:-scan}
if [[ $COMMAND != scan && $COMMAND != lumi ]]; then
    echo "SPANET2_SCAN_COMMAND must be scan or lumi, got '$COMMAND'" >&2
    exit 2
fi

if [[ -n "${SPANET2_VENV:-}" ]]; then
    # shellcheck disable=SC1091
    source "$SPANET2_VENV/bin/activate"
fi
command -v spanet2 >/dev/null || { echo "spanet2 is not on PATH (activate its environment or set SPANET2_VENV)" >&2; exit 2; }
for config in "${CONFIGS[@]}"; do
    [[ -f $config ]] || { echo "scan.sh: no such scan config: $config" >&2; exit 2; }
done

SCHEDULER_ARGS=()
STEP_PIDS=()
cleanup() {
    for pid in "${STEP_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STEP_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    command -v dask >/dev/null || { echo "scan.sh: the dask command is not on PATH" >&2; exit 2; }
    trap cleanup EXIT
    PORT=$((20000 + (SLURM_JOB_ID % 20000) * 2))
    DASHBOARD=$((PORT + 1))
    NODES=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
    HEAD=$(echo "$NODES" | head -n 1)
    NNODES=$(echo "$NODES" | wc -l)
    HOST=127.0.0.1
    if [[ $NNODES -gt 1 ]]; then
        [[ -n "${SPANET2_SCAN_TMP:-}" ]] || echo "scan.sh: warning: several nodes and no SPANET2_SCAN_TMP: the workers need the TLS credentials on a shared file system" >&2
        HOST=$(srun --overlap --nodes=1 --ntasks=1 --cpus-per-task=1 -w "$HEAD" hostname -i | awk '{print $1}')
    fi
    WORKDIR=${SPANET2_SCAN_TMP:-${TMPDIR:-/tmp}}/spanet2-dask-$SLURM_JOB_ID
    mkdir -p "$WORKDIR"
    chmod 700 "$WORKDIR"
    SCHEDULER_FILE=$WORKDIR/scheduler.json
    rm -f "$SCHEDULER_FILE"
    TLS_DIR=$WORKDIR/tls
    "$(dirname "$(command -v spanet2)")/python" -m spanet2.stats.security "$TLS_DIR" >/dev/null
    TLS=(--tls-ca-file "$TLS_DIR/ca.pem" --tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem")
    echo "scan.sh: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST: Dask scheduler tls://$HOST:$PORT (TLS), dashboard 127.0.0.1:$DASHBOARD"
    # srun steps inherit no --cpus-per-task from the job on SLURM >= 22.05: every step asks for its own
    srun --overlap --nodes=1 --ntasks=1 --cpus-per-task=1 -w "$HEAD" \
        dask scheduler --protocol tls --host "$HOST" --port "$PORT" "${TLS[@]}" \
        --dashboard-address "127.0.0.1:$DASHBOARD" \
        --scheduler-file "$SCHEDULER_FILE" >"$WORKDIR/scheduler.log" 2>&1 &
    STEP_PIDS+=($!)
    for _ in $(seq 1 120); do
        [[ -s $SCHEDULER_FILE ]] && break
        sleep 0.5
    done
    [[ -s $SCHEDULER_FILE ]] || { echo "scan.sh: the Dask scheduler did not start (see $WORKDIR/scheduler.log)" >&2; exit 1; }
    srun --overlap --nodes="$NNODES" --ntasks-per-node=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
        dask worker "tls://$HOST:$PORT" "${TLS[@]}" --nworkers "${SLURM_CPUS_PER_TASK:-1}" --nthreads 1 \
        --local-directory "$WORKDIR" --no-dashboard >"$WORKDIR/workers.log" 2>&1 &
    STEP_PIDS+=($!)
    SCHEDULER_ARGS=(--scheduler "$SCHEDULER_FILE" --tls-dir "$TLS_DIR")
    export SPANET2_DASK_MIN_WORKERS=$((NNODES * ${SLURM_CPUS_PER_TASK:-1}))  # the scan waits for all of them
else
    echo "scan.sh: no SLURM job: the scans run on a local Dask cluster (TLS on 127.0.0.1)"
fi

echo "scan.sh: spanet2 $COMMAND ${CONFIGS[*]}"
RC=0
spanet2 "$COMMAND" "${CONFIGS[@]}" "${SCHEDULER_ARGS[@]}" "${EXTRA[@]}" || RC=$?
echo "scan.sh: done (rc $RC)"
exit "$RC"
