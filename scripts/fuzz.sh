#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a set time, one after another, and prints the executions
# each ran.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 seconds each, every target)
#
# Installs cargo-fuzz if it is missing (from crates.io). On a stable toolchain cargo-fuzz needs
# RUSTC_BOOTSTRAP=1, which this script sets. Builds with overflow checks and debug assertions
# (-a) and without a sanitizer (-s none): the engine's only unsafe code maps files, and the
# targets look for panics and broken invariants; pass FUZZ_SANITIZER=address for ASan.
#
# New interesting inputs go to fuzz/target/work-corpus/TARGET (not committed); the committed
# seeds in fuzz/corpus/TARGET are only read. A failing input is written to
# fuzz/artifacts/TARGET/, which tests/fuzz_corpus.rs replays in `cargo test`. Exit status 1 if
# any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
all_targets=(log_records log_framed manifest table table_hashed store ingest_updates ingest_patches ingest_partner)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"

# Targets that write files do it in TMPDIR: keep that in memory when possible.
scratch_root=/dev/shm
[ -d "$scratch_root" ] && [ -w "$scratch_root" ] || scratch_root="${TMPDIR:-/tmp}"
scratch="$(mktemp -d "$scratch_root/segstore-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "== building the fuzz targets (sanitizer: $sanitizer)"
(cd fuzz && cargo fuzz build -s "$sanitizer" -a)

max_len_of() {
    case "$1" in
        store) echo 65536 ;;
        table | table_hashed | log_records | log_framed | manifest) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

failed=()
summary=()
for target in "${targets[@]}"; do
    work="fuzz/target/work-corpus/$target"
    mkdir -p "$work" "fuzz/artifacts/$target"
    log="fuzz/target/fuzz-$target.log"
    echo "== $target: ${seconds}s"
    status=0
    (cd fuzz && TMPDIR="$scratch" cargo fuzz run -s "$sanitizer" -a "$target" \
        "target/work-corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$(max_len_of "$target")" -timeout=20 \
        -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1 || status=$?
    execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)"
    cov="$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || true)"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        summary+=("$target: FAILED after ${execs:-?} executions (see $log; input in fuzz/artifacts/$target/)")
        grep -E 'panicked at|ERROR: libFuzzer|Test unit written' "$log" | head -5 || true
    else
        summary+=("$target: ${execs:-?} executions in ${seconds}s, ${cov:-cov: ?}, no failure")
    fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
