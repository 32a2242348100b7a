#!/usr/bin/env bash
# What `n` > 1 saves: CHOICES answers to one PROMPT_TOKENS-token prompt with SmolLM2 (Q4_1
# GGUF), forked from one read of the prompt (how the worker serves `n`) vs as many sequences
# that each read it, in one batch, alternating round by round in one process
# (crates/engine/examples/choices_bench.rs). Prints the example's JSON and a markdown table.
#
#   bench/llm_choices.sh   (ROUNDS 5, CHOICES 4, PROMPT_TOKENS 512, GEN_TOKENS 16)
#
# Nothing else should run meanwhile (the forward pass uses every core).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
CHOICES=${CHOICES:-4}
PROMPT_TOKENS=${PROMPT_TOKENS:-512}
GEN_TOKENS=${GEN_TOKENS:-16}
models_dir=$(scripts/fetch-test-models.sh)
cargo build --release -q -p xi-engine --example choices_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/choices_bench"
out=$("$bin" "$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf" --rounds "$ROUNDS" \
    --choices "$CHOICES" --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS")
echo "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
f = lambda k: " / ".join(f"{r[k][x]:.0f}" for x in ("min", "median", "max"))
print(f"| SmolLM2 Q4_1, n = {r['choices']}, {r['prompt_tokens']}-token prompt, {r['gen_tokens']} tokens each, {r['rounds']} rounds, {r['threads']} threads | min / median / max |")
print("|---|---|")
print(f"| every choice has its first token, ms: one shared read of the prompt | {f('first_tokens_ms_shared')} |")
print(f"| every choice has its first token, ms: each choice reads the prompt | {f('first_tokens_ms_apart')} |")
print(f"| whole answer, ms: shared | {f('total_ms_shared')} |")
print(f"| whole answer, ms: apart | {f('total_ms_apart')} |")
print(f"| prompt tokens computed: shared / apart | {r['prompt_tokens_computed_shared']} / {r['prompt_tokens_computed_apart']} |")
PY
