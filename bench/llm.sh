#!/usr/bin/env bash
# LLM decode/prefill benchmark: xinference-rs's engine and llama.cpp on the same GGUF files, in
# the same run, alternating (A B A B) so both see the same machine noise.
#
#   bench/llm.sh [PROMPT_TOKENS] [GEN_TOKENS] [STREAMS]
#
# Needs: the test models (scripts/fetch-test-models.sh), Python 3 with pip. llama.cpp comes from
# PyPI's llama-cpp-python, built from source once into $HOME/.cache/xi-bench-venv (minutes).
# Writes bench/results/llm.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${1:-128}
GEN=${2:-128}
STREAMS=${3:-8}
THREADS=${THREADS:-$(nproc)}
VENV=${XI_BENCH_VENV:-$HOME/.cache/xi-bench-venv}
LLAMA_CPP_VERSION=0.3.36

models_dir=$(scripts/fetch-test-models.sh)
q4="$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
q8="$models_dir/bench/SmolLM2-135M-Instruct.Q8_0.gguf"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    echo "building llama-cpp-python $LLAMA_CPP_VERSION (llama.cpp from source, native CPU flags)..." >&2
    "$VENV/bin/pip" install -q cmake ninja
    # Native flags (AVX-512, VNNI), but no AMX: llama.cpp's AMX path segfaults on the first eval
    # on Sapphire Rapids here (upstream issue ggml-org/llama.cpp#20824).
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'" \
        "$VENV/bin/pip" install -q "llama-cpp-python==$LLAMA_CPP_VERSION"
fi
if [ ! -f "$q8" ]; then
    mkdir -p "$(dirname "$q8")"
    # llama.cpp's own quantizer: Q4_1 -> Q8_0 (the same weights, re-quantized).
    "$VENV/bin/python" - "$q4" "$q8" <<'EOF'
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
params.allow_requantize = True
params.nthread = 2
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params))
sys.exit(rc)
EOF
fi

cargo build --release -q -p xi-engine --example llm_bench --example random_gguf
ours=target/release/examples/llm_bench
# A model of a real shape (Llama-3.2-1B's layers, SmolLM2's vocabulary) with random weights:
# its output is noise, but its speed is that of a 1B model.
big="$models_dir/bench/random-llama-3.2-1b.Q4_1.gguf"
if [ ! -f "$big" ]; then
    target/release/examples/random_gguf "$q4" llama-3.2-1b q4_1 "$big"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for round in 1 2; do
    for model in "$q4" "$q8" "$big"; do
        name=$(basename "$model" .gguf)
        echo "round $round: $name" >&2
        RAYON_NUM_THREADS=$THREADS "$ours" "$model" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" \
            --streams "$STREAMS" --repeat 2 >"$out/ours-$name-$round.json"
        "$VENV/bin/python" bench/llm_llamacpp.py --model "$model" --threads "$THREADS" \
            --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --repeat 2 \
            >"$out/llamacpp-$name-$round.json" 2>/dev/null
    done
done

python3 - "$out" "$PROMPT" "$GEN" "$STREAMS" "$THREADS" >bench/results/llm.md <<'EOF'
import glob, json, os, sys, datetime
out, prompt, gen, streams, threads = sys.argv[1:]
def best(prefix, name):
    runs = [json.load(open(f)) for f in glob.glob(f"{out}/{prefix}-{name}-*.json")]
    keys = ["prefill_tok_s", "decode_tok_s", "decode_tok_s_streams"]
    b = {k: max(r.get(k) or 0 for r in runs) for k in keys}
    b["ttft_ms"] = min(r["ttft_ms"] for r in runs)
    b["version"] = runs[0].get("version", "")
    return b
print(f"# LLM engine vs llama.cpp ({datetime.date.today()})\n")
print(f"SmolLM2-135M-Instruct (Q4_1 from its wheel, Q8_0 re-quantized from it by llama.cpp) and "
      f"a random-weight model of Llama-3.2-1B's shape (1B: 16 layers, hidden 2048, SmolLM2's "
      f"49k vocabulary); prompt {prompt} tokens, {gen} generated tokens (greedy, end token "
      f"ignored), {threads} threads, best of 2 rounds x 2 repeats, the engines alternating. "
      f"Produced by `bench/llm.sh`.\n")
print("| model | engine | prefill tok/s | decode tok/s (1 stream) | TTFT ms | "
      f"decode tok/s ({streams} streams) | {streams}-stream speed-up |")
print("|---|---|---|---|---|---|---|")
for name in ["SmolLM2-135M-Instruct.Q4_1", "SmolLM2-135M-Instruct.Q8_0", "random-llama-3.2-1b.Q4_1"]:
    o, l = best("ours", name), best("llamacpp", name)
    label = name.replace("SmolLM2-135M-Instruct.", "SmolLM2 ")
    print(f"| {label} | xinference-rs | {o['prefill_tok_s']:.0f} | {o['decode_tok_s']:.1f} | "
          f"{o['ttft_ms']:.0f} | {o['decode_tok_s_streams']:.1f} | "
          f"{o['decode_tok_s_streams'] / o['decode_tok_s']:.2f}x |")
    print(f"| {label} | llama.cpp {l['version']} | {l['prefill_tok_s']:.0f} | "
          f"{l['decode_tok_s']:.1f} | {l['ttft_ms']:.0f} | - | - |")
    print(f"| {label} | **ratio** | {o['prefill_tok_s'] / l['prefill_tok_s']:.2f}x | "
          f"{o['decode_tok_s'] / l['decode_tok_s']:.2f}x | {l['ttft_ms'] / o['ttft_ms']:.2f}x faster | | |")
EOF
cat bench/results/llm.md
