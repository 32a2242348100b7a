#!/usr/bin/env bash
# Browser tests of the web UI: headless Debian Chromium driven by playwright-core (npm; it never
# downloads a browser) against the real xinference-local, with auth on and off, serving the real
# test models, and single sign-on through a real OpenID Connect provider (tests/oidc, panva's
# oidc-provider). Screenshots of every step land in $BROWSER_TEST_OUT.
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

# 2. playwright-core and the test identity provider, exactly as their package-lock.json pin them.
npm_cache="${NPM_CACHE:-$HOME/.cache/xinference-rs/npm}"
(cd tests/browser && npm ci --no-audit --no-fund --prefer-offline --loglevel=error \
  --cache "$npm_cache")
# tests/oidc is shared with the Rust tests (xi-testkit's TestIdp installs it on first use): under
# their lock, and only when it lacks the pinned version, so a test's provider running meanwhile
# never loses its node_modules.
mkdir -p "$HOME/.cache/xinference-rs/npm"
(
  flock 9
  pinned=$(node -p 'require("./tests/oidc/package.json").dependencies["oidc-provider"]')
  installed=$(node -p 'try { require("./tests/oidc/node_modules/oidc-provider/package.json").version } catch { "" }')
  if [ "$pinned" != "$installed" ]; then
    cd tests/oidc && npm ci --no-audit --no-fund --prefer-offline --loglevel=error --cache "$npm_cache"
  fi
) 9>"$HOME/.cache/xinference-rs/npm/xi-testkit-oidc.lock"

# 3. The binary and the test models.
if [ -z "${XINFERENCE_LOCAL:-}" ]; then
  cargo build --locked --quiet --bin xinference-local
  XINFERENCE_LOCAL="${CARGO_TARGET_DIR:-target}/debug/xinference-local"
fi
XINFERENCE_LOCAL=$(cd "$(dirname "$XINFERENCE_LOCAL")" && pwd)/$(basename "$XINFERENCE_LOCAL")
models=$(scripts/fetch-test-models.sh)

# 4. Three servers on free ports: auth with a config file, auth with the identity store alone,
# and no auth; and a fourth with the identity store and single sign-on through the test
# identity provider (also on a free port). Always stopped at the end.
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

# The test identity provider: client xi-web accepts any http://127.0.0.1:<port> redirect back,
# so the browser must reach the SSO server as 127.0.0.1 (its redirect_uri follows the Host).
idp_secret=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
printf '%s' "$idp_secret" >"$work/idp-secret"
node tests/oidc/provider.mjs --port 0 --client-secret "$idp_secret" --ignore-stdin \
  </dev/null >"$work/idp.out" 2>"$out/idp.log" &
idp_pid=$!
pids+=("$idp_pid")
idp_url=""
for _ in $(seq 1 300); do
  line=$(head -n 1 "$work/idp.out" 2>/dev/null || true)
  case "$line" in
    "oidc-provider listening on "*)
      idp_url=${line#oidc-provider listening on }
      break
      ;;
  esac
  if ! kill -0 "$idp_pid" 2>/dev/null; then
    echo "error: the test identity provider exited; its log:" >&2
    cat "$out/idp.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$idp_url" ]; then
  echo "error: the test identity provider did not start within 30 s" >&2
  exit 1
fi
cat >"$work/oidc.json" <<JSON
{
  "providers": [
    {
      "name": "testidp",
      "display_name": "Test IdP",
      "issuer": "$idp_url",
      "client_id": "xi-web",
      "client_secret_file": "$work/idp-secret",
      "scopes": ["openid", "profile", "email", "groups"],
      "group_permissions": {"xi-admins": ["admin"], "xi-users": ["models:list", "models:read"]}
    }
  ]
}
JSON
start_server sso --auth --oidc-config "$work/oidc.json"
sso_url=$server_url

# 5. The tests.
ui_dir=""
if [ -n "${XI_UI_DIR:-}" ]; then
  ui_dir=$(cd "$XI_UI_DIR" && pwd)
fi
(cd tests/browser && XI_URL="$auth_url" XI_OPEN_URL="$open_url" XI_SECRET="$secret" \
  XI_STORE_URL="$store_url" XI_STORE_LOG="$out/store-server.log" XI_UI_DIR="$ui_dir" \
  XI_SSO_URL="$sso_url" XI_SSO_LOG="$out/sso-server.log" XI_IDP_URL="$idp_url" \
  XI_MODELS="$models" BROWSER_TEST_OUT="$out" CHROMIUM="$chromium" \
  node --test --test-concurrency=1 --test-reporter=spec ui.test.mjs sso.test.mjs)

echo "browser tests passed in $(($(date +%s) - started)) s; screenshots in $out" >&2
