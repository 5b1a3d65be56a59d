#!/usr/bin/env bash
# Runs the latency bench beside Redis on loopback with LaunchDarkly's big-segment layout.
#
#   scripts/bench-vs-redis.sh                       # 1M keys
#   SEGSTORE_BENCH_KEYS=10000000 scripts/bench-vs-redis.sh
#   scripts/bench-vs-redis.sh ld-hash               # extra arguments go to the bench (a shape filter)
#
# Installs redis-server if missing (Debian apt), starts a private instance on 127.0.0.1 on a
# free port with persistence off, lets the bench load the keys (pipelined SADDs under the
# `segstore-bench:` prefix) and measure, then stops that instance by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null || echo $((20000 + RANDOM % 20000)))
workdir=$(mktemp -d)
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$workdir" --daemonize no --loglevel warning >"$workdir/redis.log" 2>&1 &
redis_pid=$!
cleanup() {
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then break; fi
    if ! kill -0 "$redis_pid" 2>/dev/null; then
        cat "$workdir/redis.log" >&2
        echo "redis-server failed to start" >&2
        exit 1
    fi
    sleep 0.1
done
echo "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port (pid $redis_pid)"

SEGSTORE_BENCH_REDIS_PORT=$port cargo bench --bench latency -- "$@"
