#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, postgres, psql) are installed, for the tests
# that start a throwaway server of their own (xi_testkit::postgres::TempPostgres), and prints
# the directory that holds them. Idempotent: when `initdb` is found ($XI_PG_BIN, then PATH, then
# the highest /usr/lib/postgresql/*/bin) it only prints that directory; otherwise it installs
# Debian's `postgresql` package with apt-get (sudo only when not root). It starts no server of
# its own, and asks Debian's package not to create its default "main" cluster (the tests never
# use one: each starts its own cluster in a temp dir, on a Unix socket only).
set -euo pipefail

# Prints the directory of the first `initdb` found (symlinks resolved, so that postgres and
# psql of the same version sit next to it); fails when there is none.
find_bin_dir() {
    local initdb=""
    if [[ -n "${XI_PG_BIN:-}" && -x "$XI_PG_BIN/initdb" ]]; then
        initdb="$XI_PG_BIN/initdb"
    elif command -v initdb >/dev/null 2>&1; then
        initdb="$(command -v initdb)"
    else
        local dir
        dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
        if [[ -n "$dir" && -x "$dir/initdb" ]]; then
            initdb="$dir/initdb"
        fi
    fi
    [[ -n "$initdb" ]] || return 1
    dirname "$(readlink -f "$initdb")"
}

if find_bin_dir; then
    exit 0
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
    sudo=(sudo)
fi

# Debian's postgresql-common creates (and starts) a "main" cluster when a server package is
# installed; this drop-in of its createcluster.conf turns that off.
"${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" |
    "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/xinference-rs-tests.conf >/dev/null

echo "install-postgres.sh: installing Debian's postgresql package" >&2
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends postgresql >&2; then
    "${sudo[@]}" apt-get update >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends postgresql >&2
fi

if ! find_bin_dir; then
    echo "install-postgres.sh: postgresql is installed but no initdb was found" >&2
    exit 1
fi
