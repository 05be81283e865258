# shellcheck shell=bash
# Sourced by slurm/tune.sh and slurm/repeat.sh: a Ray cluster inside a SLURM allocation.
#
#   ray_cluster_start   head on the first node, one worker per other node, each an `srun --overlap` step
#                       running `ray start --block`; exports RAY_ADDRESS; prints the dashboard SSH tunnel.
#   ray_cluster_stop    kills exactly those steps (never `ray stop`, which would kill every Ray of the user).
#
# Ports derive from SLURM_JOB_ID (RAY_PORT_BASE overrides), so two jobs on one node do not collide.
# Token auth (RAY_AUTH_MODE=token) is on for every node and client; the token is ~/.ray/auth_token
# (a shared home makes it visible on all nodes). The dashboard binds to 127.0.0.1 only.

RAY_STEP_PIDS=()

ray_cluster_ports() {
    local job=${SLURM_JOB_ID:-$$}
    RAY_PORT_BASE=${RAY_PORT_BASE:-$((10000 + (job % 500) * 100))}
    RAY_GCS_PORT=$RAY_PORT_BASE
    RAY_DASHBOARD_PORT=$((RAY_PORT_BASE + 1))
    RAY_PORT_ARGS=(
        --ray-client-server-port=$((RAY_PORT_BASE + 2))
        --node-manager-port=$((RAY_PORT_BASE + 3))
        --object-manager-port=$((RAY_PORT_BASE + 4))
        --dashboard-agent-grpc-port=$((RAY_PORT_BASE + 5))
        --dashboard-agent-listen-port=$((RAY_PORT_BASE + 6))
        --metrics-export-port=$((RAY_PORT_BASE + 7))
        --runtime-env-agent-port=$((RAY_PORT_BASE + 8))
        --min-worker-port=$((RAY_PORT_BASE + 20))
        --max-worker-port=$((RAY_PORT_BASE + 99))
    )
}

ray_cluster_start() {
    export RAY_AUTH_MODE=token
    ray_cluster_ports
    local nodes head_node head_ip cpus gpus
    mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    head_node=${nodes[0]}
    head_ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$head_node" hostname -I | awk '{print $1}')
    cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
    gpus=${RAY_NUM_GPUS:-0}
    if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then gpus=$SLURM_GPUS_ON_NODE; fi
    # Unix-socket paths under the temp dir must stay < 108 characters: keep it short.
    RAY_TEMP_DIR=${RAY_TEMP_DIR:-/tmp/ray_${SLURM_JOB_ID:-$$}}
    export RAY_ADDRESS="$head_ip:$RAY_GCS_PORT"

    if ray status --address="$RAY_ADDRESS" >/dev/null 2>&1; then
        echo "ray: another Ray already listens on $RAY_ADDRESS; set RAY_PORT_BASE to a free range" >&2
        return 1
    fi
    echo "ray: head $head_node ($head_ip), GCS port $RAY_GCS_PORT, dashboard port $RAY_DASHBOARD_PORT"
    srun --overlap --nodes=1 --ntasks=1 -w "$head_node" \
        ray start --head --block --node-ip-address="$head_ip" --port="$RAY_GCS_PORT" \
        --num-cpus="$cpus" --num-gpus="$gpus" --include-dashboard=true --dashboard-host=127.0.0.1 \
        --dashboard-port="$RAY_DASHBOARD_PORT" "${RAY_PORT_ARGS[@]}" --temp-dir="$RAY_TEMP_DIR" \
        --disable-usage-stats &
    RAY_STEP_PIDS+=($!)
    if ! ray_cluster_wait 120; then
        echo "ray: the head did not come up" >&2
        return 1
    fi
    export RAY_DASHBOARD_URL="http://127.0.0.1:$RAY_DASHBOARD_PORT"
    ray_dashboard_wait 60 || echo "ray: the dashboard does not answer yet at $RAY_DASHBOARD_URL" >&2
    local node
    for node in "${nodes[@]:1}"; do
        srun --overlap --nodes=1 --ntasks=1 -w "$node" \
            ray start --block --address="$RAY_ADDRESS" --num-cpus="$cpus" --num-gpus="$gpus" \
            "${RAY_PORT_ARGS[@]}" --temp-dir="$RAY_TEMP_DIR" --disable-usage-stats &
        RAY_STEP_PIDS+=($!)
    done
    echo "ray: cluster up at RAY_ADDRESS=$RAY_ADDRESS with ${#nodes[@]} node(s)"
    echo "ray: dashboard (bound to 127.0.0.1 on $head_node). From your laptop:"
    echo "ray:   ssh -N -L 8265:127.0.0.1:$RAY_DASHBOARD_PORT -J <you>@<login-node> <you>@$head_node"
    echo "ray:   then open http://127.0.0.1:8265 (REST: curl -H \"Authorization: Bearer \$(cat ~/.ray/auth_token)\" http://127.0.0.1:8265/api/jobs/)"
    echo "ray: dashboard-url http://127.0.0.1:$RAY_DASHBOARD_PORT"
}

ray_cluster_wait() {
    local timeout=${1:-120} waited=0
    until ray status --address="$RAY_ADDRESS" >/dev/null 2>&1; do
        sleep 2
        waited=$((waited + 2))
        if ((waited >= timeout)); then return 1; fi
        # the head step died (port taken, bad flag): stop waiting
        if ! kill -0 "${RAY_STEP_PIDS[0]}" 2>/dev/null; then return 1; fi
    done
}

ray_dashboard_wait() {
    # Any HTTP answer (401 without the token included) means the dashboard is serving.
    local timeout=${1:-60}
    python3 - "$RAY_DASHBOARD_URL" "$timeout" <<'PY'
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(url + "/api/gcs_healthz", timeout=5)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(1)
PY
}

ray_cluster_stop() {
    local pid
    for pid in "${RAY_STEP_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${RAY_STEP_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    RAY_STEP_PIDS=()
    echo "ray: cluster steps stopped"
}
