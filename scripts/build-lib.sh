#!/usr/bin/env bash
# Builds libsegstore.so as every package ships it (the Python wheel, the Node package and
# scripts/install-c.sh all call this, so one build serves all three): the release profile,
# without the default features (no CLI, sync or serve dependencies), the cdylib only, without
# debug info (the release profile keeps it for the CLI's benchmarks), with the SONAME
# libsegstore.so.MAJOR (libsegstore.so.0.MINOR while the version is 0.x).
# Prints the path of the built library on stdout; cargo's progress goes to stderr.
# Uses CARGO_TARGET_DIR when set, else the checkout's target/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TARGET=$(mkdir -p "$TARGET" && cd "$TARGET" && pwd)
command -v cargo >/dev/null || {
    echo "error: cargo not found: install Rust (https://rustup.rs), version $(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml") or later" >&2
    exit 1
}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
MAJOR=${VERSION%%.*}
MINOR=${VERSION#*.}
MINOR=${MINOR%%.*}
if [ "$MAJOR" = 0 ]; then SONAME=libsegstore.so.0.$MINOR; else SONAME=libsegstore.so.$MAJOR; fi
case "$(uname -s)" in
    Linux) LINK=(-C "link-arg=-Wl,-soname,$SONAME") ;;
    *) LINK=() ;;
esac
cargo rustc --manifest-path "$ROOT/Cargo.toml" --release --no-default-features --lib \
    --crate-type cdylib --quiet -- -C strip=debuginfo "${LINK[@]}" >&2
LIB="$TARGET/release/libsegstore.so"
[ -f "$LIB" ] || { echo "error: cargo did not build $LIB" >&2; exit 1; }
echo "$LIB"
