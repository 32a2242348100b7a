# Sourced by bench/llm_ab.sh and bench/llm_ab_instructions.sh (not run by itself): the two
# `llm_bench` binaries of a before/after comparison, built at BEFORE and AFTER in temporary
# worktrees sharing one target dir (dependencies built once), or copied from BEFORE_BIN /
# AFTER_BIN. Sets `work` (a temp dir, removed on exit), `$work/before.bin`, `$work/after.bin`
# and `q4` (SmolLM2-135M Q4_1).
target=${XI_BENCH_TARGET:-$HOME/.cache/xi-bench-target}
models_dir=$(scripts/fetch-test-models.sh)
q4="$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
work=$(mktemp -d)
cleanup() {
    for side in before after; do
        [ -d "$work/$side" ] && git worktree remove --force "$work/$side" >/dev/null 2>&1
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Builds llm_bench at `rev` into $work/<side>.bin.
build() {
    local side=$1 rev=$2
    git worktree add -q --detach "$work/$side" "$rev"
    echo "building llm_bench at $rev..." >&2
    (cd "$work/$side" && CARGO_TARGET_DIR=$target cargo build --release -q -p xi-engine --example llm_bench)
    cp "$target/release/examples/llm_bench" "$work/$side.bin"
}
if [ -n "${BEFORE_BIN:-}" ]; then cp "$BEFORE_BIN" "$work/before.bin"; else build before "$BEFORE"; fi
if [ -n "${AFTER_BIN:-}" ]; then cp "$AFTER_BIN" "$work/after.bin"; else build after "$AFTER"; fi
