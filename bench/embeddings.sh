#!/usr/bin/env bash
# Embeddings benchmark: xinference-rs (HTTP) vs sentence-transformers (in-process, PyTorch) on
# all-MiniLM-L6-v2, and dynamic batching on vs off. Bounded: about 2 minutes. Loopback only.
#
# Needs a Python venv with sentence-transformers (created at $BENCH_VENV on first use; large:
# PyTorch from PyPI) and builds target/release/xinference-local if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${BENCH_VENV:-$HOME/.cache/xi-bench-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  echo "creating $venv with sentence-transformers (one time, several minutes) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "sentence-transformers==5.1.1"
fi
bin="${XINFERENCE_LOCAL:-target/release/xinference-local}"
[ -x "$bin" ] || cargo build --release --bin xinference-local
models=$(scripts/fetch-test-models.sh)
model_dir="$models/all-MiniLM-L6-v2"

home=$(mktemp -d)
out=$(mktemp)
"$bin" -p 0 --home "$home" --log-level warn >"$out" 2>"$home/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$home" "$out"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
url=$(sed -n 's/^xinference-local listening on //p' "$out")

launch() { # uid batching
  curl -sf "$url/v1/models" -H 'content-type: application/json' \
    -d "{\"model_uid\":\"$1\",\"model_name\":\"all-MiniLM-L6-v2\",\"model_type\":\"embedding\",\"model_path\":\"$model_dir\",\"dynamic_batching\":$2}" >/dev/null
}
launch mini true
launch mini-nobatch false

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
# (b) single-sentence requests from 16 connections, batching on vs off, alternating rounds.
duration="${DURATION_S:-8}"
rate() { MODEL=$1 wrk -t2 -c16 -d"${duration}s" -s bench/embeddings.lua "$url" | awk '/Requests\/sec/ {print $2}'; }
on=(); off=()
for _ in 1 2; do on+=("$(rate mini)"); off+=("$(rate mini-nobatch)"); done
median2() { echo "$1 $2" | awk '{printf "%.0f", ($1 + $2) / 2}'; }
b_on=$(median2 "${on[@]}"); b_off=$(median2 "${off[@]}")

echo "## Embeddings, $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| measurement | xinference-rs | reference | ratio | goal |"
echo "|---|---|---|---|---|"
# PyTorch's OpenMP threads spin after each call and would steal the server's cores while it is
# timed; passive waiting makes the interleaved comparison fair to both.
OMP_WAIT_POLICY=PASSIVE "$venv/bin/python" bench/embeddings.py "$url" "$model_dir" "$pid"
echo "| (b) single-sentence requests, 16 connections, ${duration} s x 2 rounds (wrk) | $b_on req/s (batching on) | $b_off req/s (batching off) | $(echo "$b_on $b_off" | awk '{printf "%.2f", $1 / $2}')x the throughput | >= 3x |"
