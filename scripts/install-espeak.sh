#!/usr/bin/env bash
# Makes sure espeak-ng (Debian's speech synthesiser) is installed, for the speech-to-text tests
# that synthesise known sentences (xi_testkit::speech), and prints its path. Idempotent: when
# `espeak-ng` is on PATH it only prints it; otherwise it installs Debian's `espeak-ng` package
# with apt-get (sudo only when not root).
set -euo pipefail

if command -v espeak-ng >/dev/null 2>&1; then
    command -v espeak-ng
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    SUDO="sudo"
fi
echo "installing espeak-ng (Debian) for the speech-to-text tests" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng >&2 \
    || { $SUDO apt-get update >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng >&2; }
command -v espeak-ng
