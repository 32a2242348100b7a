#!/usr/bin/env bash
# The cost of structured output: decode tokens/s of SmolLM2 (Q4_1 GGUF) held to a JSON schema
# vs free, 1 stream and STREAMS together, alternating round by round in one process
# (crates/engine/examples/constrained_bench.rs), and the token-mask time per token. Goal: the
# constraint costs <= 10 % at 8 streams. Prints the example's JSON and a markdown table.
#
#   bench/llm_constrained.sh   (ROUNDS 5, STREAMS 8, GEN_TOKENS 64)
#
# Nothing else should run meanwhile (the forward pass uses every core).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
STREAMS=${STREAMS:-8}
GEN_TOKENS=${GEN_TOKENS:-64}
models_dir=$(scripts/fetch-test-models.sh)
cargo build --release -q -p xi-engine --example constrained_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/constrained_bench"
out=$("$bin" "$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf" --rounds "$ROUNDS" \
    --streams "$STREAMS" --gen-tokens "$GEN_TOKENS")
echo "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
f = lambda k, d=1: " / ".join(f"{r[k][x]:.{d}f}" for x in ("min", "median", "max"))
n = r["streams"]
print(f"| SmolLM2 Q4_1, {r['rounds']} rounds, {r['gen_tokens']} tokens, {r['threads']} threads | min / median / max |")
print("|---|---|")
print(f"| decode tok/s, 1 stream, free | {f('decode_tok_s_free_1')} |")
print(f"| decode tok/s, 1 stream, JSON schema | {f('decode_tok_s_json_1')} |")
print(f"| JSON / free, 1 stream (paired per round) | {f('json_over_free_1', 3)} |")
print(f"| decode tok/s, {n} streams, free | {f('decode_tok_s_free_streams')} |")
print(f"| decode tok/s, {n} streams, JSON schema | {f('decode_tok_s_json_streams')} |")
print(f"| JSON / free, {n} streams (paired per round; goal >= 0.90) | {f('json_over_free_streams', 3)} |")
print(f"| token mask, us per token (mean) | {r['mask_us_per_token']:.0f} |")
print(f"| first grammar of the model (builds the token trie), ms | {r['first_compile_ms']:.0f} |")
print(f"| a grammar after that, ms | {r['compile_ms']:.1f} |")
PY
