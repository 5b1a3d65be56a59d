"""The official LaunchDarkly Python SDK's own Redis big-segment store
(`ldclient.integrations.Redis.new_big_segment_store`) against a Redis-protocol server: a real
redis-server, or `segstore serve --redis` (SEGSTORE_REDIS_TARGET). Data goes in over the
protocol as the Relay Proxy writes it (or, for segstore, through the CLI before `serve`
starts); flags and segments come from the SDK's file data source."""

from __future__ import annotations

import json
import time

import pytest
from ldclient.context import Context

from conftest import (
    Preload,
    RelayWriter,
    context_hash,
    flag_matching,
    now_ms,
    run_cli,
    segment,
    target,
)

REF = "beta.g3"
FLAGS = {"beta-flag": flag_matching("beta-flag", "beta")}
SEGMENTS = {"beta": segment("beta", generation=3)}


def evaluate(client, context, flag="beta-flag"):
    detail = client.variation_detail(flag, context, "default")
    return detail.value, detail.reason


def user(key: str) -> Context:
    return Context.create(key)


def write_standard(server, synced_at=None):
    """`beta.g3`: in-user and both-user included; out-user and both-user excluded; synced."""
    w = RelayWriter(server)
    assert w.patch(REF, "1", previous_version="", included_add=["in-user", "both-user"])
    assert w.patch(REF, "2", previous_version="1", excluded_add=["out-user", "both-user"])
    w.mark_synced(now_ms() if synced_at is None else synced_at)
    return w


def poll_until(fn, what: str, timeout: float):
    """Calls fn until it returns a truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not seen within {timeout} s"
        time.sleep(0.02)


def test_the_relay_shaped_writes_are_what_the_redis_layout_says(server):
    write_standard(server)
    r = server.client()
    include = server.key(f"big_segment_include:{context_hash('both-user')}")
    exclude = server.key(f"big_segment_exclude:{context_hash('both-user')}")
    assert context_hash("user-key") == "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0="
    assert r.smembers(include) == {REF.encode()}
    assert r.smembers(exclude) == {REF.encode()}
    assert r.sismember(server.key(f"big_segment_include:{context_hash('in-user')}"), REF) == 1
    assert r.sismember(server.key(f"big_segment_include:{context_hash('out-user')}"), REF) == 0
    assert r.scard(server.key(f"big_segment_exclude:{context_hash('out-user')}")) == 1
    assert r.smembers(server.key(f"big_segment_include:{context_hash('nobody')}")) == set()
    assert r.get(server.key("big_segments_cursor")) == b"2"
    synced = int(r.get(server.key("big_segments_synchronized_on")))
    assert abs(synced - now_ms()) < 60_000


def test_an_included_context_matches_and_is_healthy(server, make_client):
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("in-user"))
    assert value is True
    assert reason["kind"] == "RULE_MATCH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_an_excluded_only_context_falls_through(server, make_client):
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("out-user"))
    assert value is False
    assert reason["kind"] == "FALLTHROUGH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_included_and_excluded_means_included(server, make_client):
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("both-user"))
    assert value is True
    assert reason["kind"] == "RULE_MATCH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_an_unknown_context_falls_through_and_is_healthy(server, make_client):
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("nobody"))
    assert value is False
    assert reason["kind"] == "FALLTHROUGH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_a_ref_of_another_generation_does_not_match(server, make_client):
    w = RelayWriter(server)
    assert w.patch("beta.g2", "1", included_add=["old-gen-user"])
    w.mark_synced()
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("old-gen-user"))
    assert value is False
    assert reason["bigSegmentsStatus"] == "HEALTHY"


def test_an_org_segment_matches_the_org_of_a_multi_kind_context(server, make_client):
    w = RelayWriter(server)
    assert w.patch("orgs.g1", "1", included_add=["org-1"])
    w.mark_synced()
    client = make_client(
        server,
        {"org-flag": flag_matching("org-flag", "orgs")},
        {"orgs": segment("orgs", generation=1, kind="org")},
    )
    multi = Context.create_multi(Context.create("someone"), Context.create("org-1", "org"))
    value, reason = evaluate(client, multi, "org-flag")
    assert value is True
    assert reason["kind"] == "RULE_MATCH"
    assert reason["bigSegmentsStatus"] == "HEALTHY"
    # A user whose key is the org's key is not the org.
    value, reason = evaluate(client, Context.create("org-1"), "org-flag")
    assert value is False


def test_a_sync_older_than_stale_after_is_stale(server, make_client):
    write_standard(server, synced_at=now_ms() - 60_000)
    client = make_client(server, FLAGS, SEGMENTS, stale_after=5)
    value, reason = evaluate(client, user("in-user"))
    assert value is True
    assert reason["bigSegmentsStatus"] == "STALE"
    assert client.big_segment_store_status_provider.status.available is True
    assert client.big_segment_store_status_provider.status.stale is True


def test_never_synced_is_stale(server, make_client):
    w = RelayWriter(server)
    assert w.patch(REF, "1", included_add=["in-user"])
    assert server.client().get(server.key("big_segments_synchronized_on")) is None
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("in-user"))
    assert value is True
    assert reason["bigSegmentsStatus"] == "STALE"


def test_a_segment_without_a_generation_is_not_configured(server, make_client):
    write_standard(server)
    client = make_client(server, FLAGS, {"beta": segment("beta", generation=None)})
    value, reason = evaluate(client, user("in-user"))
    assert value is False
    assert reason["bigSegmentsStatus"] == "NOT_CONFIGURED"


def test_a_custom_prefix_is_what_the_sdk_reads(start_server, make_client):
    server = start_server(prefix="acme:prod")
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("in-user"))
    assert (value, reason["bigSegmentsStatus"]) == (True, "HEALTHY")

    # An SDK on the default prefix finds nothing there: no membership, never synced.
    other = make_client(server, FLAGS, SEGMENTS, prefix="launchdarkly")
    value, reason = evaluate(other, user("in-user"))
    assert value is False
    assert reason["kind"] == "FALLTHROUGH"
    assert reason["bigSegmentsStatus"] == "STALE"


def test_a_membership_change_shows_up_after_the_cache_time(server, make_client):
    w = write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS, cache_time=0.2)
    assert evaluate(client, user("late-user"))[0] is False
    assert evaluate(client, user("in-user"))[0] is True

    assert w.patch(REF, "3", previous_version="2", included_add=["late-user"], included_remove=["in-user"])
    w.mark_synced()
    poll_until(lambda: evaluate(client, user("late-user"))[0] is True, "late-user included", 10)
    poll_until(lambda: evaluate(client, user("in-user"))[0] is False, "in-user removed", 10)
    value, reason = evaluate(client, user("late-user"))
    assert (value, reason["kind"], reason["bigSegmentsStatus"]) == (True, "RULE_MATCH", "HEALTHY")

    # Removing an exclusion from both-user leaves it included; removing its inclusion too
    # leaves it unknown.
    assert w.patch(REF, "4", previous_version="3", excluded_remove=["both-user"])
    assert w.patch(REF, "5", previous_version="4", included_remove=["both-user"])
    poll_until(lambda: evaluate(client, user("both-user"))[0] is False, "both-user removed", 10)
    r = server.client()
    assert r.smembers(server.key(f"big_segment_include:{context_hash('both-user')}")) == set()
    assert r.smembers(server.key(f"big_segment_exclude:{context_hash('both-user')}")) == set()
    assert r.get(server.key("big_segments_cursor")) == b"5"


def test_a_transaction_whose_watch_was_broken_is_not_applied(server, make_client):
    w = write_standard(server)
    other = RelayWriter(server)

    def commit_first():
        assert other.patch(REF, "3", previous_version="2", included_add=["winner"])

    applied = w.patch(REF, "3", previous_version="2", included_add=["loser"], before_exec=commit_first)
    assert applied is False, "EXEC must answer nil after another writer's transaction touched the lock"
    r = server.client()
    assert r.get(server.key("big_segments_cursor")) == b"3"
    assert r.smembers(server.key(f"big_segment_include:{context_hash('loser')}")) == set()

    client = make_client(server, FLAGS, SEGMENTS)
    assert evaluate(client, user("winner"))[0] is True
    assert evaluate(client, user("loser"))[0] is False
    # The cursor guard of the writer skips a patch built on an old version.
    assert w.patch(REF, "4", previous_version="2", included_add=["loser"]) is False


def test_data_loaded_before_the_server_starts_is_served(start_server, make_client):
    server = start_server(
        prefix="preloaded",
        preload=Preload(
            included={REF: ["in-user", "both-user"], "orgs.g1": ["org-1"]},
            excluded={REF: ["out-user", "both-user"]},
            synced_at=now_ms(),
        ),
    )
    client = make_client(server, FLAGS, SEGMENTS)
    for key, want in (("in-user", True), ("out-user", False), ("both-user", True), ("nobody", False)):
        value, reason = evaluate(client, user(key))
        assert (key, value, reason["bigSegmentsStatus"]) == (key, want, "HEALTHY")
    r = server.client()
    assert r.smembers(server.key(f"big_segment_include:{context_hash('org-1')}")) == {b"orgs.g1"}
    assert r.scard(server.key(f"big_segment_include:{context_hash('both-user')}")) == 1


def test_a_server_that_goes_away_makes_the_store_unavailable(server, make_client):
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS, status_poll_interval=0.1)
    status = client.big_segment_store_status_provider
    value, reason = evaluate(client, user("in-user"))
    assert (value, reason["bigSegmentsStatus"]) == (True, "HEALTHY")
    assert status.status.available is True

    server.stop()
    poll_until(lambda: status.status.available is False, "store status unavailable", 10)
    value, reason = evaluate(client, user("never-asked"))
    assert value is False
    assert reason["bigSegmentsStatus"] == "STORE_ERROR"


def test_writes_over_the_protocol_are_in_the_store_and_survive_a_restart(start_server, make_client):
    if target() != "segstore":
        pytest.skip("the store directory and its CLI exist only with SEGSTORE_REDIS_TARGET=segstore")
    server = start_server()
    synced = now_ms() - 1000
    write_standard(server, synced_at=synced)

    # Read-only CLI commands work on the directory while `serve` is its writer.
    assert run_cli(server.store, "check", REF, "in-user", "--hash-key").strip() == "included"
    assert run_cli(server.store, "check", REF, "out-user", "--hash-key").strip() == "excluded"
    assert run_cli(server.store, "check", REF, "both-user", "--hash-key").strip() == "included"
    assert json.loads(run_cli(server.store, "membership", "both-user", "--hash-key")) == {REF: True}
    meta = json.loads(run_cli(server.store, "meta", "--json"))
    assert meta["synchronized_on"] == synced
    assert meta["cursor"] == "2"
    # ... and writing ones are kept out by the lock, changing nothing.
    with pytest.raises(AssertionError, match="locked"):
        run_cli(server.store, "import", "--segment", REF, "--hash-keys", "--mode", "merge", "-", stdin="sneaky\n")
    with pytest.raises(AssertionError, match="locked"):
        run_cli(server.store, "mark-synced", "--at", "1")
    assert run_cli(server.store, "check", REF, "sneaky", "--hash-key").strip() == "unknown"
    assert server.client().get(server.key("big_segments_synchronized_on")) == str(synced).encode()

    server.stop()
    server.start(init=False)
    client = make_client(server, FLAGS, SEGMENTS)
    for key, want in (("in-user", True), ("out-user", False), ("both-user", True)):
        value, reason = evaluate(client, user(key))
        assert (key, value, reason["bigSegmentsStatus"]) == (key, want, "HEALTHY")
    assert server.client().get(server.key("big_segments_cursor")) == b"2"


def test_keys_exist_as_sets_only_while_they_have_members(server):
    w = write_standard(server)
    r = server.client()
    include = server.key(f"big_segment_include:{context_hash('in-user')}")
    assert r.get(server.key("big_segments_lock")) == b""
    assert r.exists(include) == 1
    assert r.type(include) == b"set"
    assert r.type(server.key("big_segments_cursor")) == b"string"
    assert w.patch(REF, "3", previous_version="2", included_remove=["in-user"])
    # An empty set does not exist.
    assert r.exists(include) == 0
    assert r.type(include) == b"none"
    assert r.smembers(include) == set()


def test_a_stale_store_turns_healthy_when_synchronized_on_is_set(server, make_client):
    w = write_standard(server, synced_at=now_ms() - 60_000)
    client = make_client(server, FLAGS, SEGMENTS, stale_after=5, status_poll_interval=0.1)
    assert evaluate(client, user("in-user"))[1]["bigSegmentsStatus"] == "STALE"
    w.mark_synced()
    poll_until(lambda: client.big_segment_store_status_provider.status.stale is False, "not stale", 10)
    value, reason = evaluate(client, user("in-user"))
    assert (value, reason["bigSegmentsStatus"]) == (True, "HEALTHY")


def test_a_context_in_many_segments_and_a_large_transaction(server, make_client):
    """One transaction of 1,000 SADDs; one context in 40 segments of several generations."""
    w = RelayWriter(server)
    keys = [f"bulk-{i}" for i in range(1000)]
    assert w.patch(REF, "1", included_add=keys)
    refs = [f"seg{i}.g{i % 3 + 1}" for i in range(40)]
    for n, ref in enumerate(refs):
        assert w.patch(ref, str(n + 2), included_add=["busy-user"] if n % 2 == 0 else [],
                       excluded_add=["busy-user"] if n % 2 else [])
    w.mark_synced()
    r = server.client()
    assert r.smembers(server.key(f"big_segment_include:{context_hash('busy-user')}")) == {
        ref.encode() for ref in refs[0::2]
    }
    assert r.scard(server.key(f"big_segment_exclude:{context_hash('busy-user')}")) == 20

    flags = {f"f{i}": flag_matching(f"f{i}", f"seg{i}") for i in range(40)}
    segments = {f"seg{i}": segment(f"seg{i}", generation=i % 3 + 1) for i in range(40)}
    flags.update(FLAGS)
    segments.update(SEGMENTS)
    client = make_client(server, flags, segments)
    for i in range(40):
        value, reason = evaluate(client, user("busy-user"), f"f{i}")
        assert (i, value, reason["bigSegmentsStatus"]) == (i, i % 2 == 0, "HEALTHY")
    for key in keys[::97] + ["bulk-999"]:
        assert evaluate(client, user(key))[0] is True, key
    assert evaluate(client, user("bulk-1000"))[0] is False


def test_unicode_and_odd_context_keys(server, make_client):
    odd = ["ü-user", "日本語", "with space", "a:b:c", "x" * 300]
    w = RelayWriter(server)
    assert w.patch(REF, "1", included_add=odd)
    w.mark_synced()
    client = make_client(server, FLAGS, SEGMENTS)
    for key in odd:
        assert evaluate(client, user(key))[0] is True, key
    assert evaluate(client, user("u-user"))[0] is False


def test_a_write_outside_the_layout_is_refused_and_changes_nothing(server, make_client):
    if target() != "segstore":
        pytest.skip("redis-server is a general-purpose store: it takes any key")
    import redis

    write_standard(server)
    r = server.client()
    with pytest.raises(redis.ResponseError):
        r.set("some-other-key", "x")
    with pytest.raises(redis.ResponseError):
        r.sadd(server.key("big_segment_include_typo:abc"), REF)
    # A transaction holding one refused write applies none of its writes.
    with pytest.raises(redis.ResponseError):
        with r.pipeline(transaction=True) as p:
            p.sadd(server.key(f"big_segment_include:{context_hash('sneaky')}"), REF)
            p.set("some-other-key", "x")
            p.execute()
    assert r.smembers(server.key(f"big_segment_include:{context_hash('sneaky')}")) == set()
    assert r.get("some-other-key") is None
    client = make_client(server, FLAGS, SEGMENTS)
    assert evaluate(client, user("sneaky"))[0] is False
    assert evaluate(client, user("in-user"))[0] is True


def test_with_users_the_sdk_reads_as_a_read_only_user_and_strangers_get_nothing(start_server, make_client):
    import redis

    from conftest import READER

    server = start_server(auth=True)
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)  # as the read-only user
    value, reason = evaluate(client, user("in-user"))
    assert (value, reason["bigSegmentsStatus"]) == (True, "HEALTHY")

    reader = server.client(user=READER)
    include = server.key(f"big_segment_include:{context_hash('intruder')}")
    with pytest.raises(redis.ResponseError):
        reader.sadd(include, REF)
    with pytest.raises(redis.ResponseError):
        reader.set(server.key("big_segments_synchronized_on"), "1")
    assert reader.smembers(include) == set()
    assert int(reader.get(server.key("big_segments_synchronized_on"))) > now_ms() - 60_000

    for url in (server.url, server.sdk_url(user=(READER[0], "wrong-secret"))):
        stranger = make_client(server, FLAGS, SEGMENTS, url=url)
        value, reason = evaluate(stranger, user("in-user"))
        assert (url, value, reason["bigSegmentsStatus"]) == (url, False, "STORE_ERROR")
        assert stranger.big_segment_store_status_provider.status.available is False


def test_the_sdk_store_over_resp2(server, make_client):
    """`redis` 8 speaks RESP3 (HELLO 3) unless told otherwise; older clients, and a URL with
    `?protocol=2`, speak RESP2. The same answers either way."""
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS, url=server.sdk_url() + "?protocol=2")
    pool = client._config.big_segments.store._pool
    assert pool.connection_kwargs.get("protocol") == 2
    for key, want, kind in (("in-user", True, "RULE_MATCH"), ("out-user", False, "FALLTHROUGH"),
                            ("both-user", True, "RULE_MATCH"), ("nobody", False, "FALLTHROUGH")):
        value, reason = evaluate(client, user(key))
        assert (key, value, reason["kind"], reason["bigSegmentsStatus"]) == (key, want, kind, "HEALTHY")


def test_exec_answers_each_command_as_redis_does(server):
    r = server.client()
    s = server
    inc = lambda k: s.key(f"big_segment_include:{context_hash(k)}")  # noqa: E731
    exc = lambda k: s.key(f"big_segment_exclude:{context_hash(k)}")  # noqa: E731
    with r.pipeline(transaction=True) as p:
        p.watch(s.key("big_segments_lock"))
        assert p.get(s.key("big_segments_cursor")) is None
        p.multi()
        p.set(s.key("big_segments_lock"), "")
        p.set(s.key("big_segments_cursor"), "v1")
        p.sadd(inc("a"), REF)
        p.sadd(inc("a"), REF)  # already there
        p.sadd(inc("a"), "other.g1", "third.g1")
        p.srem(inc("b"), REF)  # never there
        p.sadd(exc("b"), REF)
        p.srem(exc("b"), REF, "missing.g1")
        assert p.execute() == [True, True, 1, 0, 2, 0, 1, 1]
    assert r.smembers(inc("a")) == {REF.encode(), b"other.g1", b"third.g1"}
    assert r.exists(exc("b")) == 0
    assert r.get(s.key("big_segments_cursor")) == b"v1"


def test_pages_with_empty_versions_then_a_versioned_patch(server, make_client):
    """The pages of an initial sync carry empty versions; the next patch carries a real one."""
    w = RelayWriter(server)
    assert w.patch(REF, "", previous_version="", included_add=["page-1-user"])
    assert w.patch(REF, "", previous_version="", included_add=["page-2-user"])
    assert w.patch(REF, "2024-06-01T00:00:00Z/abc", previous_version="", excluded_add=["page-1-user"])
    assert server.client().get(server.key("big_segments_cursor")) == b"2024-06-01T00:00:00Z/abc"
    w.mark_synced()
    client = make_client(server, FLAGS, SEGMENTS)
    assert evaluate(client, user("page-1-user"))[0] is True
    assert evaluate(client, user("page-2-user"))[0] is True


def test_writes_to_keys_nobody_watched_do_not_abort_a_transaction(server, make_client):
    """WATCH guards only the lock: a heartbeat SET of synchronized_on, a plain SADD and a DEL by
    another connection between WATCH and EXEC leave the transaction to apply."""
    w = write_standard(server)
    other = server.client()

    def touch_other_keys():
        other.set(server.key("big_segments_synchronized_on"), str(now_ms()))
        other.sadd(server.key(f"big_segment_include:{context_hash('side-user')}"), REF)
        other.delete(server.key(f"big_segment_exclude:{context_hash('out-user')}"))

    assert w.patch(REF, "3", previous_version="2", included_add=["tx-user"], before_exec=touch_other_keys)
    client = make_client(server, FLAGS, SEGMENTS)
    for key, want in (("tx-user", True), ("side-user", True), ("out-user", False), ("in-user", True)):
        value, reason = evaluate(client, user(key))
        assert (key, value, reason["bigSegmentsStatus"]) == (key, want, "HEALTHY")
    r = server.client()
    assert r.exists(server.key(f"big_segment_exclude:{context_hash('out-user')}")) == 0
    assert r.get(server.key("big_segments_cursor")) == b"3"


def test_a_deleted_membership_key_is_an_unknown_context(server, make_client):
    write_standard(server)
    r = server.client()
    assert r.delete(server.key(f"big_segment_include:{context_hash('both-user')}")) == 1
    assert r.delete(server.key(f"big_segment_include:{context_hash('both-user')}")) == 0
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("both-user"))  # excluded only now
    assert (value, reason["kind"]) == (False, "FALLTHROUGH")


def test_a_cursor_set_to_the_empty_string_reads_back_empty(server):
    """Redis keeps a string SET to "" as "" (the key exists). A Relay-style writer tells the two
    apart: with "" its cursor guard compares against previousVersion; with nil it skips the
    guard and applies any patch."""
    w = RelayWriter(server)
    assert w.patch(REF, "", previous_version="", included_add=["page-1-user"])
    r = server.client()
    assert r.get(server.key("big_segments_cursor")) == b""
    assert r.exists(server.key("big_segments_cursor")) == 1
    # So a patch built on another version is skipped, as it would be after any other cursor.
    assert w.patch(REF, "7", previous_version="6", included_add=["late"]) is False


def test_a_transaction_is_seen_whole_or_not_at_all(server, make_client):
    """A writer moves a context between the included and the excluded list, one transaction a
    move; readers (in MULTI, and the SDK) never see it in both lists or in neither."""
    import threading

    w = RelayWriter(server)
    assert w.patch(REF, "0", included_add=["mover"])
    w.mark_synced()
    inc = server.key(f"big_segment_include:{context_hash('mover')}")
    exc = server.key(f"big_segment_exclude:{context_hash('mover')}")
    stop = threading.Event()
    seen = []

    def read():
        r = server.client()
        while not stop.is_set():
            with r.pipeline(transaction=True) as p:
                p.smembers(inc)
                p.smembers(exc)
                seen.append(tuple(len(x) for x in p.execute()))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for n in range(1, 101):
            if n % 2:
                assert w.patch(REF, str(n), previous_version=str(n - 1), included_remove=["mover"], excluded_add=["mover"])
            else:
                assert w.patch(REF, str(n), previous_version=str(n - 1), excluded_remove=["mover"], included_add=["mover"])
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert seen, "the readers read nothing"
    assert set(seen) <= {(1, 0), (0, 1)}, f"a half-applied move was seen: {set(seen)}"
    # 100 moves: back where it started, included.
    client = make_client(server, FLAGS, SEGMENTS)
    value, reason = evaluate(client, user("mover"))
    assert (value, reason["bigSegmentsStatus"]) == (True, "HEALTHY")


def test_the_sdk_recovers_when_the_server_comes_back_on_its_address(start_server, make_client):
    """Stop the server under a running SDK, then start it again on the same address over the
    same data: the SDK's store reconnects by itself and answers from the data written before."""
    server = start_server(persist=True)
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS, cache_time=0.1, status_poll_interval=0.1)
    status = client.big_segment_store_status_provider
    value, reason = evaluate(client, user("in-user"))
    assert (value, reason["bigSegmentsStatus"]) == (True, "HEALTHY")

    port = server.port
    server.stop()
    poll_until(lambda: status.status.available is False, "store status unavailable", 10)
    poll_until(lambda: evaluate(client, user("in-user"))[1]["bigSegmentsStatus"] == "STORE_ERROR", "STORE_ERROR", 10)

    server.start(init=False, port=port)
    poll_until(lambda: status.status.available is True, "store status available again", 10)
    assert status.status.stale is False
    poll_until(lambda: evaluate(client, user("in-user"))[1]["bigSegmentsStatus"] == "HEALTHY", "HEALTHY again", 10)
    for key, want in (("in-user", True), ("out-user", False), ("both-user", True), ("nobody", False)):
        value, reason = evaluate(client, user(key))
        assert (key, value, reason["bigSegmentsStatus"]) == (key, want, "HEALTHY")
    assert server.client().get(server.key("big_segments_cursor")) == b"2"


def test_the_sdk_store_over_a_unix_socket(start_server, make_client):
    server = start_server(unix=True)
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)
    assert client._config.big_segments.store._pool.connection_kwargs["path"] == server.unix_path
    for key, want, kind in (("in-user", True, "RULE_MATCH"), ("out-user", False, "FALLTHROUGH"),
                            ("both-user", True, "RULE_MATCH"), ("nobody", False, "FALLTHROUGH")):
        value, reason = evaluate(client, user(key))
        assert (key, value, reason["kind"], reason["bigSegmentsStatus"]) == (key, want, kind, "HEALTHY")


def test_many_threads_evaluating_at_once_through_the_sdk_pool(server, make_client):
    """8 threads share the SDK's connection pool, each evaluating 100 contexts it has not asked
    for before (two SMEMBERS each), while a writer keeps committing transactions."""
    import threading

    w = RelayWriter(server)
    keys = [f"bulk-{i}" for i in range(800)]
    assert w.patch(REF, "1", included_add=keys[0::2], excluded_add=keys[1::2])
    w.mark_synced()
    client = make_client(server, FLAGS, SEGMENTS)
    wrong, errors = [], []
    stop = threading.Event()

    def evaluate_slice(n):
        try:
            for i in range(n, 800, 8):
                value, reason = evaluate(client, user(keys[i]))
                if (value, reason["bigSegmentsStatus"]) != (i % 2 == 0, "HEALTHY"):
                    wrong.append((keys[i], value, reason))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def write():
        n = 1
        while not stop.is_set():
            n += 1
            if not w.patch("other.g1", str(n), previous_version=str(n - 1), included_add=[f"noise-{n}"]):
                errors.append(f"the writer's patch {n} was not applied")
                return

    writer = threading.Thread(target=write)
    writer.start()
    threads = [threading.Thread(target=evaluate_slice, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    writer.join(10)
    assert not errors, errors
    assert wrong == []
    assert server.client().scard(server.key(f"big_segment_include:{context_hash('noise-2')}")) == 1


def test_the_sdk_store_over_tls(start_server, make_client):
    """A `rediss://` URL and the CA in the SDK's redis_opts; a client that does not trust the
    certificate gets nothing."""
    server = start_server(tls=True)
    write_standard(server)
    client = make_client(server, FLAGS, SEGMENTS)
    assert server.url.startswith("rediss://")
    for key, want, kind in (("in-user", True, "RULE_MATCH"), ("out-user", False, "FALLTHROUGH"),
                            ("both-user", True, "RULE_MATCH"), ("nobody", False, "FALLTHROUGH")):
        value, reason = evaluate(client, user(key))
        assert (key, value, reason["kind"], reason["bigSegmentsStatus"]) == (key, want, kind, "HEALTHY")

    untrusting = make_client(server, FLAGS, SEGMENTS, redis_opts={})
    value, reason = evaluate(untrusting, user("in-user"))
    assert (value, reason["bigSegmentsStatus"]) == (False, "STORE_ERROR")
