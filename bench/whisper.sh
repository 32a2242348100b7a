#!/usr/bin/env bash
# Speech-to-text benchmark (issue 19): xinference-rs's Whisper vs faster-whisper (float32, int8)
# vs transformers' pipeline on Whisper tiny.en, 2 threads each, loopback only; bounded (a few
# minutes). Writes the report to stdout:
#   bash bench/whisper.sh > bench/results/whisper.md
# Needs espeak-ng (scripts/install-espeak.sh) and the reference venv with faster-whisper and
# transformers (created at $REF_VENV on first use; large: PyTorch from PyPI). Builds
# target/release/xinference-local if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${REF_VENV:-$HOME/.cache/xi-ref-venv}"
if ! "$venv/bin/python" -c "import faster_whisper, transformers, torch, requests" 2>/dev/null; then
  echo "creating $venv (one time, several minutes) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch transformers safetensors faster-whisper numpy requests
fi
scripts/install-espeak.sh >/dev/null
bin="${XINFERENCE_LOCAL:-${CARGO_TARGET_DIR:-target}/release/xinference-local}"
[ -x "$bin" ] || cargo build --release --bin xinference-local
models=$(scripts/fetch-test-models.sh)

home=$(mktemp -d)
out=$(mktemp)
"$bin" -p 0 --home "$home" --threads 2 --log-level warn >"$out" 2>"$home/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$home" "$out"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
url=$(sed -n 's/^xinference-local listening on //p' "$out")
curl -sf "$url/v1/models" -H 'content-type: application/json' \
  -d "{\"model_uid\":\"stt\",\"model_name\":\"whisper-tiny.en\",\"model_type\":\"audio\",\"model_path\":\"$models/whisper-tiny.en\"}" >/dev/null
BENCH_BINARY="$(basename "$(dirname "$bin")")/xinference-local" "$venv/bin/python" bench/whisper_bench.py "$url" stt "$models"
