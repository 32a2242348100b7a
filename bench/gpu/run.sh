#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU (see README.md). Needs bench/gpu/dist/ from
# `scripts/build-cuda.sh --bench` (the CUDA build of gpu_bench and xinference-local, and
# all-MiniLM-L6-v2 in f16), python3 with torch and safetensors, and the CUDA 13 libraries.
#
# 1. Correctness on the GPU: the tiny reference LLMs against transformers' logits and greedy
#    tokens (f32); real all-MiniLM-L6-v2 embeddings in f16, bf16 and f32 against the CPU kernels
#    (goal: max abs diff <= 1e-3); a random Qwen2.5-0.5B-shaped LLM's greedy tokens on the GPU
#    against the CPU kernels (f32, goal: equal).
# 2. Speed against the rooflines: decode tokens/s (one stream and 8) of the Qwen2.5-0.5B shape in
#    bf16 and Q8_0 vs memory bandwidth; embeddings/s of a bge-base shape vs matmul throughput.
# 3. The server: xinference-local lists the GPU, launches a model with n_gpu=1, serves it, and
#    refuses n_gpu=2 naming the GPU it has.
#
# Results: one JSON object per line in $OUT/results.jsonl (OUT defaults to bench/gpu/results/
# latest), the GPU in $OUT/gpu.txt, the server's log in $OUT/xinference-local.log.
#
# A dry run without a GPU (checks the script, not the GPU): CPU builds of the two binaries, the
# portable path on the CPU, small sizes:
#   DEVICE=cpu QUICK=1 GPU_BENCH=target/release/examples/gpu_bench \
#     XINFERENCE_LOCAL=target/release/xinference-local bench/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

out="${OUT:-bench/gpu/results/latest}"
work="${WORK:-/tmp/xi-gpu-bench}"
mkdir -p "$out" "$work"
dist=bench/gpu/dist
device="${DEVICE:-cuda:0}"
for f in gpu_bench.xz xinference-local.xz minilm-f16.tar.xz; do
    [[ -f "$dist/$f" ]] || { echo "run.sh: $dist/$f is missing: run scripts/build-cuda.sh --bench first" >&2; exit 1; }
done

# The CUDA 13 libraries: the system's, and those of the python environment's torch wheels.
torch_libs=$(python3 -c 'import os, nvidia; print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${torch_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

gpu_bench="${GPU_BENCH:-$work/gpu_bench}"
server="${XINFERENCE_LOCAL:-$work/xinference-local}"
[[ -n "${GPU_BENCH:-}" ]] || xz -dc "$dist/gpu_bench.xz" >"$gpu_bench"
[[ -n "${XINFERENCE_LOCAL:-}" ]] || xz -dc "$dist/xinference-local.xz" >"$server"
chmod +x "$gpu_bench" "$server"
tar -xJf "$dist/minilm-f16.tar.xz" -C "$work"
(nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version,compute_cap --format=csv || true) | tee "$out/gpu.txt"
ldd "$gpu_bench" | grep -E 'cuda|cublas|curand|nvrtc' | tee -a "$out/gpu.txt" || true

# QUICK=1: small sizes (dry runs).
embed_sizes=() llm_sizes=()
if [[ "${QUICK:-0}" == 1 ]]; then
    embed_sizes=(--batch 8 --seq 32 --repeat 1)
    llm_sizes=(--prompt 16 --gen 4 --streams 2 --repeat 1 --check-tokens 4)
fi

started=$SECONDS
python3 bench/gpu/make_models.py "$work" qwen2.5-0.5b bge-base
echo "run.sh: random-weight models written in $((SECONDS - started)) s" >&2

bench() {
    echo "+ gpu_bench $*" >&2
    "$gpu_bench" "$@" --device "$device" | tee -a "$out/results.jsonl"
}
for name in llama qwen2 qwen3; do
    bench tiny "crates/engine/tests/fixtures/tiny_llm/$name"
done
# (`${a[@]+"${a[@]}"}`: empty arrays expand safely under `set -u` on old bash too.)
bench embed "$work/minilm-f16" ${embed_sizes[@]+"${embed_sizes[@]}"} \
    --sentences crates/engine/tests/fixtures/minilm_embeddings.json
bench embed "$work/bge-base-random" ${embed_sizes[@]+"${embed_sizes[@]}"} --dtypes f16,bf16
bench llm "$work/qwen2.5-0.5b-random" ${llm_sizes[@]+"${llm_sizes[@]}"} --dtype bf16
bench llm "$work/qwen2.5-0.5b-random" ${llm_sizes[@]+"${llm_sizes[@]}"} --dtype bf16 \
    --requantize q8_0 --check-tokens 0
if [[ "${LLAMA_1B:-0}" == 1 ]]; then
    python3 bench/gpu/make_models.py "$work" llama-3.2-1b
    bench llm "$work/llama-3.2-1b-random" ${llm_sizes[@]+"${llm_sizes[@]}"} --dtype bf16 --check-tokens 0
fi

python3 bench/gpu/serve_check.py "$server" "$work/minilm-f16" "$out" | tee -a "$out/results.jsonl"
echo "run.sh: done in $((SECONDS - started)) s; results in $out/results.jsonl" >&2
