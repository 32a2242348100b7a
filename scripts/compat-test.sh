#!/usr/bin/env bash
# Compatibility tests: the real `xinference-client` (PyPI) and `openai` SDKs, unchanged, against
# the real xinference-local binary, and the served OpenAPI document through an independent
# validator (openapi-spec-validator). Creates a Python venv once (cached) and runs pytest.
#
#   COMPAT_VENV            venv location (default: $HOME/.cache/xinference-rs/compat-venv)
#   XINFERENCE_LOCAL       binary to test (default: built here, debug profile)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${COMPAT_VENV:-$HOME/.cache/xinference-rs/compat-venv}"
want="xinference-client==4.1.0 openai==3.57.0 pytest==9.2.0 numpy==2.4.6 safetensors==0.8.0 openapi-spec-validator==0.9.0"
if [ ! -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet $want
  echo "$want" > "$venv/.installed"
fi
if [ -z "${XINFERENCE_LOCAL:-}" ]; then
  cargo build --locked --quiet --bin xinference-local
  XINFERENCE_LOCAL="${CARGO_TARGET_DIR:-target}/debug/xinference-local"
fi
export XINFERENCE_LOCAL
# The speech-to-text test synthesises its audio with espeak-ng.
scripts/install-espeak.sh >/dev/null
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/compat
