#!/usr/bin/env bash
# Builds the C library (libsegstore.so) and the CLI, then tests what links against them:
#   1. a C program compiled against include/segstore.h (bindings/c/smoke.c);
#   2. the Python adapter under the official launchdarkly-server-sdk (pytest, in a venv at
#      bindings/python/.venv, from the pinned bindings/python/requirements*.txt);
#   3. the Node adapter under the official @launchdarkly/node-server-sdk (npm ci from the
#      committed package-lock.json, then node --test).
# Idempotent: rerunning reuses the venv and reinstalls nothing already at the pinned version.
# Installs python3-venv / nodejs with apt-get only when they are missing (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TARGET=$(cd "$(dirname "$TARGET")" && pwd)/$(basename "$TARGET")

step() { echo "== bindings: $*"; }

apt_install() {
    step "apt-get install $*"
    if [ "$(id -u)" != 0 ]; then
        echo "error: $* missing and not running as root to install it" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

step "cargo build --lib --bin segstore (libsegstore.so and the CLI)"
cargo build --lib --bin segstore
export SEGSTORE_LIB="$TARGET/debug/libsegstore.so"
export SEGSTORE_CLI="$TARGET/debug/segstore"
for f in "$SEGSTORE_LIB" "$SEGSTORE_CLI"; do
    [ -f "$f" ] || { echo "error: $f was not built" >&2; exit 1; }
done

step "C: compile bindings/c/smoke.c against include/segstore.h and run it"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"${CC:-cc}" -std=c99 -Wall -Wextra -pedantic -Werror -Iinclude -o "$WORK/smoke" \
    bindings/c/smoke.c -L"$TARGET/debug" -lsegstore
"$SEGSTORE_CLI" --dir "$WORK/store" init >/dev/null
printf 'user1\n' | "$SEGSTORE_CLI" --dir "$WORK/store" import --segment beta.g1 --hash-keys - >/dev/null
printf 'user1\n' | "$SEGSTORE_CLI" --dir "$WORK/store" import --segment alpha.g1 --excluded --hash-keys - >/dev/null
"$SEGSTORE_CLI" --dir "$WORK/store" mark-synced --at 42 >/dev/null
LD_LIBRARY_PATH="$TARGET/debug" "$WORK/smoke" "$WORK/store" \
    'CgQblGLKpKMbrDVn4Lbm/ZEAeH2yq0M9lvbReMq/zpA=' >"$WORK/smoke.out"
cat >"$WORK/smoke.expected" <<'OUT'
synchronized_on set 42
alpha.g1 false
beta.g1 true
check beta.g1 1
error segment is NULL
OUT
diff -u "$WORK/smoke.expected" "$WORK/smoke.out"
echo "C smoke test: ok"

step "Python: venv at bindings/python/.venv with the pinned SDK and pytest"
PY=bindings/python/.venv/bin/python
if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv
fi
if ! "$PY" -c 'import sys' 2>/dev/null; then
    rm -rf bindings/python/.venv
    if ! python3 -m venv bindings/python/.venv; then
        apt_install python3-venv
        rm -rf bindings/python/.venv
        python3 -m venv bindings/python/.venv
    fi
fi
"$PY" -m pip install --quiet --disable-pip-version-check -r bindings/python/requirements-test.txt
"$PY" -m pip show launchdarkly-server-sdk | grep -E '^(Name|Version):'

step "Python: pytest bindings/python/tests"
# pytest exits 5 when it collects no tests, which fails this script like any failure.
(cd bindings/python && "$ROOT/$PY" -m pytest -q -rA tests)

step "Node: npm ci in bindings/node"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
node --version
# --ignore-scripts: koffi ships its prebuilt binaries in the package; its install script
# only looks for them, and nothing else has one.
(cd bindings/node && npm ci --ignore-scripts --no-audit --no-fund)

step "Node: node --test in bindings/node"
(cd bindings/node && node --test --test-reporter=tap test/*.test.js) | tee "$WORK/node.tap"
grep -Eq '^# pass [1-9]' "$WORK/node.tap" || { echo "error: no Node tests passed" >&2; exit 1; }
grep -Eq '^# fail 0$' "$WORK/node.tap" || { echo "error: Node tests failed" >&2; exit 1; }

step "all binding suites passed"
