#!/usr/bin/env bash
# Cluster benchmarks: forwarding overhead (the same small embeddings request, local mode vs a
# supervisor + one worker, alternating) and dead-worker detection time with the default
# heartbeat interval (kill -9 a worker, poll /status until it is marked dead).
#
#   bench/cluster.sh [N]
#
# Builds the release binaries (into $CARGO_TARGET_DIR or target/); writes bench/results/cluster.md.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-2000}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --bins >&2
bin="$target/release"
models=$(scripts/fetch-test-models.sh)
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a server in the background; sets URL (and PID) once it listens.
start() { # name log command...
    local name=$1 log=$2
    shift 2
    "$@" > "$log.out" 2> "$log" &
    PID=$!
    pids+=("$PID")
    for _ in $(seq 100); do
        if URL=$(grep -o "$name listening on http://[0-9.:]*" "$log.out" 2>/dev/null | grep -o 'http://.*'); then
            return
        fi
        sleep 0.1
    done
    echo "$name did not start: $(cat "$log")" >&2
    exit 1
}

launch() { # url
    curl -sf -X POST "$1/v1/models" -H 'Content-Type: application/json' \
        -d "{\"model_name\":\"all-MiniLM-L6-v2\",\"model_type\":\"embedding\",\"model_uid\":\"mini\",\"model_path\":\"$models/all-MiniLM-L6-v2\"}" >/dev/null
}

start xinference-local "$work/local.log" "$bin/xinference-local" -p 0 --home "$work/local"
local_url=$URL
start xinference-supervisor "$work/sup.log" "$bin/xinference-supervisor" -H 127.0.0.1 -p 0 --home "$work/sup"
sup_url=$URL
start xinference-worker "$work/w1.log" "$bin/xinference-worker" -e "$sup_url" -H 127.0.0.1 \
    --home "$work/w1" --cluster-secret-file "$work/sup/cluster_secret"
until curl -sf "$sup_url/status" | grep -q '"alive":true'; do sleep 0.1; done
launch "$local_url"
launch "$sup_url"

overhead=$(python3 bench/cluster_overhead.py "$local_url" "$sup_url" "$N")
echo "$overhead"

# Detection: a second worker holding nothing, killed with SIGKILL.
start xinference-worker "$work/w2.log" "$bin/xinference-worker" -e "$sup_url" -H 127.0.0.1 \
    --home "$work/w2" --cluster-secret-file "$work/sup/cluster_secret"
w2_addr=${URL#http://}
until curl -sf "$sup_url/status" | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if s['workers'].get('$w2_addr',{}).get('alive') else 1)"; do sleep 0.1; done
kill -9 "$PID"
start_ns=$(date +%s%N)
until curl -sf "$sup_url/status" | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if s['workers']['$w2_addr']['alive'] is False else 1)"; do sleep 0.05; done
end_ns=$(date +%s%N)
detect=$(awk "BEGIN { printf \"%.2f\", ($end_ns - $start_ns) / 1e9 }")
echo "dead-worker detection (heartbeat 2 s, dead after 3 missed): $detect s"

{
    echo "# Cluster benchmarks"
    echo
    echo "\`bench/cluster.sh $N\` on $(nproc) cores, $(date -u +%Y-%m-%d). Release build; loopback."
    echo
    echo "## Forwarding overhead: all-MiniLM-L6-v2, one short input, local vs supervisor + worker"
    echo
    echo "$overhead"
    echo
    echo "## Dead-worker detection"
    echo
    echo "A worker killed with SIGKILL is marked dead in \`/status\` after $detect s"
    echo "(heartbeat interval 2 s, dead after 3 missed intervals; upstream: ~35 s)."
} > bench/results/cluster.md
echo "wrote bench/results/cluster.md"
