#!/usr/bin/env bash
# Auth overhead in instructions: the server's user-space instructions per GET /v1/models,
# counted by callgrind, for auth off, a config-file api key and an identity-store api key. The
# count does not depend on what the neighbours do to this VM (unlike seconds), so it resolves a
# few percent where timed runs cannot. What it leaves out is the kernel (TCP, syscalls), which
# all three servers pay alike: the overhead of the whole request's CPU time is smaller than the
# user-space ratio printed here, never larger (see bench/auth_cpu.sh for seconds).
#
#   bench/auth_instructions.sh   (XINFERENCE_LOCAL, REQUESTS 3000, DB_KEYS 1000, TOP 25)
#
# Every server gets the same request bytes: the same `Authorization: Bearer <key>` header goes
# to the auth-off server too (which ignores it), so the difference is what authenticating costs,
# not the parsing of a longer request. Each server runs under callgrind, uninstrumented until
# a warm-up of 200 requests is done; then exactly REQUESTS requests on one keep-alive connection
# are counted. Prints a markdown table, and the functions whose inclusive counts grow most from
# auth off to the store key (the callgrind files are kept in $KEEP when it is set).
# Starts its servers on 127.0.0.1 (port 0, temp homes) and stops them at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${XINFERENCE_LOCAL:-$ROOT/target/release/xinference-local}
REQUESTS=${REQUESTS:-3000}
DB_KEYS=${DB_KEYS:-1000}
TOP=${TOP:-25}
for tool in valgrind callgrind_control callgrind_annotate curl python3; do
    command -v "$tool" >/dev/null || { echo "bench/auth_instructions.sh: $tool is missing" >&2; exit 1; }
done
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -q --bin xinference-local)

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# start NAME PREFIX... -- FLAGS...: the server (under PREFIX, e.g. valgrind) -> URL, PID.
start() {
    local name=$1 prefix=()
    shift
    while [ "$1" != -- ]; do prefix+=("$1"); shift; done
    shift
    mkdir -p "$WORK/$name"
    "${prefix[@]}" "$BIN" -H 127.0.0.1 -p 0 --home "$WORK/$name" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 600); do
        URL=$(sed -n 's/^xinference-local listening on //p' "$WORK/$name.out" | head -n1)
        [ -n "$URL" ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $name did not start: $(grep -v "^==" "$WORK/$name.err" | tail -8)" >&2
    exit 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
json() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }
grind() { echo valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$WORK/$1.cg"; }

# The identity store is filled natively (fast), then the same home is served under callgrind.
start fill -- --auth
password=$(sed -n 's/.*password "\([^"]*\)".*/\1/p' "$WORK/fill.err" | head -n1)
token=$(curl -sf "$URL/token" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$password\"}" | json '["access_token"]')
curl -sf -X PUT "$URL/v1/admin/users/1/password" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"new_password\":\"bench-password-1\",\"old_password\":\"$password\"}" >/dev/null
token=$(curl -sf "$URL/token" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"bench-password-1"}' | json '["access_token"]')
python3 - "$URL" "$token" "$DB_KEYS" <<'EOF'
import http.client, json, sys, urllib.parse
url, token, n = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection(url.hostname, url.port)
for i in range(n):
    c.request("POST", "/v1/admin/keys", json.dumps({"name": f"k{i}"}),
              {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
EOF
key=$(curl -sf -X POST "$URL/v1/admin/keys" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name":"probe"}' | json '["key"]')
stop "$PID"

CONFIG_KEY="sk-$(head -c 512 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | head -c 13)"
cat >"$WORK/auth.json" <<EOF
{
  "auth_config": {"algorithm": "HS256", "secret_key": "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')", "token_expire_in_minutes": 60},
  "user_config": [
    {"username": "bench", "password": "bench-password-1", "permissions": ["models:list", "models:read"],
     "api_keys": ["$CONFIG_KEY"]}
  ]
}
EOF

# send N KEY: N GET /v1/models with KEY on one keep-alive connection to $URL, all 200.
send() {
    python3 - "$URL" "$2" "$1" <<'EOF'
import http.client, sys, urllib.parse
url, key, n = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
for _ in range(n):
    c.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
EOF
}

# count NAME KEY FLAGS...: instructions per request of REQUESTS counted requests.
count() {
    local name=$1 bearer=$2
    shift 2
    # shellcheck disable=SC2046
    start "$name" $(grind "$name") -- "$@"
    send 200 "$bearer"
    callgrind_control -i on "$PID" >/dev/null
    send "$REQUESTS" "$bearer"
    callgrind_control -i off "$PID" >/dev/null
    callgrind_control -d "$PID" >/dev/null
    stop "$PID"
    # The dump holds the counted requests; the file written at exit holds nothing more
    # (instrumentation was off by then), so the files' sum is the requests' count.
    local total
    total=$(cat "$WORK/$name".cg* | awk '/^(summary|totals):/ {s += $2} END {printf "%.0f", s}')
    echo "$name $total" >>"$WORK/counts"
    echo "$name: $total instructions in $REQUESTS requests" >&2
}

: >"$WORK/counts"
count off "$key"
count config "$CONFIG_KEY" --auth-config "$WORK/auth.json" --no-identity-store
cp -r "$WORK/fill" "$WORK/store"
count store "$key" --auth

python3 - "$WORK/counts" "$REQUESTS" "$DB_KEYS" <<'EOF'
import sys
counts = dict(line.split() for line in open(sys.argv[1]))
n, keys = int(sys.argv[2]), int(sys.argv[3])
off = int(counts["off"]) / n
print(f"| user-space instructions per GET /v1/models ({n} requests, one keep-alive connection) | per request | over auth off |")
print("|---|---|---|")
print(f"| auth off (the same Authorization header sent) | {off:,.0f} | |")
for name, label in (("config", "config-file api key (--auth-config, --no-identity-store)"),
                    ("store", f"identity-store api key among {keys + 1} keys (--auth)")):
    v = int(counts[name]) / n
    print(f"| {label} | {v:,.0f} | {v / off - 1:+.2%} |")
EOF

# Where the store key's instructions go: each function's own instructions per request, the
# biggest growth over auth off.
python3 - "$WORK/off.cg.1" "$WORK/store.cg.1" "$REQUESTS" "$TOP" <<'EOF'
import re, subprocess, sys
def self_counts(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+\S*?:(.*?)(?: \[[^\]]*\])?$", line)
        if m and "PROGRAM TOTALS" not in line:
            counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return counts
off, store = self_counts(sys.argv[1]), self_counts(sys.argv[2])
n, top = int(sys.argv[3]), int(sys.argv[4])
rows = sorted(((store.get(k, 0) - off.get(k, 0)) / n, k) for k in set(off) | set(store))
print()
print(f"Functions whose own instructions per request grow most with the store key (top {top}):")
print()
print("| store - off, per request | function |")
print("|---|---|")
for d, k in sorted(rows, reverse=True)[:top]:
    print(f"| {d:+,.0f} | `{k[:110]}` |")
EOF
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.cg* "$KEEP"/; fi
