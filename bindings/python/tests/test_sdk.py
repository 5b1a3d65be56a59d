"""The adapter under the official LaunchDarkly Python SDK, offline: flags and segments from
its file data source, membership from a store the `segstore` CLI wrote in other processes."""

from __future__ import annotations

import time
from pathlib import Path

from ldclient.context import Context

from conftest import CountingStore, flag_matching, now_ms, segment
from segstore_ld import SegstoreBigSegmentStore

REF = "big.g3"


def evaluate(client, flag: str, context: Context):
    detail = client.variation_detail(flag, context, "default")
    return detail.value, detail.reason


def user(key: str) -> Context:
    return Context.create(key)


def standard_store(store_dir, synced_at=None):
    """`big.g3`: in-user and both-user included; out-user and both-user excluded."""
    store_dir.import_keys(REF, ["in-user", "both-user"])
    store_dir.import_keys(REF, ["out-user", "both-user"], excluded=True)
    store_dir.mark_synced(synced_at)
    return CountingStore(store_dir.path)


FLAGS = {"flag": flag_matching("flag", "big")}
SEGMENTS = {"big": segment("big", generation=3)}


def test_an_included_context_matches_the_rule_and_is_healthy(store_dir, make_client):
    client = make_client(standard_store(store_dir), FLAGS, SEGMENTS)
    value, reason = evaluate(client, "flag", user("in-user"))
    assert value is True
    assert reason["kind"] == "RULE_MATCH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_an_excluded_only_context_falls_through(store_dir, make_client):
    client = make_client(standard_store(store_dir), FLAGS, SEGMENTS)
    value, reason = evaluate(client, "flag", user("out-user"))
    assert value is False
    assert reason["kind"] == "FALLTHROUGH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_included_and_excluded_means_included(store_dir, make_client):
    store = standard_store(store_dir)
    assert store.get_membership(_hash("both-user")) == {REF: True}
    client = make_client(store, FLAGS, SEGMENTS)
    value, reason = evaluate(client, "flag", user("both-user"))
    assert value is True
    assert reason["kind"] == "RULE_MATCH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_an_unknown_context_falls_through(store_dir, make_client):
    store = standard_store(store_dir)
    client = make_client(store, FLAGS, SEGMENTS)
    value, reason = evaluate(client, "flag", user("nobody"))
    assert value is False
    assert reason["kind"] == "FALLTHROUGH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"
    assert store.membership_queries == [_hash("nobody")]


def test_a_sync_older_than_stale_after_is_stale(store_dir, make_client):
    store = standard_store(store_dir, synced_at=now_ms() - 10 * 60 * 1000)
    client = make_client(store, FLAGS, SEGMENTS, stale_after=60)
    value, reason = evaluate(client, "flag", user("in-user"))
    assert value is True
    assert reason["bigSegmentsStatus"] == "STALE"


def test_a_store_never_synced_is_stale(store_dir, make_client):
    store_dir.import_keys(REF, ["in-user"])
    store = SegstoreBigSegmentStore(store_dir.path)
    assert store.get_metadata().last_up_to_date is None
    client = make_client(store, FLAGS, SEGMENTS)
    value, reason = evaluate(client, "flag", user("in-user"))
    assert value is True
    assert reason["bigSegmentsStatus"] == "STALE"


def test_a_segment_without_a_generation_is_not_configured_and_never_queried(store_dir, make_client):
    store = standard_store(store_dir)
    client = make_client(store, FLAGS, {"big": segment("big", generation=None)})
    value, reason = evaluate(client, "flag", user("in-user"))
    assert value is False
    assert reason["bigSegmentsStatus"] == "NOT_CONFIGURED"
    assert store.membership_queries == []


def test_an_org_segment_is_queried_with_the_org_of_a_multi_kind_context(store_dir, make_client):
    store_dir.import_keys("orgs.g1", ["org-1"], kind="org")
    store_dir.mark_synced()
    store = CountingStore(store_dir.path)
    client = make_client(
        store,
        {"org-flag": flag_matching("org-flag", "orgs")},
        {"orgs": segment("orgs", generation=1, kind="org")},
    )
    multi = Context.create_multi(Context.create("someone"), Context.create("org-1", "org"))
    value, reason = evaluate(client, "org-flag", multi)
    assert value is True
    assert reason["kind"] == "RULE_MATCH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"
    assert store.membership_queries == [_hash("org-1")]

    # A user whose key happens to be the org's is not the org.
    value, reason = evaluate(client, "org-flag", Context.create("org-1"))
    assert value is False
    assert store.membership_queries == [_hash("org-1")]


def test_a_write_by_another_process_shows_up_after_the_cache_time(store_dir, make_client):
    store = standard_store(store_dir)
    cache_time = 1.0
    client = make_client(store, FLAGS, SEGMENTS, cache_time=cache_time)
    assert evaluate(client, "flag", user("late-user"))[0] is False

    written = time.monotonic()
    store_dir.apply_updates({"segment": REF, "included": {"add": ["late-user"]}})
    deadline = written + cache_time + 5.0
    while True:
        value, reason = evaluate(client, "flag", user("late-user"))
        if value is True:
            break
        assert time.monotonic() < deadline, "the write never reached the SDK"
        time.sleep(0.02)
    print(f"visible to the SDK {time.monotonic() - written:.3f} s after the write (cache {cache_time} s)")
    assert reason["kind"] == "RULE_MATCH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_errors_raise_and_stop_is_final(store_dir):
    from segstore_ld import SegstoreError
    import pytest

    with pytest.raises(SegstoreError, match="no store"):
        SegstoreBigSegmentStore(store_dir.path / "missing")
    store = SegstoreBigSegmentStore(store_dir.path)
    with pytest.raises(SegstoreError, match="invalid key"):
        store.get_membership("")
    assert store.check(REF, _hash("in-user")) is None
    store.stop()
    store.stop()
    with pytest.raises(SegstoreError, match="stopped"):
        store.get_membership(_hash("in-user"))


def test_verify_on_read_opens_and_answers_as_the_default_does(store_dir):
    standard_store(store_dir)
    checked = SegstoreBigSegmentStore(store_dir.path, verify_on_read=True)
    default = SegstoreBigSegmentStore(store_dir.path)
    for key in ["in-user", "out-user", "both-user", "nobody"]:
        assert checked.get_membership(_hash(key)) == default.get_membership(_hash(key))
    assert checked.get_membership(_hash("in-user")) == {REF: True}
    checked.stop()
    default.stop()


def _hash(key: str) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(key.encode("utf-8")).digest()).decode("ascii")


def test_the_packaged_library_is_used_unless_segstore_lib_overrides_it(monkeypatch, tmp_path):
    import pytest

    import segstore_ld
    from segstore_ld import SegstoreError, find_library

    packaged = Path(segstore_ld.__file__).resolve().with_name("libsegstore.so")
    monkeypatch.delenv("SEGSTORE_LIB", raising=False)
    assert find_library() == packaged
    assert packaged.is_file()

    copy = tmp_path / "libsegstore-copy.so"
    copy.write_bytes(packaged.read_bytes())
    monkeypatch.setenv("SEGSTORE_LIB", str(copy))
    assert find_library() == copy

    monkeypatch.setenv("SEGSTORE_LIB", str(tmp_path / "absent.so"))
    with pytest.raises(SegstoreError, match="absent.so is not a file"):
        find_library()


def test_a_missing_library_is_named_with_what_to_do(monkeypatch, tmp_path):
    import pytest

    from segstore_ld import SegstoreError, _native, find_library

    monkeypatch.delenv("SEGSTORE_LIB", raising=False)
    monkeypatch.setattr(_native, "PACKAGED_LIB", tmp_path / "libsegstore.so")
    with pytest.raises(SegstoreError) as err:
        find_library()
    message = str(err.value)
    assert str(tmp_path / "libsegstore.so") in message
    assert "pip install ./bindings/python" in message
    assert "SEGSTORE_LIB" in message
