"""Fixtures: stores built with the real CLI, flag files, and an offline SDK client."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Iterable, Optional

import pytest
from ldclient.client import LDClient
from ldclient.config import BigSegmentsConfig, Config
from ldclient.integrations import Files

from segstore_ld import SegstoreBigSegmentStore

REPO = Path(__file__).resolve().parents[3]


def cli_path() -> Path:
    path = Path(os.environ.get("SEGSTORE_CLI", REPO / "target" / "debug" / "segstore"))
    if not path.is_file():
        pytest.fail(f"the segstore CLI is not at {path}: run `cargo build` (or set SEGSTORE_CLI)")
    return path


class StoreDir:
    """A store directory written only through the `segstore` CLI, in child processes."""

    def __init__(self, path: Path):
        self.path = path
        self.run("init")

    def run(self, *args: str, stdin: Optional[str] = None) -> str:
        done = subprocess.run(
            [str(cli_path()), "--dir", str(self.path), *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise AssertionError(f"segstore {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def import_keys(self, segment: str, keys: Iterable[str], excluded=False, kind=None):
        """Bulk-loads raw context keys (hashed by the CLI) into one list of `segment`."""
        args = ["import", "--segment", segment, "--hash-keys", "--mode", "merge"]
        if excluded:
            args.append("--excluded")
        if kind:
            args += ["--kind", kind]
        self.run(*args, "-", stdin="".join(f"{k}\n" for k in keys))

    def apply_updates(self, *updates: dict):
        """Applies REST-style updates (raw keys), one atomic batch per update."""
        self.run("apply", "--hash-keys", "-", stdin="".join(json.dumps(u) + "\n" for u in updates))

    def mark_synced(self, at_ms: Optional[int] = None):
        self.run("mark-synced", *([] if at_ms is None else ["--at", str(at_ms)]))


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def store_dir(tmp_path) -> StoreDir:
    return StoreDir(tmp_path / "store")


def segment(key: str, generation: Optional[int] = 1, kind: Optional[str] = None) -> dict:
    """A big (synced) segment as the LaunchDarkly data model spells it."""
    data = {
        "key": key,
        "version": 1,
        "unbounded": True,
        "included": [],
        "excluded": [],
        "rules": [],
        "salt": "salt",
        "deleted": False,
    }
    if generation is not None:
        data["generation"] = generation
    if kind is not None:
        data["unboundedContextKind"] = kind
    return data


def flag_matching(key: str, segment_key: str) -> dict:
    """A boolean flag: true when the context is in `segment_key`, false otherwise."""
    return {
        "key": key,
        "version": 1,
        "on": True,
        "variations": [False, True],
        "offVariation": 0,
        "fallthrough": {"variation": 0},
        "targets": [],
        "prerequisites": [],
        "rules": [
            {
                "id": f"{key}-rule",
                "clauses": [{"attribute": "key", "op": "segmentMatch", "values": [segment_key], "negate": False}],
                "variation": 1,
                "trackEvents": False,
            }
        ],
        "salt": "salt",
        "trackEvents": False,
        "trackEventsFallthrough": False,
        "deleted": False,
    }


class CountingStore(SegstoreBigSegmentStore):
    """The adapter, counting the SDK's queries."""

    def __init__(self, path):
        super().__init__(path)
        self.membership_queries: list = []

    def get_membership(self, context_hash):
        self.membership_queries.append(context_hash)
        return super().get_membership(context_hash)


@pytest.fixture
def make_client(tmp_path):
    """Builds an offline SDK client over a flag file and a store; closes it afterwards."""
    clients = []

    def make(store, flags: dict, segments: dict, stale_after=120.0, cache_time=5.0):
        data = tmp_path / "flags.json"
        data.write_text(json.dumps({"flags": flags, "segments": segments}))
        config = Config(
            sdk_key="sdk-key-offline-test",
            update_processor_class=Files.new_data_source(paths=[str(data)]),
            send_events=False,
            diagnostic_opt_out=True,
            big_segments=BigSegmentsConfig(
                store=store, stale_after=stale_after, context_cache_time=cache_time
            ),
        )
        client = LDClient(config=config, start_wait=5)
        assert client.is_initialized(), "the file data source did not load"
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
