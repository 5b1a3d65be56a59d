"""Per-call cost of ``get_membership`` through the Python adapter (ctypes over the C ABI).

The stores have the shapes ``cargo bench --bench ffi`` measures: 3 and 100 segments of 1,000
context hashes each, the probed context in three of them (two included, one excluded only).
They are built with the CLI. Use the release library and CLI for figures::

    cargo build --release --lib --bin segstore
    python3 -m venv bindings/python/.venv
    bindings/python/.venv/bin/pip install -r bindings/python/requirements.txt
    SEGSTORE_LIB=target/release/libsegstore.so SEGSTORE_CLI=target/release/segstore \\
        bindings/python/.venv/bin/python bindings/python/bench.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segstore_ld import SegstoreBigSegmentStore, find_library  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
KEYS_PER_SEGMENT = 1000


def probe_segment(segments: int, i: int) -> str:
    """The `i`th (of three) segment holding the probed key (as in benches/ffi.rs)."""
    return f"segment-{min(segments // 10 + i * segments * 4 // 10, segments - 1):03}.g1"


def context_hash(key: str) -> str:
    return base64.b64encode(hashlib.sha256(key.encode()).digest()).decode()


def build_store(cli: str, path: Path, segments: int) -> None:
    def run(*args, stdin=""):
        subprocess.run([cli, "--dir", str(path), *args], input=stdin, text=True, check=True,
                       stdout=subprocess.DEVNULL)

    run("init")
    for s in range(segments):
        keys = "".join(f"user-{s}-{i}\n" for i in range(KEYS_PER_SEGMENT))
        run("import", "--segment", f"segment-{s:03}.g1", "--hash-keys", "-", stdin=keys)
    update = lambda ref, lst: json.dumps({"segment": ref, lst: {"add": ["probe"]}}) + "\n"  # noqa: E731
    run("apply", "--hash-keys", "-", stdin=update(probe_segment(segments, 0), "included")
        + update(probe_segment(segments, 1), "included")
        + update(probe_segment(segments, 2), "excluded"))
    run("compact")


def per_call_ns(fn, number: int) -> float:
    """The median of 7 runs of `number` calls, in ns per call."""
    runs = sorted(timeit.repeat(fn, number=number, repeat=7))
    return runs[len(runs) // 2] / number * 1e9


def main() -> None:
    cli = os.environ.get("SEGSTORE_CLI", str(REPO / "target" / "release" / "segstore"))
    print(f"library: {find_library()}\nCLI: {cli}\nPython {sys.version.split()[0]}")
    for segments in (3, 100):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "store"
            build_store(cli, path, segments)
            store = SegstoreBigSegmentStore(path)
            hit, miss = context_hash("probe"), context_hash("absent")
            assert store.get_membership(hit) == {
                probe_segment(segments, 0): True,
                probe_segment(segments, 1): True,
                probe_segment(segments, 2): False,
            }
            assert store.get_membership(miss) is None
            one = probe_segment(segments, 1)
            n = 200_000
            figures = {
                "get_membership, key in 3 segments": per_call_ns(lambda: store.get_membership(hit), n),
                "get_membership, key in none": per_call_ns(lambda: store.get_membership(miss), n),
                "check, one segment": per_call_ns(lambda: store.check(one, hit), n),
            }
            store.stop()
        for name, ns in figures.items():
            print(f"{segments:3} segments: {name:36} {ns / 1000:6.2f} µs/call")

if __name__ == "__main__":
    main()
