#!/usr/bin/env bash
# Auth overhead as server CPU time per request, not throughput: on a shared VM a saturated
# server's req/s swings 20-30 % between rounds with the neighbours, while the CPU time the
# server itself spends on a request does not count time stolen from it. Each run sends GET
# /v1/models at a paced rate (PACE_CONNS connections, each waiting PACE_MS between requests:
# the server is never saturated) for DURATION_S, and reads the time the server's threads ran
# (/proc/PID/task/*/schedstat, nanoseconds) before and after.
#
# Servers: auth off, and `--auth` whose identity store holds DB_KEYS api keys (created through
# the API with bench/keys.lua), called with one of them. In each of ROUNDS rounds both servers
# are loaded at once (one wrk each), so the machine's swings fall on both alike.
# Reports CPU microseconds per request, min/median/max, and the key's overhead (medians).
#
#   bench/auth_cpu.sh      (XINFERENCE_LOCAL, DB_KEYS 10000, ROUNDS 6, DURATION_S 8,
#                           PACE_CONNS 8, PACE_MS 1, OFF_HEADER unset)
# OFF_HEADER=1 sends the key's `Authorization` header to the auth-off server too (which ignores
# it), leaving the cost of receiving and parsing the longer request out of the overhead.
# Starts its servers on 127.0.0.1 (port 0, temp homes) and stops them at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${XINFERENCE_LOCAL:-$ROOT/target/release/xinference-local}
DB_KEYS=${DB_KEYS:-10000}
ROUNDS=${ROUNDS:-6}
DURATION_S=${DURATION_S:-8}
PACE_CONNS=${PACE_CONNS:-8}
PACE_MS=${PACE_MS:-1}
for tool in wrk curl awk python3; do
    command -v "$tool" >/dev/null || { echo "bench/auth_cpu.sh: $tool is missing" >&2; exit 1; }
done
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -q --bin xinference-local)

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
echo "delay = function() return $PACE_MS end" >"$WORK/pace.lua"

start() { # NAME FLAGS... -> sets URL, PID
    "$BIN" -H 127.0.0.1 -p 0 --home "$WORK/$1" "${@:2}" >"$WORK/$1.out" 2>"$WORK/$1.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 150); do
        URL=$(sed -n 's/^xinference-local listening on //p' "$WORK/$1.out" | head -n1)
        [ -n "$URL" ] && return 0
        sleep 0.1
    done
    echo "server $1 did not start: $(tail -5 "$WORK/$1.err")" >&2
    exit 1
}
json() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }

start off
OFF_URL=$URL OFF_PID=$PID
start store --auth
STORE_URL=$URL STORE_PID=$PID
password=$(sed -n 's/.*password "\([^"]*\)".*/\1/p' "$WORK/store.err" | head -n1)
token=$(curl -sf "$STORE_URL/token" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$password\"}" | json '["access_token"]')
curl -sf -X PUT "$STORE_URL/v1/admin/users/1/password" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"new_password\":\"bench-password-1\",\"old_password\":\"$password\"}" >/dev/null
echo "creating $DB_KEYS keys..." >&2
: >"$WORK/done"
ADMIN_TOKEN=$token KEYS_PER_THREAD=$((DB_KEYS / 2)) KEYS_DONE_FILE="$WORK/done" \
    wrk -t2 -c8 -d300s -s "$ROOT/bench/keys.lua" "$STORE_URL/v1/admin/keys" >/dev/null &
wrk_pid=$!
while kill -0 "$wrk_pid" 2>/dev/null && [ "$(grep -c . "$WORK/done")" -lt 2 ]; do sleep 0.1; done
kill -INT "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" || true
key=$(curl -sf -X POST "$STORE_URL/v1/admin/keys" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name":"probe"}' | json '["key"]')

# cpu_ns PID: nanoseconds the process's threads have run (schedstat: finer than stat's ticks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
# load URL OUT [KEY]: one paced wrk run against URL, its report in OUT.
load() {
    local auth=()
    [ -n "${3:-}" ] && auth=(-H "Authorization: Bearer $3")
    wrk -t1 -c"$PACE_CONNS" -d"${DURATION_S}s" -s "$WORK/pace.lua" "${auth[@]}" "$1/v1/models" >"$2"
}
# per_request NS OUT: CPU microseconds per request of one run, and its request count.
per_request() {
    local reqs bad
    reqs=$(awk '/ requests in / {print $1}' "$2")
    bad=$(awk '/Non-2xx/ {print $NF}' "$2")
    [ -z "$bad" ] || { echo "non-2xx answers: $bad" >&2; exit 1; }
    awk -v t="$1" -v n="$reqs" 'BEGIN {printf "%.3f %d\n", t / 1e3 / n, n}'
}
# Both servers are loaded at the same time, for the same seconds, so whatever the neighbours
# do to this machine in a round they do to both; the paired per-round ratio cancels it.
OFF=() KEY=()
for round in $(seq "$ROUNDS"); do
    off0=$(cpu_ns "$OFF_PID") key0=$(cpu_ns "$STORE_PID")
    load "$OFF_URL" "$WORK/off.txt" ${OFF_HEADER:+"$key"} &
    off_load=$!
    load "$STORE_URL" "$WORK/key.txt" "$key" &
    key_load=$!
    wait "$off_load" "$key_load"
    off1=$(cpu_ns "$OFF_PID") key1=$(cpu_ns "$STORE_PID")
    read -r o n1 < <(per_request $((off1 - off0)) "$WORK/off.txt")
    read -r k n2 < <(per_request $((key1 - key0)) "$WORK/key.txt")
    OFF+=("$o") KEY+=("$k")
    echo "round $round: auth off $o us/request ($n1 requests), store key $k us/request ($n2)" >&2
done
python3 - "${OFF[*]}" "${KEY[*]}" "$DB_KEYS" "$ROUNDS" "$DURATION_S" "$PACE_CONNS" "$PACE_MS" <<'EOF'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
key = [float(x) for x in sys.argv[2].split()]
keys, rounds, secs, conns, pace = sys.argv[3:]
f = lambda v: f"{min(v):.1f} / {statistics.median(v):.1f} / {max(v):.1f}"
pairs = sorted(k / o - 1 for k, o in zip(key, off))
print(f"| server CPU per GET /v1/models (us), {rounds} rounds of {secs} s, {conns} connections paced {pace} ms | min / median / max |")
print("|---|---|")
print(f"| auth off | {f(off)} |")
print(f"| store key among {int(keys) + 1} keys | {f(key)} |")
print(f"| overhead (medians) | {statistics.median(key) / statistics.median(off) - 1:+.1%} |")
print(f"| overhead per round (paired), min / median / max | {pairs[0]:+.1%} / {statistics.median(pairs):+.1%} / {pairs[-1]:+.1%} |")
EOF
