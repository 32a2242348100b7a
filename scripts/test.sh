#!/usr/bin/env bash
# The whole test suite: every crate's unit and integration tests and the end-to-end tests
# that start the real binaries on 127.0.0.1 (port 0), then the compatibility tests of the real
# Python SDKs (xinference-client, openai) against the real binary, then the web UI in headless
# Chromium, and last the CUDA build compiled and linked (no GPU needed; docs/gpu.md). The
# single sign-on tests start a real OpenID provider (npm's oidc-provider, which xi-testkit
# installs into tests/oidc with `npm ci` on first use). The fuzz targets are built and each run
# briefly on its seeds (docs/fuzzing.md). Run from anywhere; extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL for the tests that start a throwaway server of their own (installs Debian's
# package when missing; starts no server).
scripts/install-postgres.sh >/dev/null
# espeak-ng for the speech-to-text tests, which synthesise known sentences (Debian's package).
scripts/install-espeak.sh >/dev/null
cargo test --workspace --locked "$@"
scripts/compat-test.sh
scripts/browser-test.sh
FUZZ_PROFILE=dev fuzz/run.sh "${FUZZ_SECONDS:-5}"
scripts/build-cuda.sh --ci
