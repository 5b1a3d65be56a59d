#!/usr/bin/env bash
# The official LaunchDarkly SDKs' own Redis big-segment stores against `segstore serve --redis`:
#   1. Python: launchdarkly-server-sdk's Redis.new_big_segment_store (pytest, in a venv at
#      tests/sdk-redis/python/.venv, from the pinned tests/sdk-redis/python/requirements.txt);
#   2. Node: @launchdarkly/node-server-sdk-redis's RedisBigSegmentStore (npm ci from the
#      committed package-lock.json, then node --test).
# Each suite runs twice: against a real redis-server first (SEGSTORE_REDIS_TARGET=redis, which
# checks the tests' own expectations), then against segstore (SEGSTORE_REDIS_TARGET=segstore).
# The same tests answering the same way on both is the differential check.
# SEGSTORE_REDIS_TARGETS="redis" (or "segstore") runs only that target.
# Idempotent: rerunning reuses the venv and reinstalls nothing already at the pinned version.
# Installs redis-server / redis-tools, openssl, python3-venv and nodejs with apt-get only when
# they are missing (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TARGET=$(cd "$(dirname "$TARGET")" && pwd)/$(basename "$TARGET")
SUITES=${SEGSTORE_REDIS_TARGETS:-redis segstore}

step() { echo "== sdk-redis: $*"; }

apt_updated=
apt_install() {
    step "apt-get install $*"
    if [ "$(id -u)" != 0 ]; then
        echo "error: $* missing and not running as root to install it" >&2
        exit 1
    fi
    if [ -z "$apt_updated" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server redis-tools
fi
redis-server --version
# The TLS tests make a self-signed certificate with the openssl CLI.
if ! command -v openssl >/dev/null; then
    apt_install openssl
fi

step "cargo build --bin segstore (the CLI and its serve command)"
cargo build --bin segstore
export SEGSTORE_CLI="$TARGET/debug/segstore"
[ -f "$SEGSTORE_CLI" ] || { echo "error: $SEGSTORE_CLI was not built" >&2; exit 1; }

export PYTHONDONTWRITEBYTECODE=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step "Python: venv at tests/sdk-redis/python/.venv with the pinned SDK, redis and pytest"
PYDIR=tests/sdk-redis/python
PY=$PYDIR/.venv/bin/python
if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv
fi
if ! "$PY" -c 'import sys' 2>/dev/null; then
    rm -rf "$PYDIR/.venv"
    if ! python3 -m venv "$PYDIR/.venv"; then
        apt_install python3-venv
        rm -rf "$PYDIR/.venv"
        python3 -m venv "$PYDIR/.venv"
    fi
fi
"$PY" -m pip install --quiet --disable-pip-version-check -r "$PYDIR/requirements.txt"
"$PY" -m pip show launchdarkly-server-sdk redis | grep -E '^(Name|Version):'

step "Node: npm ci in tests/sdk-redis/node"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
node --version
(cd tests/sdk-redis/node && npm ci --no-audit --no-fund)

for suite in $SUITES; do
    export SEGSTORE_REDIS_TARGET=$suite

    step "Python: pytest against $suite"
    # pytest exits 5 when it collects no tests, which fails this script like any failure.
    (cd "$PYDIR" && "$ROOT/$PY" -m pytest -q -rfEsxX -p no:cacheprovider .) | tee "$WORK/python-$suite.out"
    grep -Eq '^[0-9]+ passed' "$WORK/python-$suite.out" || {
        echo "error: no Python tests passed against $suite" >&2
        exit 1
    }

    step "Node: node --test against $suite"
    (cd tests/sdk-redis/node && node --test --test-reporter=tap test/*.test.js) | tee "$WORK/node-$suite.tap"
    grep -Eq '^# pass [1-9]' "$WORK/node-$suite.tap" || {
        echo "error: no Node tests passed against $suite" >&2
        exit 1
    }
    grep -Eq '^# fail 0$' "$WORK/node-$suite.tap" || {
        echo "error: Node tests failed against $suite" >&2
        exit 1
    }
done

step "all SDK Redis suites passed against: $SUITES"
