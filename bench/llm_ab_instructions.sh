#!/usr/bin/env bash
# Before/after a change, in instructions instead of seconds: the engine's `llm_bench` built at
# two revisions, each run once under callgrind (valgrind) on the same small workload. An
# instruction count does not depend on what else the machine is doing, so two runs of this
# script agree where two timed runs on a shared VM do not (bench/llm_ab.sh measures seconds).
#
#   bench/llm_ab_instructions.sh BEFORE_REV AFTER_REV      (BEFORE_BIN / AFTER_BIN: prebuilt)
#
# Workload: SmolLM2-135M Q4_1, a 16-token prompt, 4 new tokens, for one stream and for 4
# streams together (llm_bench --prompt-tokens 16 --gen-tokens 4 --streams 4 --repeat 1), one
# thread. valgrind reports no AVX-512 to the program, so the matrix products take the portable
# path (candle's quantized kernels) instead of our AVX-512 ones; the report splits the count
# into those kernels and everything else a step does (the decoder loop, attention, sampling),
# which is the code a refactor of the engine touches. Both runs go in parallel (one core
# each; counts are unaffected). Writes bench/results/llm_ab_instructions.md.
set -euo pipefail
cd "$(dirname "$0")/.."

BEFORE=${1:?usage: bench/llm_ab_instructions.sh BEFORE_REV AFTER_REV}
AFTER=${2:?usage: bench/llm_ab_instructions.sh BEFORE_REV AFTER_REV}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
# shellcheck source=bench/llm_bench_pair.sh
source bench/llm_bench_pair.sh

for side in before after; do
    echo "callgrind: $side (several minutes)..." >&2
    RAYON_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$work/$side.cg" \
        "$work/$side.bin" "$q4" --prompt-tokens 16 --gen-tokens 4 --streams 4 --repeat 1 \
        >"$work/$side.out" 2>"$work/$side.log" &
done
wait

# The inclusive counts of: the whole run, the engine's step (every forward pass and sampling),
# and candle's quantized matrix products inside it.
for side in before after; do
    callgrind_annotate --inclusive=yes "$work/$side.cg" 2>/dev/null | awk -v side="$side" '
        function n(s) { gsub(",", "", s); return s }
        /PROGRAM TOTALS/ { total = n($1) }
        /xi_engine::llm::.*::step \[/ && !step { step = n($1) }
        /<candle_core::quantized::QMatMul as candle_core::Module>::forward/ && !mm { mm = n($1) }
        END { print side, total, step, mm }'
done >"$work/counts"

python3 - "$work/counts" "$BEFORE" "$AFTER" >bench/results/llm_ab_instructions.md <<'PY'
import sys, datetime, subprocess
path, before, after = sys.argv[1:]
c = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(path)}
rev = lambda r: subprocess.run(["git", "rev-parse", "--short", r], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("# LLM engine before/after a change, in instructions (`bench/llm_ab_instructions.sh`)\n")
print(f"- date: {datetime.date.today()}; machine: {cpu}; valgrind callgrind, one thread")
print(f"- before: `{rev(before)}` ({before}); after: `{rev(after)}` ({after})")
print("- workload: SmolLM2-135M Q4_1, 16-token prompt, 4 new tokens, 1 stream and 4 streams (llm_bench --repeat 1)")
print("- matrix products on candle's portable quantized kernels (valgrind hides AVX-512 from the program)\n")
print("| instructions (Ir) | before | after | after/before |")
print("| --- | ---: | ---: | ---: |")
rows = [("whole run", 0), ("steps (forward passes and sampling)", 1), ("matrix products inside the steps", 2)]
for name, i in rows:
    b, a = c["before"][i], c["after"][i]
    print(f"| {name} | {b:,} | {a:,} | {a / b:.5f} |")
b = c["before"][1] - c["before"][2]
a = c["after"][1] - c["after"][2]
print(f"| steps without the matrix products | {b:,} | {a:,} | {a / b:.5f} |")
PY
cat bench/results/llm_ab_instructions.md
