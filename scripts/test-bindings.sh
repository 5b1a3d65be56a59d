#!/usr/bin/env bash
# Builds the three packages of the C library from this checkout, installs each the way a user
# does, into a fresh place, with SEGSTORE_LIB unset, and tests the installed copy:
#   1. C: scripts/install-c.sh into a temporary prefix; the example at the top of
#      include/segstore.h and bindings/c/smoke.c are built with
#      `cc ... $(pkg-config --cflags --libs segstore)` and run;
#   2. Python: the wheel of bindings/python (`pip wheel`), installed into a new venv with the
#      pinned official SDK (bindings/python/requirements-test.txt); bindings/python/tests runs
#      from a copy outside the source tree, so it imports the installed package;
#   3. Node: the tarball of bindings/node (`npm pack`), installed with the pinned official SDK
#      (the package's devDependencies) into a new npm project; bindings/node/test runs there.
#      Also `npm install @launchdarkly/node-server-sdk ./bindings/node` (the directory, as the
#      README says; npm 10+ links it) and the same with --install-links=false into new
#      projects, each of which reads a store.
# All three packages carry one build of the library (scripts/build-lib.sh: release, without the
# CLI and daemon features), so it is built once; the CLI the suites write stores with is the
# debug build `cargo test` makes. Idempotent: each run starts from new temporary directories.
# Installs pkg-config, python3-venv and nodejs/npm with apt-get only when they are missing (CI
# runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TARGET=$(cd "$(dirname "$TARGET")" && pwd)/$(basename "$TARGET")
# The installed packages must find their own library.
unset SEGSTORE_LIB
export PYTHONDONTWRITEBYTECODE=1

step() { echo "== bindings: $*"; }
fail() { echo "error: $*" >&2; exit 1; }

apt_updated=
apt_install() {
    step "apt-get install $*"
    [ "$(id -u)" = 0 ] || fail "$* missing and not running as root to install it"
    if [ -z "$apt_updated" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step "cargo build --bin segstore (the CLI that writes the test stores)"
cargo build --bin segstore
export SEGSTORE_CLI="$TARGET/debug/segstore"
[ -f "$SEGSTORE_CLI" ] || fail "$SEGSTORE_CLI was not built"

# One store for the C programs: user1 (smoke.c) and user-key (the header's example).
STORE=$WORK/store
"$SEGSTORE_CLI" --dir "$STORE" init >/dev/null
printf 'user1\nuser-key\n' | "$SEGSTORE_CLI" --dir "$STORE" import --segment beta.g1 --hash-keys - >/dev/null
printf 'user1\n' | "$SEGSTORE_CLI" --dir "$STORE" import --segment alpha.g1 --excluded --hash-keys - >/dev/null
"$SEGSTORE_CLI" --dir "$STORE" mark-synced --at 42 >/dev/null

step "C: scripts/install-c.sh --prefix $WORK/c"
command -v pkg-config >/dev/null || apt_install pkg-config
bash scripts/install-c.sh --prefix "$WORK/c"
export PKG_CONFIG_PATH="$WORK/c/lib/pkgconfig"
CFLAGS_LIBS=$(pkg-config --cflags --libs segstore)
echo "pkg-config --cflags --libs segstore: $CFLAGS_LIBS"
[ "$(pkg-config --modversion segstore)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)" ] \
    || fail "segstore.pc has the wrong version"

step "C: the example at the top of include/segstore.h, through pkg-config"
{
    echo '#include <stdio.h>'
    echo '#include <segstore.h>'
    echo 'int main(void) {'
    # The comment's lines from "Example:" to its end, without the comment's indent.
    sed -n '/^ \* Example:$/,/^ \*\/$/p' include/segstore.h | sed '1d;$d' | sed 's/^ \*     \{0,1\}//; s/^ \*$//' \
        | sed "s|\"/var/lib/segstore\"|STORE_DIR|"
    echo '    return 0;'
    echo '}'
} >"$WORK/example.c"
grep -q 'segstore_get_membership' "$WORK/example.c" || fail "no example found in include/segstore.h"
# shellcheck disable=SC2086 # pkg-config's output is words
"${CC:-cc}" -std=c99 -Wall -Wextra -Werror -DSTORE_DIR="\"$STORE\"" -o "$WORK/example" \
    "$WORK/example.c" $CFLAGS_LIBS
NEEDED=$(readelf -d "$WORK/example" | sed -n 's/.*Shared library: \[\(libsegstore[^]]*\)\]/\1/p')
[ "$NEEDED" = "$(readlink "$WORK/c/lib/libsegstore.so")" ] \
    || fail "the example needs '$NEEDED', not the installed SONAME"
LD_LIBRARY_PATH="$WORK/c/lib" "$WORK/example" >"$WORK/example.out"
echo "beta.g1 true" | diff -u - "$WORK/example.out"
echo "C header example (needs $NEEDED): ok"

step "C: bindings/c/smoke.c, through pkg-config"
# shellcheck disable=SC2086
"${CC:-cc}" -std=c99 -Wall -Wextra -pedantic -Werror -o "$WORK/smoke" bindings/c/smoke.c $CFLAGS_LIBS
LD_LIBRARY_PATH="$WORK/c/lib" "$WORK/smoke" "$STORE" \
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

step "Python: a new venv, the wheel of bindings/python, the pinned SDK and pytest"
if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv
fi
VENV=$WORK/venv
if ! python3 -m venv "$VENV"; then
    apt_install python3-venv
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" wheel --quiet --no-deps -w "$WORK/wheels" ./bindings/python
WHEELS=("$WORK"/wheels/segstore_ld-*.whl)
[ ${#WHEELS[@]} = 1 ] && [ -f "${WHEELS[0]}" ] || fail "pip wheel made no single segstore_ld wheel"
WHEEL=${WHEELS[0]}
echo "wheel: $(basename "$WHEEL")"
case "$(basename "$WHEEL")" in
    *-py3-none-any.whl) fail "the wheel is tagged for any platform, but it carries a native library" ;;
    *-py3-none-*.whl) ;;
    *) fail "the wheel is not tagged py3-none-<platform>" ;;
esac
# Not grep -q: it would stop reading at the first match, and the lister's broken pipe would fail
# the pipeline under pipefail.
"$VENV/bin/python" -m zipfile -l "$WHEEL" | grep '^segstore_ld/libsegstore.so ' >/dev/null \
    || fail "the wheel does not carry segstore_ld/libsegstore.so"
"${PIP[@]}" install --quiet "$WHEEL" -r bindings/python/requirements-test.txt
"${PIP[@]}" show launchdarkly-server-sdk segstore-ld | grep -E '^(Name|Version|Location):'

step "Python: pytest bindings/python/tests against the installed package"
mkdir "$WORK/pytests"
cp bindings/python/tests/*.py "$WORK/pytests/"
(cd "$WORK/pytests" && "$VENV/bin/python" - "$VENV" <<'PY'
import sys
from pathlib import Path
import segstore_ld
venv = Path(sys.argv[1]).resolve()
where = Path(segstore_ld.__file__).resolve()
lib = segstore_ld.find_library().resolve()
print(f"segstore_ld from {where.parent}, library {lib}")
assert venv in where.parents, f"segstore_ld was imported from {where}, not the venv"
assert lib == where.with_name("libsegstore.so"), f"the library is {lib}, not the packaged one"
PY
)
# pytest exits 5 when it collects no tests, which fails this script like any failure.
(cd "$WORK/pytests" && "$VENV/bin/python" -m pytest -q -rA -p no:cacheprovider .)

step "Node: npm pack bindings/node, then a new npm project with the tarball and the pinned SDK"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
node --version
NPM_FLAGS=(--no-audit --no-fund --loglevel=error)
mkdir "$WORK/npm"
# npm pack runs the package's prepare script, which builds native/libsegstore.so.
TARBALL=$(cd bindings/node && npm pack --pack-destination "$WORK/npm" "${NPM_FLAGS[@]}" | tail -n1)
TARBALL=$WORK/npm/$TARBALL
[ -f "$TARBALL" ] || fail "npm pack made no tarball"
echo "tarball: $(basename "$TARBALL")"
tar -tzf "$TARBALL" | grep -x 'package/native/libsegstore.so' >/dev/null \
    || fail "the tarball does not carry native/libsegstore.so"
SDK_VERSION=$(node -p "require('./bindings/node/package.json').devDependencies['@launchdarkly/node-server-sdk']")
APP=$WORK/node-app
mkdir "$APP"
echo '{ "name": "segstore-install-test", "version": "1.0.0", "private": true }' >"$APP/package.json"
# --ignore-scripts: installing the tarball must need no script (koffi ships its prebuilt
# binaries in its package; its install script only looks for them).
(cd "$APP" && npm install --ignore-scripts "${NPM_FLAGS[@]}" "$TARBALL" \
    "@launchdarkly/node-server-sdk@$SDK_VERSION")
(cd "$APP" && node -e "
const path = require('node:path');
const pkg = require.resolve('segstore-ld');
const lib = require('segstore-ld').findLibrary();
console.log('segstore-ld from ' + path.dirname(pkg) + ', library ' + lib);
const want = path.join(process.cwd(), 'node_modules', 'segstore-ld', 'native', 'libsegstore.so');
if (lib !== want) throw new Error('the library is ' + lib + ', not ' + want);
")

step "Node: node --test bindings/node/test against the installed package"
mkdir "$APP/test"
cp bindings/node/test/*.js "$APP/test/"
(cd "$APP" && node --test --test-reporter=tap test/*.test.js) | tee "$WORK/node.tap"
grep -Eq '^# pass [1-9]' "$WORK/node.tap" || fail "no Node tests passed"
grep -Eq '^# fail 0$' "$WORK/node.tap" || fail "Node tests failed"

# A project that installs the directory: npm 10 and later link it (the package's install script
# then puts koffi in bindings/node/node_modules), npm 9 packs and copies it. Both forms are run:
# the plain command (whatever this npm does) and an explicit link (--install-links=false). The
# checkout is left as found: bindings/node/node_modules is removed again if this made it.
PKG_DIR=$ROOT/bindings/node
if [ -e "$PKG_DIR/node_modules" ]; then OWN_MODULES=; else OWN_MODULES=1; fi
cleanup_modules() { if [ -n "$OWN_MODULES" ]; then rm -rf "$PKG_DIR/node_modules"; fi; }
trap 'cleanup_modules; rm -rf "$WORK"' EXIT

# In project $1, installed by "$2": segstore-ld answers a lookup with its own library, and the
# SDK the project resolves is its own copy, the only one.
check_dir_install() {
    (cd "$1" && node -e "
const fs = require('node:fs');
const path = require('node:path');
const [storeDir, pkgDir, form, ownModules] = process.argv.slice(1);
const { SegstoreBigSegmentStore, findLibrary } = require('segstore-ld');
const installed = path.join(process.cwd(), 'node_modules', 'segstore-ld');
const linked = fs.lstatSync(installed).isSymbolicLink();
const where = linked ? fs.realpathSync(pkgDir) : installed;
if (linked && fs.realpathSync(installed) !== fs.realpathSync(pkgDir)) throw new Error('linked to ' + fs.realpathSync(installed));
const want = path.join(where, 'native', 'libsegstore.so');
if (findLibrary() !== want) throw new Error('the library is ' + findLibrary() + ', not ' + want);
const sdk = require.resolve('@launchdarkly/node-server-sdk');
if (!sdk.startsWith(path.join(process.cwd(), 'node_modules') + path.sep)) throw new Error('the SDK is ' + sdk);
if (linked && ownModules) {
  const mods = fs.readdirSync(path.join(pkgDir, 'node_modules'));
  if (!mods.includes('koffi')) throw new Error('no koffi in ' + pkgDir + '/node_modules');
  // npm 9 leaves the scope's directory behind, empty.
  const scope = path.join(pkgDir, 'node_modules', '@launchdarkly');
  if (fs.existsSync(scope) && fs.readdirSync(scope).length) throw new Error('a second SDK in ' + scope);
}
const store = new SegstoreBigSegmentStore(storeDir);
const m = store.membershipSync('CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0=');
store.close();
if (JSON.stringify(m) !== '{\"beta.g1\":true}') throw new Error('membership ' + JSON.stringify(m));
console.log(form + ': ' + (linked ? 'a link' : 'a copy') + ', library ' + findLibrary() + ', SDK ' + sdk + ', membership ' + JSON.stringify(m));
" "$STORE" "$PKG_DIR" "$2" "$OWN_MODULES")
}

new_app() {
    mkdir "$1"
    echo "{ \"name\": \"$(basename "$1")\", \"version\": \"1.0.0\", \"private\": true }" >"$1/package.json"
}

step "Node: npm install @launchdarkly/node-server-sdk ./bindings/node (the README's command) in a new project"
cleanup_modules
APP2=$WORK/node-app-dir
new_app "$APP2"
(cd "$APP2" && npm install "${NPM_FLAGS[@]}" "@launchdarkly/node-server-sdk@$SDK_VERSION" "$PKG_DIR")
check_dir_install "$APP2" "npm install ./bindings/node"

step "Node: the same with --install-links=false (a link, whatever this npm's default)"
cleanup_modules
APP3=$WORK/node-app-link
new_app "$APP3"
(cd "$APP3" && npm install --install-links=false "${NPM_FLAGS[@]}" \
    "@launchdarkly/node-server-sdk@$SDK_VERSION" "$PKG_DIR")
[ -L "$APP3/node_modules/segstore-ld" ] || fail "--install-links=false did not make a link"
check_dir_install "$APP3" "npm install --install-links=false ./bindings/node"
cleanup_modules

step "all binding suites passed"
