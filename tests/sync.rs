//! The sync loop against a scripted fake of LaunchDarkly's feed, in process: catch-up pages,
//! shared and empty versions, cursor mismatches in pages and events, dropped streams, 401s,
//! 5xx backoff and the heartbeat. Intervals are shortened through `SyncConfig`.
#![cfg(feature = "sync")]

mod support;

use segstore::sync::{self, BackoffPolicy, SdkKey, Stopper, SyncConfig, SyncControl, SyncError};
use segstore::{context_hash, Options, ReadOnlyStore, Status, Store};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::fake_ld::{event, patch, replies, FakeLd, Reply, Step, StreamScript};

const KEY: &str = "sdk-test-key-1234";

fn config(fake: &FakeLd) -> SyncConfig {
    let mut config = SyncConfig::new(SdkKey::new(KEY).unwrap());
    config.base_uri = fake.uri();
    config.stream_uri = format!("{}/", fake.uri());
    config.heartbeat = Duration::from_secs(60);
    config.transient_backoff = BackoffPolicy {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(80),
    };
    config.rejected_backoff = BackoffPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(400),
    };
    config.stream_read_timeout = Duration::from_secs(10);
    config
}

struct Running {
    stopper: Stopper,
    thread: Option<JoinHandle<Result<sync::SyncSummary, SyncError>>>,
}

impl Running {
    fn start(dir: &Path, config: SyncConfig) -> Running {
        let control = SyncControl::new();
        let stopper = control.stopper();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let store = Store::open_or_create(&dir, Options::default())?;
            sync::run(&store, &config, control)
        });
        Running {
            stopper,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> sync::SyncSummary {
        self.stopper.stop();
        let thread = self.thread.take().unwrap();
        thread
            .join()
            .unwrap()
            .expect("the sync returns Ok after a stop")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `cond` (refreshing the reader) until it holds; fails the test after 20 s.
fn wait_until(reader: &ReadOnlyStore, what: &str, mut cond: impl FnMut(&ReadOnlyStore) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Err(e) = reader.refresh() {
            panic!("refreshing the reader while waiting for {what}: {e}");
        }
        if cond(reader) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for_hits(fake: &FakeLd, endpoint: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.hits_to(endpoint).len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} {endpoint} requests: {:?}",
            fake.hits()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cursor(r: &ReadOnlyStore) -> String {
    r.snapshot().metadata().cursor
}

fn synced_on(r: &ReadOnlyStore) -> Option<u64> {
    r.snapshot().metadata().synchronized_on
}

fn status(r: &ReadOnlyStore, segment: &str, user: &str) -> Status {
    r.snapshot()
        .check(segment, context_hash(user).as_bytes())
        .unwrap()
}

fn h(user: &str) -> String {
    context_hash(user)
}

fn afters(fake: &FakeLd) -> Vec<Option<String>> {
    fake.hits_to("poll").into_iter().map(|h| h.after).collect()
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    (dir, path)
}

#[test]
fn initial_paged_sync_with_empty_versions_then_live() {
    let (u1, u2, u3, u4) = (h("user1"), h("user2"), h("user3"), h("user4"));
    let page1 = Reply::page(&[
        patch("beta.g1", "", "", &[&u1, &u2], &[]),
        patch("gamma.g2", "", "", &[&u3], &[]),
    ]);
    let page2 = Reply::page(&[
        patch("beta.g1", "", "", &[&u4], &[]),
        patch("beta.g1", "", "v1", &[], &[&u1]),
    ]);
    let fake = FakeLd::start(replies(vec![page1, page2]), vec![]);
    let (_tmp, dir) = tmp();
    let running = Running::start(&dir, config(&fake));
    let r = support::open_reader(&dir);
    wait_until(&r, "cursor v1 and synchronized", |r| {
        cursor(r) == "v1" && synced_on(r).is_some()
    });
    // Live: the stream was opened and the gap poll came after it.
    wait_for_hits(&fake, "poll", 4);
    wait_for_hits(&fake, "stream", 1);
    let summary = running.stop();

    assert_eq!(status(&r, "beta.g1", "user1"), Status::Unknown);
    assert_eq!(status(&r, "beta.g1", "user2"), Status::Included);
    assert_eq!(status(&r, "beta.g1", "user4"), Status::Included);
    assert_eq!(status(&r, "gamma.g2", "user3"), Status::Included);
    // The pages with empty versions leave the cursor empty: no `after` until "v1".
    assert_eq!(
        afters(&fake),
        vec![None, None, Some("v1".to_owned()), Some("v1".to_owned())]
    );
    let hits = fake.hits();
    let kinds: Vec<_> = hits.iter().map(|h| h.endpoint.as_str()).collect();
    assert_eq!(kinds, vec!["poll", "poll", "poll", "stream", "poll"]);
    assert!(hits.iter().all(|h| h.authorization.as_deref() == Some(KEY)));
    assert_eq!(summary.patches, 4);
    assert_eq!(summary.ops, 5);
}

#[test]
fn several_patches_share_one_version_in_pages_and_events() {
    let (u1, u2, u3, u4, u5) = (h("u1"), h("u2"), h("u3"), h("u4"), h("u5"));
    let page = Reply::page(&[
        patch("s.g1", "", "v1", &[&u1], &[]),
        patch("t.g1", "v1", "v1", &[&u2], &[]),
        patch("s.g1", "v1", "v2", &[&u3], &[]),
    ]);
    let stream = StreamScript::Steps(vec![
        Step::Event(event(&[
            patch("s.g1", "v2", "v3", &[&u4], &[&u1]),
            patch("t.g1", "v3", "v3", &[&u5], &[]),
        ])),
        Step::Hold,
    ]);
    let fake = FakeLd::start(replies(vec![page]), vec![stream]);
    let (_tmp, dir) = tmp();
    let running = Running::start(&dir, config(&fake));
    let r = support::open_reader(&dir);
    wait_until(&r, "cursor v3", |r| cursor(r) == "v3");
    let summary = running.stop();
    assert_eq!(status(&r, "s.g1", "u1"), Status::Unknown);
    for (seg, user) in [
        ("t.g1", "u2"),
        ("s.g1", "u3"),
        ("s.g1", "u4"),
        ("t.g1", "u5"),
    ] {
        assert_eq!(status(&r, seg, user), Status::Included, "{seg} {user}");
    }
    assert_eq!(summary.events, 1);
    assert_eq!(summary.patches, 5);
}

#[test]
fn an_out_of_order_patch_stops_a_page_and_the_next_poll_restarts_from_the_cursor() {
    let (a, b, c, b2) = (h("a"), h("b"), h("c"), h("b2"));
    let fake = FakeLd::start(
        replies(vec![
            Reply::page(&[
                patch("s.g1", "", "v1", &[&a], &[]),
                patch("s.g1", "elsewhere", "v2", &[&b], &[]),
                patch("s.g1", "v2", "v3", &[&c], &[]),
            ]),
            Reply::page(&[patch("s.g1", "v1", "v2", &[&b2], &[])]),
        ]),
        vec![],
    );
    let (_tmp, dir) = tmp();
    let running = Running::start(&dir, config(&fake));
    let r = support::open_reader(&dir);
    wait_until(&r, "cursor v2 and synchronized", |r| {
        cursor(r) == "v2" && synced_on(r).is_some()
    });
    wait_for_hits(&fake, "stream", 1);
    running.stop();
    assert_eq!(status(&r, "s.g1", "a"), Status::Included);
    assert_eq!(status(&r, "s.g1", "b2"), Status::Included);
    // Nothing from or after the mismatching patch.
    assert_eq!(status(&r, "s.g1", "b"), Status::Unknown);
    assert_eq!(status(&r, "s.g1", "c"), Status::Unknown);
    let afters = afters(&fake);
    assert_eq!(afters[..3], [None, Some("v1".into()), Some("v2".into())]);
}

#[test]
fn an_out_of_order_event_is_not_applied_and_the_sync_restarts_from_the_cursor() {
    let (x, y, z, good) = (h("x"), h("y"), h("z"), h("good"));
    let fake = FakeLd::start(
        replies(vec![Reply::page(&[patch("s.g1", "", "v1", &[&x], &[])])]),
        vec![
            // A broken chain inside the event: its first patch fits the cursor, its second
            // does not follow the first. Nothing of it may be applied.
            StreamScript::Steps(vec![
                Step::Event(event(&[
                    patch("s.g1", "v1", "v2", &[&y], &[&x]),
                    patch("s.g1", "v7", "v8", &[&z], &[]),
                ])),
                Step::Hold,
            ]),
            // An event whose first patch does not fit the stored cursor.
            StreamScript::Steps(vec![
                Step::Event(event(&[patch("s.g1", "v5", "v6", &[&z], &[])])),
                Step::Hold,
            ]),
            StreamScript::Steps(vec![
                Step::Event(event(&[patch("s.g1", "v1", "v2", &[&good], &[])])),
                Step::Hold,
            ]),
        ],
    );
    let (_tmp, dir) = tmp();
    let running = Running::start(&dir, config(&fake));
    let r = support::open_reader(&dir);
    wait_until(&r, "cursor v2", |r| cursor(r) == "v2");
    running.stop();
    assert_eq!(
        status(&r, "s.g1", "x"),
        Status::Included,
        "not half-applied"
    );
    assert_eq!(status(&r, "s.g1", "y"), Status::Unknown);
    assert_eq!(status(&r, "s.g1", "z"), Status::Unknown);
    assert_eq!(status(&r, "s.g1", "good"), Status::Included);
    assert_eq!(fake.hits_to("stream").len(), 3);
    // Each restart polled again from the stored cursor "v1".
    let afters = afters(&fake);
    assert_eq!(afters[0], None);
    assert!(
        afters[1..].iter().all(|a| a.as_deref() == Some("v1")),
        "{afters:?}"
    );
    assert!(
        afters.len() >= 7,
        "3 polls before the first stream, 2 (catch-up, gap) before each other: {afters:?}"
    );
}

#[test]
fn a_dropped_stream_is_reconnected_and_nothing_is_missed() {
    let (a, b, c) = (h("a"), h("b"), h("c"));
    let pages = [
        patch("s.g1", "", "v1", &[&a], &[]),
        patch("s.g1", "v1", "v2", &[&b], &[]),
        patch("s.g1", "v2", "v3", &[&c], &[]),
    ];
    // The poll serves the chain after `after`, up to what has been "published".
    let published = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let published_poll = std::sync::Arc::clone(&published);
    let poll = move |hit: &support::fake_ld::Hit| {
        let upto = published_poll.load(std::sync::atomic::Ordering::SeqCst);
        let start = match hit.after.as_deref() {
            None => 0,
            Some(v) => pages
                .iter()
                .position(|p| p["version"] == v)
                .map_or(0, |i| i + 1),
        };
        Reply::page(pages.get(start..upto.max(start)).unwrap_or(&[]))
    };
    let fake = FakeLd::start(
        poll,
        vec![
            // Delivers v2, then the connection ends.
            StreamScript::Steps(vec![Step::Event(event(&[patch(
                "s.g1",
                "v1",
                "v2",
                &[&b],
                &[],
            )]))]),
        ],
    );
    published.store(2, std::sync::atomic::Ordering::SeqCst);
    let (_tmp, dir) = tmp();
    let running = Running::start(&dir, config(&fake));
    let r = support::open_reader(&dir);
    wait_until(&r, "cursor v2", |r| cursor(r) == "v2");
    // While the sync reconnects, v3 is published: the catch-up after the reconnect gets it.
    published.store(3, std::sync::atomic::Ordering::SeqCst);
    wait_until(&r, "cursor v3", |r| cursor(r) == "v3");
    wait_for_hits(&fake, "stream", 2);
    running.stop();
    for user in ["a", "b", "c"] {
        assert_eq!(status(&r, "s.g1", user), Status::Included, "{user}");
    }
}

#[test]
fn unauthorized_backs_off_on_the_long_schedule_then_recovers() {
    let a = h("a");
    let fake = FakeLd::start(
        replies(vec![
            Reply::Status(401),
            Reply::Status(403),
            Reply::page(&[patch("s.g1", "", "v1", &[&a], &[])]),
        ]),
        vec![],
    );
    let (_tmp, dir) = tmp();
    let config = config(&fake);
    let rejected = config.rejected_backoff;
    let running = Running::start(&dir, config);
    let r = support::open_reader(&dir);
    wait_until(&r, "cursor v1 and synchronized", |r| {
        cursor(r) == "v1" && synced_on(r).is_some()
    });
    let summary = running.stop();
    assert_eq!(status(&r, "s.g1", "a"), Status::Included);
    assert!(summary.retries >= 2);
    // Each retry waited at least half its delay (jitter takes off at most 50%).
    let polls = fake.hits_to("poll");
    let first_gap = polls[1].at - polls[0].at;
    let second_gap = polls[2].at - polls[1].at;
    assert!(first_gap >= rejected.initial / 2, "{first_gap:?}");
    assert!(second_gap >= rejected.initial, "doubled: {second_gap:?}");
}

#[test]
fn server_errors_back_off_on_the_short_schedule_then_recover() {
    let a = h("a");
    let fake = FakeLd::start(
        replies(vec![
            Reply::Status(500),
            Reply::Status(503),
            Reply::Status(429),
            Reply::page(&[patch("s.g1", "", "v1", &[&a], &[])]),
        ]),
        vec![StreamScript::Status(502), StreamScript::Status(408)],
    );
    let (_tmp, dir) = tmp();
    let config = config(&fake);
    let transient = config.transient_backoff;
    let running = Running::start(&dir, config);
    let r = support::open_reader(&dir);
    wait_until(&r, "cursor v1", |r| cursor(r) == "v1");
    // Two refused streams, then the third connection holds.
    wait_for_hits(&fake, "stream", 3);
    let summary = running.stop();
    assert!(summary.retries >= 5, "{summary:?}");
    let polls = fake.hits_to("poll");
    for pair in polls.windows(2).take(3) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= transient.initial / 2, "no tight loop: {gap:?}");
    }
    let streams = fake.hits_to("stream");
    assert!(streams[1].at - streams[0].at >= transient.initial / 2);
}

#[test]
fn the_heartbeat_sets_synchronized_on_while_the_stream_is_quiet() {
    let fake = FakeLd::start(replies(vec![]), vec![]);
    let (_tmp, dir) = tmp();
    let mut config = config(&fake);
    config.heartbeat = Duration::from_millis(100);
    let running = Running::start(&dir, config);
    let r = support::open_reader(&dir);
    wait_until(&r, "first synchronized_on", |r| synced_on(r).is_some());
    let mut seen = vec![synced_on(&r).unwrap()];
    for _ in 0..3 {
        let last = *seen.last().unwrap();
        wait_until(&r, "a later synchronized_on", |r| {
            synced_on(r).is_some_and(|t| t > last)
        });
        seen.push(synced_on(&r).unwrap());
    }
    running.stop();
    // One stream, no events, the cursor untouched: only the heartbeat moved it.
    assert_eq!(fake.hits_to("stream").len(), 1);
    assert_eq!(cursor(&r), "");
    assert!(r.snapshot().segments().is_empty());
}
