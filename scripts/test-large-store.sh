#!/usr/bin/env bash
# The large-store test (tests/large_store.rs): 20M random context hashes plus 2,000 segments,
# imported, changed, compacted, verified and read back. Minutes long, so not part of
# `cargo test`; release build. SEGSTORE_LARGE_KEYS=N for another size.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --test large_store -- --ignored --nocapture "$@"
