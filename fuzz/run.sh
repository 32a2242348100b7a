#!/usr/bin/env bash
# Runs fuzz targets with libFuzzer (cargo fuzz, on the stable toolchain). Usage:
#
#   fuzz/run.sh SECONDS [TARGET...]        each target for SECONDS (default: all targets)
#   FUZZ_RUNS=10000000 fuzz/run.sh 3600 gguf  a campaign: that many executions, or SECONDS,
#                                            whichever comes first
#   FUZZ_PROFILE=dev fuzz/run.sh 10          an unoptimised build (quicker to build: CI)
#
# The corpus grows under fuzz/corpus/<target> (not committed) from the committed seeds in
# fuzz/seeds/<target>; a crash, timeout or out-of-memory input is written to
# fuzz/artifacts/<target>/ and fails the run (its output: fuzz/logs/<target>.log). Limits:
# 2 GiB of RSS, 10 s per input. Builds
# without a sanitizer (`-s none`: the code under test is safe Rust; libFuzzer still finds
# panics, hangs and memory blow-ups) into $CARGO_TARGET_DIR/fuzz. Each target's final stats
# line is printed as "<target>: ..." for docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:?usage: fuzz/run.sh SECONDS [TARGET...]}"
shift
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/xinference-rs/target}/fuzz"
# `-s none` needs no nightly flag; a sanitizer build (`-s address`) needs RUSTC_BOOTSTRAP=1.
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
profile=()
if [ "${FUZZ_PROFILE:-release}" = dev ]; then
    profile=(--dev)
    target_dir="$target_dir-dev"
fi
cargo fuzz build -s none "${profile[@]}" --target-dir "$target_dir"

dict_for() {
    case "$1" in
        chat_template) echo "-dict=dicts/jinja.dict" ;;
        gguf | safetensors | stream_framing) echo "" ;;
        *) echo "-dict=dicts/json.dict" ;;
    esac
}

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target" logs
    limit=("-max_total_time=$seconds")
    if [ -n "${FUZZ_RUNS:-}" ]; then
        limit+=("-runs=$FUZZ_RUNS")
    fi
    log="logs/$target.log"
    # shellcheck disable=SC2046
    if ! cargo fuzz run -s none "${profile[@]}" --target-dir "$target_dir" "$target" "corpus/$target" "seeds/$target" -- \
        "${limit[@]}" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
        $(dict_for "$target") -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz target $target failed: see fuzz/$log and fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || echo "cov: ?")
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo "?")
    slowest=$(grep -o 'stat::slowest_unit_time_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "$target: $runs executions in ${secs}s, $cov, peak RSS $rss MB, slowest input ${slowest}s, 0 crashes, 0 timeouts"
done
