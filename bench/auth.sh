#!/usr/bin/env bash
# Auth benchmarks for xinference-local, bounded to about two minutes.
#
#  (a) Auth overhead: GET /v1/models with a bearer token (JWT) against a server with auth on, and
#      the same request against the same binary with auth off. Rounds alternate (on, off, on, off;
#      each round also runs the auth-on server with an api key, for reference); the medians are
#      compared. Goal: token overhead <= 5 %.
#  (b) Login storm: p99 latency of GET /v1/models (with a token) on an otherwise idle server, then
#      while a second wrk runs a storm of logins with the correct password (POST /token, 32
#      connections). Goal: p99 during the storm <= 2x idle. Also reports /token throughput.
#      The latency probe is paced (each of its connections waits PROBE_DELAY_MS between requests,
#      about 1,800 req/s in all) so that it measures latency, not the queueing of a saturated
#      server; a closed-loop probe on 2 cores gives a bimodal idle p99 (0.1 ms or 4 ms, depending
#      on how the connections land on the worker threads). PROBE_DELAY_MS=0 gives that probe.
#
# Starts its own servers on 127.0.0.1 (port 0, temp XINFERENCE_HOME) and stops them on exit.
# Builds nothing, except `cargo build --release --bin xinference-local` when the binary is missing.
#
# Knobs (environment): DURATION_S (10, seconds per wrk run), ROUNDS (2), CONNS (16, connections of
# the throughput runs), PROBE_CONNS (4, connections of the latency probe), PROBE_DELAY_MS (2,
# pause of each probe connection between requests; 0 = closed loop), STORM_CONNS (32),
# XINFERENCE_LOCAL (path of the binary; default target/release/xinference-local).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${XINFERENCE_LOCAL:-$ROOT/target/release/xinference-local}
DURATION_S=${DURATION_S:-10}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-16}
PROBE_CONNS=${PROBE_CONNS:-4}
PROBE_DELAY_MS=${PROBE_DELAY_MS:-2}
STORM_CONNS=${STORM_CONNS:-32}

for tool in wrk curl awk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench/auth.sh: '$tool' is not installed." >&2
        if [ "$tool" = wrk ]; then
            echo "Install it with: apt-get update && apt-get install -y wrk" >&2
        fi
        exit 1
    fi
done

if [ ! -x "$BIN" ]; then
    echo "== $BIN is missing: building it (cargo build --release --bin xinference-local)"
    (cd "$ROOT" && cargo build --release --bin xinference-local)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xi-bench-auth.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the auth config: a fresh secret and a plain-text password (hashed with argon2id at load) ----
if command -v openssl >/dev/null 2>&1; then
    SECRET=$(openssl rand -hex 32)
else
    SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
export BENCH_USER=bench
export BENCH_PASSWORD="bench-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
API_KEY="sk-$(head -c 64 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | head -c 13)"
cat >"$WORK/auth.json" <<EOF
{
  "auth_config": {"algorithm": "HS256", "secret_key": "$SECRET", "token_expire_in_minutes": 60},
  "user_config": [
    {"username": "$BENCH_USER", "password": "$BENCH_PASSWORD", "permissions": ["models:list", "models:read"],
     "api_keys": ["$API_KEY"]}
  ]
}
EOF

# The latency probe's pacing: wrk calls delay() before each request of a connection.
if [ "$PROBE_DELAY_MS" != 0 ]; then
    echo "delay = function() return $PROBE_DELAY_MS end" >"$WORK/probe.lua"
else
    echo "-- closed loop: no delay" >"$WORK/probe.lua"
fi

# start_server NAME [FLAGS...]: starts the binary, sets ADDR to http://host:port.
start_server() {
    local name=$1
    shift
    mkdir -p "$WORK/$name-home"
    : >"$WORK/$name.out"
    "$BIN" -H 127.0.0.1 -p 0 --home "$WORK/$name-home" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    ADDR=""
    for _ in $(seq 1 150); do
        ADDR=$(sed -n 's/^xinference-local listening on //p' "$WORK/$name.out" | head -n1)
        [ -n "$ADDR" ] && return 0
        if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
            echo "server '$name' exited at startup:" >&2
            cat "$WORK/$name.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "server '$name' printed no address within 15 s" >&2
    exit 1
}

start_server on --auth-config "$WORK/auth.json"
ON=$ADDR
start_server off
OFF=$ADDR

TOKEN=$(curl -sf -X POST "$ON/token" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$BENCH_USER\",\"password\":\"$BENCH_PASSWORD\"}" |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
if [ -z "$TOKEN" ]; then
    echo "login to the auth-on server failed" >&2
    exit 1
fi
# Sanity: auth really is on for one server and off for the other.
code_on_anon=$(curl -s -o /dev/null -w '%{http_code}' "$ON/v1/models")
code_on_tok=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$ON/v1/models")
code_on_key=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $API_KEY" "$ON/v1/models")
code_off=$(curl -s -o /dev/null -w '%{http_code}' "$OFF/v1/models")
if [ "$code_on_anon" != 401 ] || [ "$code_on_tok" != 200 ] || [ "$code_on_key" != 200 ] || [ "$code_off" != 200 ]; then
    echo "sanity check failed: anon->auth-on $code_on_anon, token->auth-on $code_on_tok, key->auth-on $code_on_key, anon->auth-off $code_off" >&2
    exit 1
fi

# --- helpers to read wrk's output --------------------------------------------------------------
rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
# p99 in milliseconds from wrk --latency output.
p99_ms() {
    awk '$1 == "99%" {
        v = $2
        if (sub(/us$/, "", v)) { print v / 1000 }
        else if (sub(/ms$/, "", v)) { print v + 0 }
        else if (sub(/m$/, "", v)) { print v * 60000 }
        else if (sub(/s$/, "", v)) { print v * 1000 }
    }' "$1"
}
# Requests that were not 2xx/3xx, plus socket errors (connect, read, write, timeout).
bad_count() {
    awk '/Non-2xx or 3xx responses:/ {n += $NF}
         /Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
         END {print n + 0}' "$1"
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN {printf "%.*f", d, v}'; }

D="${DURATION_S}s"
echo "== machine: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "== binary: $BIN"
echo "== auth on: $ON   auth off: $OFF   duration per run: $D   rounds: $ROUNDS"

# --- (a) auth overhead, alternating on/off --------------------------------------------------------
ON_RPS=()
KEY_RPS=()
OFF_RPS=()
WARN=""
for round in $(seq 1 "$ROUNDS"); do
    out="$WORK/a-on-$round.txt"
    wrk -t2 -c"$CONNS" -d"$D" --latency -H "Authorization: Bearer $TOKEN" "$ON/v1/models" >"$out"
    ON_RPS+=("$(rps "$out")")
    [ "$(bad_count "$out")" = 0 ] || WARN+="(a) auth-on round $round: $(bad_count "$out") failed requests. "
    echo "(a) round $round  auth on : $(fmt "${ON_RPS[-1]}") req/s"

    out="$WORK/a-key-$round.txt"
    wrk -t2 -c"$CONNS" -d"$D" --latency -H "Authorization: Bearer $API_KEY" "$ON/v1/models" >"$out"
    KEY_RPS+=("$(rps "$out")")
    [ "$(bad_count "$out")" = 0 ] || WARN+="(a) api-key round $round: $(bad_count "$out") failed requests. "
    echo "(a) round $round  api key : $(fmt "${KEY_RPS[-1]}") req/s"

    out="$WORK/a-off-$round.txt"
    wrk -t2 -c"$CONNS" -d"$D" --latency "$OFF/v1/models" >"$out"
    OFF_RPS+=("$(rps "$out")")
    [ "$(bad_count "$out")" = 0 ] || WARN+="(a) auth-off round $round: $(bad_count "$out") failed requests. "
    echo "(a) round $round  auth off: $(fmt "${OFF_RPS[-1]}") req/s"
done
ON_MED=$(median "${ON_RPS[@]}")
KEY_MED=$(median "${KEY_RPS[@]}")
OFF_MED=$(median "${OFF_RPS[@]}")
OVERHEAD=$(awk -v on="$ON_MED" -v off="$OFF_MED" 'BEGIN {print (off - on) / off * 100}')
KEY_OVERHEAD=$(awk -v on="$KEY_MED" -v off="$OFF_MED" 'BEGIN {print (off - on) / off * 100}')

# --- (b) p99 idle vs during a login storm ---------------------------------------------------------
IDLE_P99=()
STORM_P99=()
STORM_RPS=()
STORM_BAD=()
for round in $(seq 1 "$ROUNDS"); do
    out="$WORK/b-idle-$round.txt"
    wrk -t1 -c"$PROBE_CONNS" -d"$D" --latency -s "$WORK/probe.lua" \
        -H "Authorization: Bearer $TOKEN" "$ON/v1/models" >"$out"
    IDLE_P99+=("$(p99_ms "$out")")
    [ "$(bad_count "$out")" = 0 ] || WARN+="(b) idle probe round $round: $(bad_count "$out") failed requests. "
    echo "(b) round $round  p99 idle        : $(fmt "${IDLE_P99[-1]}" 3) ms   ($(fmt "$(rps "$out")") req/s)"

    # The storm starts 1 s before the probe and ends 1 s after it.
    storm="$WORK/b-storm-$round.txt"
    wrk -t1 -c"$STORM_CONNS" -d"$((DURATION_S + 2))s" --timeout 15s --latency \
        -s "$ROOT/bench/token.lua" "$ON/token" >"$storm" &
    storm_pid=$!
    sleep 1
    out="$WORK/b-probe-$round.txt"
    wrk -t1 -c"$PROBE_CONNS" -d"$D" --latency -s "$WORK/probe.lua" \
        -H "Authorization: Bearer $TOKEN" "$ON/v1/models" >"$out"
    wait "$storm_pid"
    STORM_P99+=("$(p99_ms "$out")")
    STORM_RPS+=("$(rps "$storm")")
    STORM_BAD+=("$(bad_count "$storm")")
    [ "$(bad_count "$out")" = 0 ] || WARN+="(b) probe during storm round $round: $(bad_count "$out") failed requests. "
    echo "(b) round $round  p99 during storm: $(fmt "${STORM_P99[-1]}" 3) ms   /token $(fmt "${STORM_RPS[-1]}" 1) req/s, ${STORM_BAD[-1]} non-200"
done
IDLE_MED=$(median "${IDLE_P99[@]}")
STORM_MED=$(median "${STORM_P99[@]}")
STORM_RPS_MED=$(median "${STORM_RPS[@]}")
RATIO=$(awk -v s="$STORM_MED" -v i="$IDLE_MED" 'BEGIN {print s / i}')
OVERHEAD_OK=$(awk -v o="$OVERHEAD" 'BEGIN {print (o <= 5) ? "met" : "NOT met"}')
RATIO_OK=$(awk -v r="$RATIO" 'BEGIN {print (r <= 2) ? "met" : "NOT met"}')

# join V...: the values formatted with DIGITS decimals, separated by " / ".
join() {
    local out="" v
    for v in "$@"; do out+="${out:+ / }$(fmt "$v" "${DIGITS:-0}")"; done
    echo "$out"
}
echo
echo "| measurement | runs | median | goal |"
echo "|---|---|---|---|"
echo "| GET /v1/models req/s, auth on (token), -t2 -c$CONNS | $(join "${ON_RPS[@]}") | $(fmt "$ON_MED") | |"
echo "| GET /v1/models req/s, auth on (api key), -t2 -c$CONNS | $(join "${KEY_RPS[@]}") | $(fmt "$KEY_MED") | |"
echo "| GET /v1/models req/s, auth off, -t2 -c$CONNS | $(join "${OFF_RPS[@]}") | $(fmt "$OFF_MED") | |"
echo "| auth overhead, token (on vs off medians) | | $(fmt "$OVERHEAD" 1) % | <= 5 %: $OVERHEAD_OK |"
echo "| auth overhead, api key (for reference) | | $(fmt "$KEY_OVERHEAD" 1) % | |"
echo "| GET /v1/models p99 idle, -t1 -c$PROBE_CONNS, ${PROBE_DELAY_MS} ms pacing (ms) | $(DIGITS=3 join "${IDLE_P99[@]}") | $(fmt "$IDLE_MED" 3) | |"
echo "| GET /v1/models p99 during login storm (ms) | $(DIGITS=3 join "${STORM_P99[@]}") | $(fmt "$STORM_MED" 3) | |"
echo "| p99 storm / idle | | $(fmt "$RATIO" 2)x | <= 2x: $RATIO_OK |"
echo "| POST /token req/s during storm, -c$STORM_CONNS | $(DIGITS=1 join "${STORM_RPS[@]}") | $(fmt "$STORM_RPS_MED" 1) | |"
echo "| POST /token non-200 during storm | $(join "${STORM_BAD[@]}") | | 0 |"
if [ -n "$WARN" ]; then
    echo
    echo "warning: $WARN"
fi
