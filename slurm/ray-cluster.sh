# shellcheck shell=bash
# Sourced by slurm/tune.sh, slurm/repeat.sh and slurm/study.sh: a Ray cluster inside a SLURM allocation.
#
#   ray_cluster_start   token auth (generates the token when there is none and copies it to every node),
#                       the head on the first node and one worker per other node, each an
#                       `srun --overlap --cpus-per-task=N [--gpus-per-task=G]` step running `ray start --block`;
#                       exports RAY_ADDRESS and RAY_AUTH_MODE=token; prints the dashboard SSH tunnel.
#   ray_cluster_stop    kills exactly those steps (never `ray stop`, which would kill every Ray of the user).
#
# Ports derive from SLURM_JOB_ID (RAY_PORT_BASE overrides): a block of 100 per job, so two jobs on one host do
# not collide. Nodes of one job that share a host (several slurmd on one machine, as in the tests) get
# their own node ports, worker-port range and temp dir inside that block.
# The token: RAY_AUTH_TOKEN if set (srun passes the environment to every step), else the file
# RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (created mode 600 when missing). The dashboard binds to
# 127.0.0.1 only: reach it through the SSH tunnel printed at start.

RAY_STEP_PIDS=()

ray_cluster_ports() {
    local job=${SLURM_JOB_ID:-$$}
    RAY_PORT_BASE=${RAY_PORT_BASE:-$((10000 + (job % 500) * 100))}
    RAY_GCS_PORT=$RAY_PORT_BASE
    RAY_DASHBOARD_PORT=$((RAY_PORT_BASE + 1))
    RAY_CLIENT_PORT=$((RAY_PORT_BASE + 2))
}

# ray_node_port_args SLOT NSLOTS: the per-node ports of the SLOT-th node on a host that runs NSLOTS nodes of
# this job (one node per host: NSLOTS=1 and 91 worker ports).
ray_node_port_args() {
    local slot=$1 nslots=$2
    local fixed=$((RAY_PORT_BASE + 3 + 6 * slot))
    local first_worker=$((RAY_PORT_BASE + 3 + 6 * nslots))
    local width=$(((RAY_PORT_BASE + 100 - first_worker) / nslots))
    local min_worker=$((first_worker + slot * width))
    RAY_NODE_PORT_ARGS=(
        --node-manager-port=$((fixed))
        --object-manager-port=$((fixed + 1))
        --dashboard-agent-grpc-port=$((fixed + 2))
        --dashboard-agent-listen-port=$((fixed + 3))
        --metrics-export-port=$((fixed + 4))
        --runtime-env-agent-port=$((fixed + 5))
        --min-worker-port=$min_worker
        --max-worker-port=$((min_worker + width - 1))
    )
}

# The token file Ray reads when RAY_AUTH_TOKEN is not set.
ray_token_path() {
    echo "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
}

# Make sure every node of the job has the same token: create it here when missing, then copy it over each
# node's srun stdin unless that node already has the same file (a shared home).
ray_auth_token_setup() {
    export RAY_AUTH_MODE=token
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
        echo "ray: token auth with RAY_AUTH_TOKEN (passed to every step by srun)"
        return 0
    fi
    local path origin node copied=0
    path=$(ray_token_path)
    if [[ -s "$path" ]]; then
        origin="existing"
        chmod 600 "$path" && chmod 700 "$(dirname "$path")" \
            || { echo "ray: cannot make the auth token $path private" >&2; return 1; }
    else
        origin="generated"
        (
            umask 077
            mkdir -p "$(dirname "$path")"
            python3 -c 'import secrets; print(secrets.token_hex(32))' >"$path.tmp.$$" && mv "$path.tmp.$$" "$path"
        ) || { echo "ray: cannot write the auth token $path" >&2; return 1; }
    fi
    for node in "$@"; do
        # shellcheck disable=SC2016
        if srun --overlap --nodes=1 --ntasks=1 --cpus-per-task=1 -w "$node" bash -c '
            umask 077; p=$1; new=$(cat)
            if [[ -s $p && $(cat "$p") == "$new" ]]; then exit 3; fi
            mkdir -p "$(dirname "$p")" && printf "%s\n" "$new" >"$p.tmp.$$" && mv "$p.tmp.$$" "$p"' \
            _ "$path" <"$path"; then
            copied=$((copied + 1))
        elif [[ $? -ne 3 ]]; then
            echo "ray: could not copy the auth token to $node" >&2
            return 1
        fi
    done
    echo "ray: token auth, token $path ($origin; copied to $copied node(s), the others already had it)"
}

ray_cluster_start() {
    ray_cluster_ports
    local nodes hosts head_node head_ip cpus gpus node i slot nslots host
    mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    head_node=${nodes[0]}
    # The machine behind each SLURM node name (NodeHostName): nodes of this job on one host need distinct ports.
    hosts=()
    for node in "${nodes[@]}"; do
        host=$(scontrol show node "$node" 2>/dev/null | sed -n 's/.*NodeHostName=\([^ ]*\).*/\1/p' | head -1)
        hosts+=("${host:-$node}")
    done
    cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
    gpus=${RAY_NUM_GPUS:-0}
    if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then gpus=$SLURM_GPUS_ON_NODE; fi
    # srun steps inherit neither --cpus-per-task nor the GPUs of the job (SLURM >= 22.05): ask for them.
    local step_res=(--cpus-per-task="$cpus")
    if ((gpus > 0)); then step_res+=(--gpus-per-task="$gpus"); fi
    ray_auth_token_setup "${nodes[@]}" || return 1

    head_ip=$(srun --overlap --nodes=1 --ntasks=1 --cpus-per-task=1 -w "$head_node" hostname -I | awk '{print $1}')
    export RAY_ADDRESS="$head_ip:$RAY_GCS_PORT"
    # Unix-socket paths under the temp dir must stay < 108 characters: keep it short.
    local temp_base=${RAY_TEMP_DIR:-/tmp/ray_${SLURM_JOB_ID:-$$}}

    if ray status --address="$RAY_ADDRESS" >/dev/null 2>&1; then
        echo "ray: another Ray already listens on $RAY_ADDRESS; set RAY_PORT_BASE to a free range" >&2
        return 1
    fi
    echo "ray: head $head_node ($head_ip), GCS port $RAY_GCS_PORT, dashboard port $RAY_DASHBOARD_PORT," \
        "$cpus CPU(s) and $gpus GPU(s) per node"
    for i in "${!nodes[@]}"; do
        node=${nodes[$i]}
        slot=0
        nslots=0
        for host in "${hosts[@]:0:$i}"; do
            if [[ $host == "${hosts[$i]}" ]]; then slot=$((slot + 1)); fi
        done
        for host in "${hosts[@]}"; do
            if [[ $host == "${hosts[$i]}" ]]; then nslots=$((nslots + 1)); fi
        done
        ray_node_port_args "$slot" "$nslots"
        local temp_dir=$temp_base
        if ((slot > 0)); then temp_dir=${temp_base}_$slot; fi
        if ((i == 0)); then
            # a head whose GCS answers too slowly for Ray's own deadline (a loaded node) exits at once:
            # start it once more before giving up
            local attempt
            for attempt in 1 2; do
                srun --overlap --nodes=1 --ntasks=1 "${step_res[@]}" -w "$node" \
                    ray start --head --block --node-ip-address="$head_ip" --port="$RAY_GCS_PORT" \
                    --num-cpus="$cpus" --num-gpus="$gpus" --include-dashboard=true --dashboard-host=127.0.0.1 \
                    --dashboard-port="$RAY_DASHBOARD_PORT" --ray-client-server-port="$RAY_CLIENT_PORT" \
                    "${RAY_NODE_PORT_ARGS[@]}" --temp-dir="$temp_dir" --disable-usage-stats &
                RAY_STEP_PIDS=($!)
                if ray_cluster_wait 120; then break; fi
                if ((attempt == 2)) || kill -0 "${RAY_STEP_PIDS[0]}" 2>/dev/null; then
                    echo "ray: the head did not come up" >&2
                    return 1
                fi
                echo "ray: the head step exited before its GCS answered; starting it again" >&2
                sleep 5
            done
            export RAY_DASHBOARD_URL="http://127.0.0.1:$RAY_DASHBOARD_PORT"
            ray_dashboard_wait 60 || echo "ray: the dashboard does not answer yet at $RAY_DASHBOARD_URL" >&2
        else
            # --node-ip-address: the worker's own address (its first one, as for the head)
            srun --overlap --nodes=1 --ntasks=1 "${step_res[@]}" -w "$node" bash -c \
                'exec ray start --block --address="$1" --node-ip-address="$(hostname -I | cut -d" " -f1)" "${@:2}"' \
                _ "$RAY_ADDRESS" --num-cpus="$cpus" --num-gpus="$gpus" "${RAY_NODE_PORT_ARGS[@]}" \
                --temp-dir="$temp_dir" --disable-usage-stats &
            RAY_STEP_PIDS+=($!)
        fi
        echo "ray: node $node (host ${hosts[$i]}) ${RAY_NODE_PORT_ARGS[0]} temp dir $temp_dir"
    done
    if ! ray_nodes_wait "${#nodes[@]}" 180; then
        echo "ray: only part of the ${#nodes[@]} node(s) joined; continuing with those that did" >&2
    fi
    echo "ray: cluster up at RAY_ADDRESS=$RAY_ADDRESS with ${#nodes[@]} node(s)"
    echo "ray: dashboard (bound to 127.0.0.1 on $head_node). From your laptop:"
    echo "ray:   ssh -N -L 8265:127.0.0.1:$RAY_DASHBOARD_PORT -J <you>@<login-node> <you>@$head_node"
    echo "ray:   then open http://127.0.0.1:8265 (REST: curl -H \"Authorization: Bearer \$(cat $(ray_token_path))\" http://127.0.0.1:8265/api/jobs/)"
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

# Wait until N nodes are alive in the cluster (a search started earlier would pack the head first).
ray_nodes_wait() {
    local want=$1 timeout=${2:-180}
    python3 - "$want" "$timeout" <<'PY'
import os, sys, time
want, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
try:
    import ray
except ImportError:
    sys.exit(0)  # no Ray in this python3: nothing to wait with
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level="ERROR")
while time.monotonic() < deadline:
    if sum(n["Alive"] for n in ray.nodes()) >= want:
        sys.exit(0)
    time.sleep(1)
sys.exit(1)
PY
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
