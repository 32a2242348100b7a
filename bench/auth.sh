#!/usr/bin/env bash
# Auth benchmarks for xinference-local, bounded to about three and a half minutes.
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
#  (c) Identity store with many keys: a third server, `--auth` (SQLite identity store, no config
#      file), whose store holds DB_KEYS (10,000) api keys, all created through POST
#      /v1/admin/keys (real keys, never SQL). GET /v1/models with one of them, with a DB user's
#      JWT, and on the auth-off server, alternating rounds; medians. Goal: key overhead <= 5 %.
#      The key creation itself is the key-creation throughput measurement (wrk, KEY_CONNS
#      parallel clients, bench/keys.lua).
#  (d) Token refresh throughput: REFRESH_SESSIONS logins of the DB user, each a chain of POST
#      /v1/auth/refresh for DURATION_S. A refresh needs the token the previous one returned, so
#      each chain is sequential: wrk with one connection per thread (-tN -cN) and
#      bench/refresh.lua, which carries each thread's refresh token from the response body to
#      its next request (wrk rather than a Python loop: a C client costs the shared 2 cores far
#      less per request, and each Lua state is exactly one chain).
#
# Starts its own servers on 127.0.0.1 (port 0, temp XINFERENCE_HOME) and stops them on exit.
# Builds nothing, except `cargo build --release --bin xinference-local` when the binary is missing.
# Takes about 3 min 10 s with the defaults (2 cores).
#
# Knobs (environment): DURATION_S (10, seconds per wrk run), ROUNDS (2), CONNS (16, connections of
# the throughput runs), PROBE_CONNS (4, connections of the latency probe), PROBE_DELAY_MS (2,
# pause of each probe connection between requests; 0 = closed loop), STORM_CONNS (32),
# DB_KEYS (10000, keys in the store for (c)), KEY_CONNS (8, parallel key creators),
# REFRESH_SESSIONS (8, parallel refresh chains), KEEP_WORK (set: keep the temp dir with the
# servers' logs and every wrk output, for a look at failed requests),
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
DB_KEYS=${DB_KEYS:-10000}
KEY_CONNS=${KEY_CONNS:-8}
REFRESH_SESSIONS=${REFRESH_SESSIONS:-8}

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
    if [ -n "${KEEP_WORK:-}" ]; then
        echo "== kept $WORK (servers' logs, wrk outputs)" >&2
    else
        rm -rf "$WORK"
    fi
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
start_server db --auth
DB=$ADDR

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

# --- the identity-store server: the first admin, its password change, a DB user -----------------
# login_field URL USER PASSWORD FIELD: one field of a successful POST /token answer.
login_field() {
    curl -sf -X POST "$1/token" -H 'Content-Type: application/json' \
        -d "{\"username\":\"$2\",\"password\":\"$3\"}" |
        sed -n "s/.*\"$4\":\"\([^\"]*\)\".*/\1/p"
}
FIRST_PW=$(sed -n 's/.*First admin of the identity store: username "admin", password "\([^"]*\)".*/\1/p' \
    "$WORK/db.err" | head -n1)
if [ -z "$FIRST_PW" ]; then
    echo "the --auth server printed no first-admin password:" >&2
    cat "$WORK/db.err" >&2
    exit 1
fi
DB_ADMIN_PW="admin-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
first_token=$(login_field "$DB" admin "$FIRST_PW" access_token)
curl -sf -o /dev/null -X PUT "$DB/v1/admin/users/1/password" -H "Authorization: Bearer $first_token" \
    -H 'Content-Type: application/json' \
    -d "{\"new_password\":\"$DB_ADMIN_PW\",\"old_password\":\"$FIRST_PW\"}"
DB_ADMIN_TOKEN=$(login_field "$DB" admin "$DB_ADMIN_PW" access_token)
DB_USER_PW="dbuser-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$DB/v1/admin/users" \
    -H "Authorization: Bearer $DB_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"username\":\"dbuser\",\"password\":\"$DB_USER_PW\",\"permissions\":[\"models:list\",\"models:read\"]}")
if [ -z "$DB_ADMIN_TOKEN" ] || [ "$code" != 201 ]; then
    echo "setting up the --auth server failed (admin token: ${DB_ADMIN_TOKEN:+ok}, create user: $code)" >&2
    exit 1
fi
DB_JWT=$(login_field "$DB" dbuser "$DB_USER_PW" access_token)

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
# saturate ARRAY PART NAME URL [BEARER]: one saturated wrk run of GET URL/v1/models (round
# $round); appends its req/s to ARRAY and any failed requests to WARN.
saturate() {
    local -n into=$1
    local part=$2 name=$3 url=$4 auth=()
    local out="$WORK/${part//[()]/}-${name// /-}-$round.txt"
    [ -n "${5:-}" ] && auth=(-H "Authorization: Bearer $5")
    wrk -t2 -c"$CONNS" -d"$D" --latency "${auth[@]}" "$url/v1/models" >"$out"
    into+=("$(rps "$out")")
    [ "$(bad_count "$out")" = 0 ] || WARN+="$part $name round $round: $(bad_count "$out") failed requests. "
    echo "$part round $round  $name: $(fmt "${into[-1]}") req/s"
}

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
    saturate ON_RPS "(a)" "auth on " "$ON" "$TOKEN"
    saturate KEY_RPS "(a)" "api key " "$ON" "$API_KEY"
    saturate OFF_RPS "(a)" "auth off" "$OFF"
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

# --- (c) the store's keys: create DB_KEYS through the API, then GET with one of them ------------
# Half the keys, the probe key (its plaintext is in its creation answer only), the other half:
# the probe key sits in the middle of the table. Each wrk thread stops after its share of 201s.
KEY_THREADS=2
create_keys() { # COUNT OUT: wrk -t2 -cKEY_CONNS creating about COUNT keys (capped at 300 s).
    local done_file="$2.done" pid
    : >"$done_file"
    ADMIN_TOKEN="$DB_ADMIN_TOKEN" KEYS_PER_THREAD=$(($1 / KEY_THREADS)) KEYS_DONE_FILE="$done_file" \
        wrk -t"$KEY_THREADS" -c"$KEY_CONNS" -d300s --timeout 15s --latency -s "$ROOT/bench/keys.lua" \
        "$DB/v1/admin/keys" >"$2" &
    pid=$!
    # Every thread has created its share: SIGINT makes wrk stop now and print its statistics.
    while kill -0 "$pid" 2>/dev/null && [ "$(grep -c . "$done_file")" -lt "$KEY_THREADS" ]; do
        sleep 0.05
    done
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" || true
}
# wrk's elapsed time in seconds ("N requests in 12.34s, ...").
wrk_secs() {
    awk '/ requests in / {v = $4; sub(/,$/, "", v)
        if (sub(/ms$/, "", v)) print v / 1000; else if (sub(/m$/, "", v)) print v * 60; else { sub(/s$/, "", v); print v } }' "$1"
}
wrk_reqs() { awk '/ requests in / {print $1}' "$1"; }
count_keys() {
    curl -sf -H "Authorization: Bearer $DB_ADMIN_TOKEN" "$DB/v1/admin/keys" | grep -o '"key_prefix"' | wc -l
}
half=$((DB_KEYS / 2))
create_keys "$half" "$WORK/c-keys-1.txt"
DB_KEY=$(curl -sf -X POST "$DB/v1/admin/keys" -H "Authorization: Bearer $DB_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"probe"}' | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
create_keys "$((DB_KEYS - half - 1))" "$WORK/c-keys-2.txt"
KEYS_IN_STORE=$(count_keys)
KEY_SECS=$(awk -v a="$(wrk_secs "$WORK/c-keys-1.txt")" -v b="$(wrk_secs "$WORK/c-keys-2.txt")" 'BEGIN {print a + b}')
KEY_REQS=$(( $(wrk_reqs "$WORK/c-keys-1.txt") + $(wrk_reqs "$WORK/c-keys-2.txt") ))
KEY_BAD=$(( $(bad_count "$WORK/c-keys-1.txt") + $(bad_count "$WORK/c-keys-2.txt") ))
KEY_CREATE_RPS=$(awk -v n="$KEY_REQS" -v s="$KEY_SECS" 'BEGIN {print n / s}')
KEY_P99="$(fmt "$(p99_ms "$WORK/c-keys-1.txt")" 1) / $(fmt "$(p99_ms "$WORK/c-keys-2.txt")" 1)"
echo "(c) key creation: $KEY_REQS requests in $(fmt "$KEY_SECS" 1) s = $(fmt "$KEY_CREATE_RPS") keys/s ($KEY_BAD not 201); $KEYS_IN_STORE keys in the store"
code_db_anon=$(curl -s -o /dev/null -w '%{http_code}' "$DB/v1/models")
code_db_key=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $DB_KEY" "$DB/v1/models")
code_db_jwt=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $DB_JWT" "$DB/v1/models")
if [ "$code_db_anon" != 401 ] || [ "$code_db_key" != 200 ] || [ "$code_db_jwt" != 200 ] ||
    [ "$KEYS_IN_STORE" -lt "$DB_KEYS" ]; then
    echo "sanity check of the --auth server failed: anon $code_db_anon, DB key $code_db_key, DB user's JWT $code_db_jwt, $KEYS_IN_STORE keys (want >= $DB_KEYS)" >&2
    exit 1
fi

DBKEY_RPS=()
DBJWT_RPS=()
OFF2_RPS=()
for round in $(seq 1 "$ROUNDS"); do
    saturate DBKEY_RPS "(c)" "DB key  " "$DB" "$DB_KEY"
    saturate DBJWT_RPS "(c)" "DB JWT  " "$DB" "$DB_JWT"
    saturate OFF2_RPS "(c)" "auth off" "$OFF"
done
DBKEY_MED=$(median "${DBKEY_RPS[@]}")
DBJWT_MED=$(median "${DBJWT_RPS[@]}")
OFF2_MED=$(median "${OFF2_RPS[@]}")
DBKEY_OVERHEAD=$(awk -v on="$DBKEY_MED" -v off="$OFF2_MED" 'BEGIN {print (off - on) / off * 100}')
DBJWT_OVERHEAD=$(awk -v on="$DBJWT_MED" -v off="$OFF2_MED" 'BEGIN {print (off - on) / off * 100}')
DBKEY_OK=$(awk -v o="$DBKEY_OVERHEAD" 'BEGIN {print (o <= 5) ? "met" : "NOT met"}')

# --- (d) refresh chains -------------------------------------------------------------------------
: >"$WORK/refresh-tokens.txt"
for _ in $(seq 1 "$REFRESH_SESSIONS"); do
    # (the answer has no final newline: echo adds one per token)
    echo "$(login_field "$DB" dbuser "$DB_USER_PW" refresh_token)" >>"$WORK/refresh-tokens.txt"
done
if [ "$(grep -c . "$WORK/refresh-tokens.txt")" != "$REFRESH_SESSIONS" ]; then
    echo "fewer than $REFRESH_SESSIONS logins of the DB user returned a refresh token" >&2
    exit 1
fi
out="$WORK/d-refresh.txt"
REFRESH_TOKENS_FILE="$WORK/refresh-tokens.txt" wrk -t"$REFRESH_SESSIONS" -c"$REFRESH_SESSIONS" \
    -d"$D" --timeout 15s --latency -s "$ROOT/bench/refresh.lua" "$DB/v1/auth/refresh" >"$out"
REFRESH_RPS=$(rps "$out")
REFRESH_P99=$(p99_ms "$out")
REFRESH_BAD=$(bad_count "$out")
echo "(d) refresh: $(fmt "$REFRESH_RPS") req/s over $REFRESH_SESSIONS chains, p99 $(fmt "$REFRESH_P99" 3) ms, $REFRESH_BAD not 200"

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
echo "| GET /v1/models req/s, DB key among $KEYS_IN_STORE, -t2 -c$CONNS | $(join "${DBKEY_RPS[@]}") | $(fmt "$DBKEY_MED") | |"
echo "| GET /v1/models req/s, DB user's JWT, -t2 -c$CONNS | $(join "${DBJWT_RPS[@]}") | $(fmt "$DBJWT_MED") | |"
echo "| GET /v1/models req/s, auth off (same rounds), -t2 -c$CONNS | $(join "${OFF2_RPS[@]}") | $(fmt "$OFF2_MED") | |"
echo "| auth overhead, DB key among $KEYS_IN_STORE | | $(fmt "$DBKEY_OVERHEAD" 1) % | <= 5 %: $DBKEY_OK |"
echo "| auth overhead, DB user's JWT (for reference) | | $(fmt "$DBJWT_OVERHEAD" 1) % | |"
echo "| POST /v1/admin/keys keys/s, -t$KEY_THREADS -c$KEY_CONNS ($KEY_REQS requests in 2 runs, p99 $KEY_P99 ms) | | $(fmt "$KEY_CREATE_RPS") | |"
echo "| POST /v1/admin/keys not 201 | | $KEY_BAD | 0 |"
echo "| POST /v1/auth/refresh req/s, $REFRESH_SESSIONS chains (p99 $(fmt "$REFRESH_P99" 3) ms) | | $(fmt "$REFRESH_RPS") | |"
echo "| POST /v1/auth/refresh not 200 | | $REFRESH_BAD | 0 |"
if [ -n "$WARN" ]; then
    echo
    echo "warning: $WARN"
fi
