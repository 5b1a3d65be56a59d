//! `segstore sync` as a real process against the scripted fake: SIGTERM, the writer lock,
//! kill -9 in the middle of streamed events and a restart that resumes from the durable
//! cursor, and a reader in another process (this one) seeing streamed changes, with the latency
//! from the fake sending an event to the reader seeing it printed.
//!
//! The hidden `--heartbeat-ms`, `--transient-backoff-ms` and `--rejected-backoff-ms` flags are
//! the testing knobs that keep every wait short.
#![cfg(feature = "cli")]

mod support;

use segstore::{context_hash, List, ReadOnlyStore, Status};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fake_ld::{event, patch, replies, FakeLd, Hit, Reply, Step, StreamScript};

const KEY: &str = "sdk-process-test-key-5678";

fn sync_command(dir: &Path, fake: &FakeLd) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segstore"));
    cmd.arg("--dir")
        .arg(dir)
        .arg("sync")
        .arg("--init")
        .args(["--base-uri", &fake.uri(), "--stream-uri", &fake.uri()])
        .args(["--heartbeat-ms", "60000"])
        .args(["--transient-backoff-ms", "40,80"])
        .args(["--rejected-backoff-ms", "200,400"])
        .env("LD_SDK_KEY", KEY)
        .env("SEGSTORE_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

fn spawn_sync(dir: &Path, fake: &FakeLd, log: &Path) -> Child {
    let log = File::create(log).unwrap();
    sync_command(dir, fake)
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn segstore sync")
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the sync process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) only sends a signal; `pid` is our own child, which has not been reaped
    // yet (we hold its `Child` and have not waited on it), so the pid cannot name another process.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill failed");
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn refreshed(r: &ReadOnlyStore) -> &ReadOnlyStore {
    if let Err(e) = r.refresh() {
        panic!("refresh: {e}");
    }
    r
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    (dir, path)
}

#[test]
fn sigterm_stops_cleanly_the_lock_refuses_a_second_sync_and_the_key_is_never_logged() {
    let a = context_hash("a");
    let fake = FakeLd::start(
        replies(vec![Reply::page(&[patch("s.g1", "", "v1", &[&a], &[])])]),
        vec![],
    );
    let (tmp, dir) = tmp();
    let log = tmp.path().join("sync.log");
    let mut child = spawn_sync(&dir, &fake, &log);
    let r = support::open_reader(&dir);
    wait_until("live", || {
        let m = refreshed(&r).snapshot().metadata();
        m.cursor == "v1" && m.synchronized_on.is_some() && fake.hits_to("poll").len() >= 3
    });

    let second = sync_command(&dir, &fake).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("locked"), "{err}");

    let no_key = sync_command(&dir, &fake)
        .env_remove("LD_SDK_KEY")
        .output()
        .unwrap();
    assert_eq!(no_key.status.code(), Some(2));

    send_signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGTERM received"), "{text}");
    assert!(text.contains("sync stopped on request"), "{text}");
    assert!(text.contains("caught up"), "{text}");
    assert!(!text.contains(KEY), "the SDK key must never be logged");
    assert!(!text.contains(&a), "keys are never logged");
    assert_eq!(
        refreshed(&r)
            .snapshot()
            .check("s.g1", a.as_bytes())
            .unwrap(),
        Status::Included
    );
}

/// The chain of the kill test: patch `i` (1-based) moves `v{i-1}` → `v{i}`, adds `k{i}` and,
/// every third patch, removes `k{i-2}`: a lost, doubled or reordered patch shows in the set.
fn chain_patch(i: usize) -> serde_json::Value {
    let prev = if i == 1 {
        String::new()
    } else {
        format!("v{:03}", i - 1)
    };
    let key = format!("k{i}");
    let removed = format!("k{}", i.saturating_sub(2));
    let remove: Vec<&str> = if i.is_multiple_of(3) {
        vec![&removed]
    } else {
        vec![]
    };
    patch("chain.g1", &prev, &format!("v{i:03}"), &[&key], &remove)
}

fn model(n: usize) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for i in 1..=n {
        set.insert(format!("k{i}"));
        if i.is_multiple_of(3) {
            set.remove(&format!("k{}", i.saturating_sub(2)));
        }
    }
    set
}

fn store_state(r: &ReadOnlyStore) -> (usize, BTreeSet<String>) {
    let snap = refreshed(r).snapshot();
    let cursor = snap.metadata().cursor;
    let n = cursor
        .strip_prefix('v')
        .map_or(0, |v| v.parse::<usize>().unwrap());
    let keys = match snap.export("chain.g1", List::Included) {
        Ok(keys) => keys
            .map(|k| String::from_utf8(k.to_vec()).unwrap())
            .collect(),
        Err(_) => BTreeSet::new(),
    };
    (n, keys)
}

#[test]
fn kill_9_mid_event_then_restart_resumes_from_the_durable_cursor() {
    const ROUNDS: usize = 4;
    const EVENTS_PER_ROUND: usize = 4;
    const PATCHES_PER_EVENT: usize = 3;
    const TOTAL: usize = ROUNDS * (EVENTS_PER_ROUND + 1) * PATCHES_PER_EVENT;

    // The poll serves the chain after `after`, up to what has been published.
    let published = Arc::new(AtomicUsize::new(0));
    let poll_published = Arc::clone(&published);
    let poll = move |hit: &Hit| {
        let upto = poll_published.load(Ordering::SeqCst);
        let start = hit
            .after
            .as_deref()
            .map_or(0, |v| v.trim_start_matches('v').parse::<usize>().unwrap());
        let page: Vec<_> = (start + 1..=upto).map(chain_patch).collect();
        Reply::page(&page)
    };
    let fake = FakeLd::start(poll, vec![]);
    let (tmp, dir) = tmp();
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut next_rand = move |bound: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % bound
    };

    let mut reader: Option<ReadOnlyStore> = None;
    for round in 0..ROUNDS {
        let (tx, rx) = mpsc::channel::<String>();
        fake.push_stream(StreamScript::Steps(vec![Step::Live(rx)]));
        let log = tmp.path().join(format!("sync-{round}.log"));
        let polls_before = fake.hits_to("poll").len();
        let streams_before = fake.hits_to("stream").len();
        // The restart resumes from the durable cursor: its first poll asks for what follows it.
        // (Read before the child starts: its first poll's page moves the cursor on.)
        let durable = reader.as_ref().map_or(0, |r| store_state(r).0);
        let mut child = spawn_sync(&dir, &fake, &log);
        let r = reader.get_or_insert_with(|| support::open_reader(&dir));
        wait_until("the first poll of this round", || {
            fake.hits_to("poll").len() > polls_before
        });
        let first_poll = fake.hits_to("poll")[polls_before].after.clone();
        let expected_after = (durable > 0).then(|| format!("v{durable:03}"));
        assert_eq!(first_poll, expected_after, "round {round}");
        wait_until("the stream of this round", || {
            fake.hits_to("stream").len() > streams_before
        });
        let start = published.load(Ordering::SeqCst);
        wait_until("caught up", || store_state(r).0 == start);

        // A burst of whole events, then half of one, then kill -9 at a random moment.
        let mut next = start + 1;
        for _ in 0..EVENTS_PER_ROUND {
            let patches: Vec<_> = (next..next + PATCHES_PER_EVENT).map(chain_patch).collect();
            next += PATCHES_PER_EVENT;
            tx.send(format!("event: patch\ndata: {}\n\n", event(&patches)))
                .unwrap();
        }
        let half: Vec<_> = (next..next + PATCHES_PER_EVENT).map(chain_patch).collect();
        let half = format!("event: patch\ndata: {}", event(&half));
        tx.send(half[..half.len() / 2].to_owned()).unwrap();
        std::thread::sleep(Duration::from_millis(next_rand(15)));
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        // Everything streamed, the half-sent event included, is now served by the poll.
        published.store(next + PATCHES_PER_EVENT - 1, Ordering::SeqCst);
        drop(tx);

        // Whatever was durable is a whole prefix of the chain, never part of an event.
        if std::env::var_os("SYNC_TEST_SHOW_LOGS").is_some() {
            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        let fresh = support::open_reader(&dir);
        let (n, keys) = store_state(&fresh);
        assert!(n >= start, "round {round}: went back from {start} to {n}");
        assert_eq!(
            (n - start) % PATCHES_PER_EVENT,
            0,
            "round {round}: half an event at {n}"
        );
        assert_eq!(keys, model(n), "round {round}: state at cursor v{n:03}");
        println!(
            "round {round}: killed with cursor v{n:03} (published {})",
            published.load(Ordering::SeqCst)
        );
    }

    // A last, clean run catches up with everything.
    let log = tmp.path().join("sync-final.log");
    let mut child = spawn_sync(&dir, &fake, &log);
    let r = support::open_reader(&dir);
    wait_until("all patches", || store_state(&r).0 == TOTAL);
    send_signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    let (n, keys) = store_state(&r);
    assert_eq!(n, TOTAL);
    assert_eq!(keys, model(TOTAL), "nothing lost or doubled");
}

#[test]
fn a_reader_process_sees_streamed_changes() {
    const EVENTS: usize = 100;
    let (tx, rx) = mpsc::channel::<String>();
    let fake = FakeLd::start(
        replies(vec![]),
        vec![StreamScript::Steps(vec![Step::Live(rx)])],
    );
    let (tmp, dir) = tmp();
    let log = tmp.path().join("sync.log");
    let mut child = spawn_sync(&dir, &fake, &log);
    let r = support::open_reader(&dir);
    wait_until("live", || {
        refreshed(&r)
            .snapshot()
            .metadata()
            .synchronized_on
            .is_some()
            && fake.hits_to("poll").len() >= 2
    });

    let mut latencies = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let prev = if i == 0 {
            String::new()
        } else {
            format!("e{i}")
        };
        let key = context_hash(&format!("user-{i}"));
        let data = event(&[patch(
            "live.g1",
            &prev,
            &format!("e{}", i + 1),
            &[&key],
            &[],
        )]);
        tx.send(format!("event: patch\ndata: {data}\n\n")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Err(e) = r.refresh() {
                panic!("refresh: {e}");
            }
            if r.snapshot().check("live.g1", key.as_bytes()).unwrap() == Status::Included {
                break;
            }
            assert!(Instant::now() < deadline, "event {i} never became visible");
            std::thread::sleep(Duration::from_micros(100));
        }
        let visible = Instant::now();
        wait_until("the fake's record of the send", || fake.sent().len() > i);
        let sent = fake.sent()[i];
        latencies.push(visible.saturating_duration_since(sent));
    }
    send_signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    assert_eq!(r.snapshot().metadata().cursor, format!("e{EVENTS}"));

    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "event sent by the fake -> visible in a reader process ({EVENTS} events, fsync per \
         event, reader refreshing every 0.1 ms): p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(90),
        pct(99),
        latencies[latencies.len() - 1]
    );
}
