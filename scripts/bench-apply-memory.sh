#!/usr/bin/env bash
# Peak RSS of `segstore apply` on one large `updates` line, against the same command on a
# one-key line (the binary, the store's mappings and the allocator's base), in the same run.
# The line adds KEYS context hashes (default 1,200,000: ~63 MB of JSON, whose 1.32M keys encode to
# 63.4 MB, near the 64 MiB a line's keys may take) to a list whose table holds 1,000,000 others, and removes a tenth of them.
# Prints the difference over the line's size. Needs GNU time (/usr/bin/time).
#
#   scripts/bench-apply-memory.sh [path/to/segstore]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/segstore}
if [ "$#" -eq 0 ]; then
    cargo build --release --quiet --bin segstore
fi
keys=${KEYS:-1200000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$keys" <<'EOF'
import base64, hashlib, json, sys
work, n = sys.argv[1], int(sys.argv[2])
h = lambda s: base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
with open(f"{work}/base.txt", "w") as f:
    for i in range(1_000_000):
        f.write(h(f"base-{i}") + "\n")
new = [h(f"new-{i}") for i in range(n)]
line = {"segment": "big.g1", "included": {"add": new, "remove": new[: n // 10]}}
with open(f"{work}/line.json", "w") as f:
    f.write(json.dumps(line) + "\n")
with open(f"{work}/tiny.json", "w") as f:
    f.write(json.dumps({"segment": "big.g1", "included": {"add": [h("tiny")]}}) + "\n")
EOF

peak_kib() { # store, input
    /usr/bin/time -o "$work/rss" -f "%M %e" "$bin" apply --quiet --dir "$1" "$2" >/dev/null
    cat "$work/rss"
}
for store in big tiny; do
    "$bin" init --quiet --dir "$work/$store" >/dev/null
    "$bin" import --quiet --dir "$work/$store" --segment big.g1 "$work/base.txt" >/dev/null
done
line_bytes=$(stat -c %s "$work/line.json")
tiny=$(peak_kib "$work/tiny" "$work/tiny.json")
big=$(peak_kib "$work/big" "$work/line.json")
python3 - "$line_bytes" $tiny $big <<'EOF'
import sys
line, tiny, big = int(sys.argv[1]), int(sys.argv[2]) * 1024, int(sys.argv[4]) * 1024
print(f"line {line / 1e6:.1f} MB, applied in {sys.argv[5]} s; peak RSS {big / 2**20:.1f} MiB, "
      f"one-key line {tiny / 2**20:.1f} MiB")
print(f"difference {(big - tiny) / 1e6:.1f} MB = {(big - tiny) / line:.2f}x the line")
EOF
