#!/usr/bin/env bash
# Browser tests of the web UI: headless Debian Chromium driven by playwright-core (npm; it never
# downloads a browser) against the real xinference-local, with auth on and off, serving the real
# test models. Screenshots of every step land in $BROWSER_TEST_OUT.
#
#   BROWSER_TEST_OUT   screenshots and server logs (default: target/browser-test)
#   CHROMIUM           the browser (default: /usr/bin/chromium, installed with apt-get if missing)
#   XINFERENCE_LOCAL   binary to test (default: built here, debug profile)
#   NPM_CACHE          npm's download cache (default: $HOME/.cache/xinference-rs/npm)
#   XI_UI_DIR          serve the UI files from this folder instead of the binary's (UI work without
#                      a rebuild; e.g. crates/supervisor/ui); unset in CI
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

out="${BROWSER_TEST_OUT:-target/browser-test}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.png "$out"/*.log

# 1. Chromium from Debian (CI is a fresh machine where we are root).
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ "$chromium" != /usr/bin/chromium ]; then
    echo "error: CHROMIUM=$chromium is not an executable" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "error: /usr/bin/chromium is missing; install it: sudo apt-get install -y --no-install-recommends chromium" >&2
    exit 1
  fi
  echo "installing Debian's chromium ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  if [ ! -x "$chromium" ]; then
    echo "error: apt-get did not install $chromium" >&2
    exit 1
  fi
fi

# 2. playwright-core, exactly as package-lock.json pins it.
(cd tests/browser && npm ci --no-audit --no-fund --prefer-offline --loglevel=error \
  --cache "${NPM_CACHE:-$HOME/.cache/xinference-rs/npm}")

# 3. The binary and the test models.
if [ -z "${XINFERENCE_LOCAL:-}" ]; then
  cargo build --locked --quiet --bin xinference-local
  XINFERENCE_LOCAL="${CARGO_TARGET_DIR:-target}/debug/xinference-local"
fi
XINFERENCE_LOCAL=$(cd "$(dirname "$XINFERENCE_LOCAL")" && pwd)/$(basename "$XINFERENCE_LOCAL")
models=$(scripts/fetch-test-models.sh)

# 4. Three servers on free ports: auth with a config file, auth with the identity store alone,
# and no auth. Always stopped at the end.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
cat >"$work/auth.json" <<JSON
{
  "auth_config": {"algorithm": "HS256", "secret_key": "$secret", "token_expire_in_minutes": 30},
  "user_config": [
    {"username": "admin", "password": "admin-pw", "permissions": ["admin"]},
    {"username": "lister", "password": "lister-pw", "permissions": ["models:list"]}
  ]
}
JSON

server_url=""
start_server() { # name, extra flags...
  local name=$1
  shift
  # HF_ENDPOINT: a closed local port, so nothing ever reaches the real hub.
  HF_ENDPOINT=http://127.0.0.1:9 XINFERENCE_DOWNLOAD_MAX_ATTEMPTS=1 \
    "$XINFERENCE_LOCAL" -H 127.0.0.1 -p 0 --home "$work/$name-home" "$@" \
    >"$work/$name.out" 2>"$out/$name-server.log" &
  local pid=$!
  pids+=("$pid")
  local line=""
  for _ in $(seq 1 600); do
    line=$(head -n 1 "$work/$name.out" 2>/dev/null || true)
    case "$line" in
      "xinference-local listening on "*)
        server_url=${line#xinference-local listening on }
        return 0
        ;;
    esac
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: the $name server exited; its log:" >&2
      cat "$out/$name-server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "error: the $name server did not start within 60 s" >&2
  exit 1
}
start_server auth --auth-config "$work/auth.json"
auth_url=$server_url
start_server store --auth
store_url=$server_url
start_server open
open_url=$server_url

# 5. The tests.
ui_dir=""
if [ -n "${XI_UI_DIR:-}" ]; then
  ui_dir=$(cd "$XI_UI_DIR" && pwd)
fi
(cd tests/browser && XI_URL="$auth_url" XI_OPEN_URL="$open_url" XI_SECRET="$secret" \
  XI_STORE_URL="$store_url" XI_STORE_LOG="$out/store-server.log" XI_UI_DIR="$ui_dir" \
  XI_MODELS="$models" BROWSER_TEST_OUT="$out" CHROMIUM="$chromium" \
  node --test --test-concurrency=1 --test-reporter=spec ui.test.mjs)

echo "browser tests passed in $(($(date +%s) - started)) s; screenshots in $out" >&2
