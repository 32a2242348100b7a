#!/usr/bin/env bash
# Builds xinference-rs with the `cuda` feature on a machine with neither a CUDA toolkit nor a
# GPU (docs/gpu.md):
#   - the CUDA 13.0 compiler comes from NVIDIA's PyPI wheels (one `pip install --target`, cached);
#   - candle links the CUDA libraries dynamically: libcudart from the wheels, and for libcuda,
#     libcublas, libcublasLt, libcurand and libnvrtc small stub libraries generated here (one
#     empty function per symbol cudarc declares, the real sonames), so the binary records the
#     real libraries, which the GPU host provides at run time;
#   - CUDA_COMPUTE_CAP picks the GPU generation the kernels are compiled for (default 90).
# Nothing third-party is copied into the repository; everything lands under the cache folder.
#
#   scripts/build-cuda.sh            release build of xinference-local and xinference (prints where)
#   scripts/build-cuda.sh --ci       what CI runs: the launchers compiled and linked, dev profile
#   scripts/build-cuda.sh --check    type-check every target with the feature (no linking)
#   scripts/build-cuda.sh --bench    release build of the GPU bench, packed into bench/gpu/dist/
#   scripts/build-cuda.sh --env      print the build variables (to run cargo yourself)
#
# Environment: CUDA_COMPUTE_CAP (90), XI_CUDA_CACHE ($HOME/.cache/xinference-rs: wheels, stubs),
# XI_CUDA_TARGET_DIR ($XI_CUDA_CACHE/target-cuda). Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
case "${1:-}" in
--ci | --check | --bench | --env)
    mode="${1#--}"
    shift
    ;;
-h | --help)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

cache="${XI_CUDA_CACHE:-$HOME/.cache/xinference-rs}"
wheels="$cache/cuda-wheels"
link="$cache/cuda-link"
export CARGO_TARGET_DIR="${XI_CUDA_TARGET_DIR:-$cache/target-cuda}"

# CUDA 13.0 exactly: a newer nvcc writes a PTX ISA that the R580 drivers may refuse.
packages=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
if [[ "$(cat "$wheels/.installed" 2>/dev/null)" != "${packages[*]}" ]]; then
    echo "build-cuda: installing the CUDA compiler wheels into $wheels" >&2
    rm -rf "$wheels"
    mkdir -p "$wheels"
    # One call: a second `--target` install into the same folder does not merge.
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$wheels" "${packages[@]}"
    echo "${packages[*]}" >"$wheels/.installed"
fi
cu="$wheels/nvidia/cu13"
export NVCC="$cu/bin/nvcc"
[[ -x "$NVCC" ]] || { echo "build-cuda: no nvcc at $NVCC" >&2; exit 1; }
cudart=$(ls "$cu"/lib/libcudart.so.13* | head -n 1)

# The link stubs, from the symbols cudarc declares (regenerated when cudarc's version changes).
cudarc=$(cargo metadata --locked --format-version 1 --features cuda 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(p["manifest_path"].rsplit("/", 1)[0]); break')
[[ -n "$cudarc" ]] || { echo "build-cuda: cudarc is not in the dependency graph" >&2; exit 1; }
stamp="$cudarc $cudart"
if [[ "$(cat "$link/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$link"
    mkdir -p "$link/lib"
    for entry in driver:cuda:libcuda.so.1 cublas:cublas:libcublas.so.13 \
        cublaslt:cublasLt:libcublasLt.so.13 curand:curand:libcurand.so.10 nvrtc:nvrtc:libnvrtc.so.13; do
        IFS=: read -r module name soname <<<"$entry"
        grep -hoE '^\s+fn [A-Za-z_][A-Za-z_0-9]*\(' "$cudarc/src/$module/sys/mod.rs" |
            sed -E 's/^\s+fn //; s/\($//' | sort -u | sed 's/.*/void &(void) {}/' >"$link/$name.c"
        gcc -shared -fPIC -Wl,-soname,"$soname" -o "$link/lib/$soname" "$link/$name.c"
        ln -sf "$soname" "$link/lib/lib$name.so"
    done
    ln -sf "$cudart" "$link/lib/libcudart.so"
    echo "$stamp" >"$link/.stamp"
fi

# cudarc adds $CUDA_HOME/lib to the link search path; nvcc is found through NVCC.
export CUDA_HOME="$link"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
# The CUDA libraries are found at run time through LD_LIBRARY_PATH, or next to the binary.
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,\$ORIGIN"

started=$SECONDS
case "$mode" in
env)
    for v in NVCC CUDA_HOME CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION RUSTFLAGS CARGO_TARGET_DIR; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    exit 0
    ;;
check)
    cargo check --locked --features cuda --workspace --all-targets "$@"
    ;;
ci)
    # Nothing runs these binaries: unoptimised dependencies and no debug info keep a cold CI
    # build short (the checks are the same: compile, link, start).
    cargo build --locked --features cuda --bins \
        --config 'profile.dev.package."*".opt-level=0' \
        --config 'profile.dev.package.xi-engine.opt-level=0' \
        --config 'profile.dev.debug=false' "$@"
    # It also starts (every CUDA symbol it uses binds, to the stubs here): a missing library or
    # symbol would stop it before main.
    LD_LIBRARY_PATH="$link/lib:$cu/lib" "$CARGO_TARGET_DIR/debug/xinference-local" --version
    echo "build-cuda: the cuda build compiles and links (sm_$CUDA_COMPUTE_CAP, $((SECONDS - started)) s)"
    ;;
release)
    cargo build --locked --release --features cuda --bin xinference-local --bin xinference "$@"
    echo "build-cuda: $CARGO_TARGET_DIR/release/xinference-local (sm_$CUDA_COMPUTE_CAP, $((SECONDS - started)) s)"
    echo "build-cuda: run it where the NVIDIA driver and the CUDA 13 libraries are (LD_LIBRARY_PATH=/usr/local/cuda/lib64)"
    ;;
bench)
    # One cargo call, so that both binaries share one feature resolution (and one build).
    cargo build --locked --release -p xinference -p xi-engine --features xinference/cuda \
        --bin xinference-local --example gpu_bench "$@"
    dist=bench/gpu/dist
    rm -rf "$dist"
    mkdir -p "$dist"
    for bin in examples/gpu_bench xinference-local; do
        strip -o "$dist/${bin#examples/}" "$CARGO_TARGET_DIR/release/$bin"
        xz -T0 -6 -f "$dist/${bin#examples/}"
    done
    # A real embedding model for the GPU check, in f16 so that everything stays under the
    # device tool's 64 MiB carry limit.
    minilm="$(bash scripts/fetch-test-models.sh)/all-MiniLM-L6-v2"
    # The CUDA build starts here too: the stubs stand in for the driver's libraries.
    LD_LIBRARY_PATH="$link/lib:$cu/lib" "$CARGO_TARGET_DIR/release/examples/gpu_bench" \
        pack-minilm "$minilm" "$cache/minilm-f16"
    tar -cJf "$dist/minilm-f16.tar.xz" -C "$cache" minilm-f16
    ls -l "$dist"
    echo "build-cuda: bench/gpu/dist ($(du -sh "$dist" | cut -f1), sm_$CUDA_COMPUTE_CAP, $((SECONDS - started)) s): carry it to the GPU host and run bench/gpu/run.sh"
    ;;
esac
