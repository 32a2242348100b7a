#!/usr/bin/env bash
# Before/after benchmark of the LLM engine across a change: the engine's own `llm_bench` built
# at two revisions, run alternately (A B A B ...) on the same model files so both see the same
# machine noise. For refactors that must not cost speed.
#
#   bench/llm_ab.sh BEFORE_REV AFTER_REV [ROUNDS]
#
# Each round runs both binaries on SmolLM2-135M Q4_1 (as shipped) and requantized to Q8_0:
# prefill of a 128-token prompt, decode of 64 tokens for one stream and for 4 streams, each
# the best of 3 (llm_bench --repeat 3). Reports min/median/max per side and the median of the
# per-round after/before ratios (paired, so slow phases of the machine cancel out).
# BEFORE_BIN / AFTER_BIN use prebuilt binaries instead of building. Writes
# bench/results/llm_ab.md.
set -euo pipefail
cd "$(dirname "$0")/.."

BEFORE=${1:?usage: bench/llm_ab.sh BEFORE_REV AFTER_REV [ROUNDS]}
AFTER=${2:?usage: bench/llm_ab.sh BEFORE_REV AFTER_REV [ROUNDS]}
ROUNDS=${3:-6}
THREADS=${THREADS:-$(nproc)}
# shellcheck source=bench/llm_bench_pair.sh
source bench/llm_bench_pair.sh

results="$work/runs.jsonl"
for round in $(seq "$ROUNDS"); do
    for quant in none q8_0; do
        # Alternate which side goes first, so neither always runs on a warmer machine.
        order="before after"
        [ $((round % 2)) -eq 0 ] && order="after before"
        for side in $order; do
            flags=()
            [ "$quant" != none ] && flags=(--requantize "$quant")
            echo "round $round/$ROUNDS: $side $quant" >&2
            r=$(RAYON_NUM_THREADS=$THREADS "$work/$side.bin" "$q4" --prompt-tokens 128 --gen-tokens 64 \
                --streams 4 --repeat 3 "${flags[@]}")
            echo "{\"round\": $round, \"side\": \"$side\", \"quant\": \"$quant\", \"r\": $r}" >>"$results"
        done
    done
done

python3 - "$results" "$BEFORE" "$AFTER" "$THREADS" "$ROUNDS" >bench/results/llm_ab.md <<'EOF'
import json, statistics, sys, datetime, platform, subprocess
path, before, after, threads, rounds = sys.argv[1:]
runs = [json.loads(l) for l in open(path)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rev = lambda r: subprocess.run(["git", "rev-parse", "--short", r], capture_output=True, text=True).stdout.strip()
metrics = [("prefill_tok_s", "prefill tok/s (128-token prompt)"),
           ("decode_tok_s", "decode tok/s, 1 stream"),
           ("decode_tok_s_streams", "decode tok/s, 4 streams")]
print("# LLM engine before/after a change (`bench/llm_ab.sh`)\n")
print(f"- date: {datetime.date.today()}; machine: {cpu}, {threads} threads; {platform.system()} {platform.release()}")
print(f"- before: `{rev(before)}` ({before}); after: `{rev(after)}` ({after}); head: `{rev('HEAD')}`")
print(f"- {rounds} rounds, alternating which side runs first; each value is the best of 3 runs of llm_bench")
print("- ratio: median over rounds of after/before within the round (paired); > 1 means after is faster\n")
print("| model | metric | before min / median / max | after min / median / max | after/before (paired median) | paired quartiles |")
print("| --- | --- | --- | --- | --- | --- |")
for quant, label in [("none", "SmolLM2-135M Q4_1"), ("q8_0", "SmolLM2-135M Q8_0")]:
    for key, name in metrics:
        side = lambda s: {r["round"]: r["r"][key] for r in runs if r["side"] == s and r["quant"] == quant}
        b, a = side("before"), side("after")
        fmt = lambda v: f"{min(v):.1f} / {statistics.median(v):.1f} / {max(v):.1f}"
        ratios = [a[k] / b[k] for k in b if k in a and b[k] > 0]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        print(f"| {label} | {name} | {fmt(list(b.values()))} | {fmt(list(a.values()))} | {statistics.median(ratios):.3f} | {q1:.3f} - {q3:.3f} |")
EOF
cat bench/results/llm_ab.md
