#!/usr/bin/env bash
# Benchmarks `segstore serve --redis` against redis-server on the same data, in one run
# (benches/redis_endpoint.rs): membership latency over TCP and a Unix socket, throughput with
# several connections, memory, restart, and Relay-style write transactions.
#
#   scripts/bench-redis-endpoint.sh                          # 1M contexts
#   SEGSTORE_BENCH_KEYS=10000000 scripts/bench-redis-endpoint.sh
#
# Installs redis-server and redis-tools (redis-benchmark, the C load generator) if missing
# (Debian apt). The bench starts its own private redis-server (`--save '' --appendonly no`, a
# Unix socket and an RDB directory under target/segstore-bench/) and its own `segstore serve`
# over a copy of the cached fixture, and stops both by their PIDs. SEGSTORE_BENCH_KEYS,
# SEGSTORE_BENCH_ROUNDS, SEGSTORE_BENCH_REDIS_CALLS, SEGSTORE_BENCH_SECS and SEGSTORE_BENCH_TXNS
# pass through; extra arguments go to the bench.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench redis_endpoint -- "$@"
