//! A reader in this process, the writer in others: the `segstore` CLI (`apply`, `compact`)
//! run as child processes while this process holds a `ReadOnlyStore` with the default 50 ms
//! poll. The reader sees each acknowledged write (the child exited 0) soon after, never sees
//! half a batch, and keeps answering while compactions retire the files it had mapped.
#![cfg(feature = "cli")]

use segstore::{context_hash, Options, ReadOnlyStore, Snapshot, Status};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a write may take to reach the reader before the test calls it lost. The target
/// is 1 s; the margin keeps a loaded machine from failing the test (the figures are printed).
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// Runs the CLI on `dir`, writing `stdin` to it one line at a time with `gap` between lines;
/// panics with its stderr unless it exits 0.
fn segstore_paced(dir: &Path, args: &[&str], stdin: &str, gap: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segstore"))
        .env_remove("SEGSTORE_DIR")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn segstore");
    let mut pipe = child.stdin.take().expect("stdin");
    for line in stdin.split_inclusive('\n') {
        pipe.write_all(line.as_bytes()).expect("write stdin");
        pipe.flush().expect("flush stdin");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    drop(pipe);
    let out = child.wait_with_output().expect("wait for segstore");
    assert!(
        out.status.success(),
        "segstore {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the CLI on `dir` with `stdin`; panics with its stderr unless it exits 0.
fn segstore(dir: &Path, args: &[&str], stdin: &str) {
    segstore_paced(dir, args, stdin, Duration::ZERO);
}

fn init(dir: &Path) {
    segstore(dir, &["init"], "");
}

/// Waits until `ready` holds for the reader's snapshot; returns how long that took.
fn wait_for(reader: &ReadOnlyStore, what: &str, ready: impl Fn(&Snapshot) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ready(&reader.snapshot()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < VISIBLE_WITHIN,
            "{what}: not visible after {VISIBLE_WITHIN:?} (last poll error: {:?})",
            reader.last_error()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn each_acknowledged_write_of_another_process_becomes_visible() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let reader = ReadOnlyStore::open(dir.path(), Options::default()).unwrap();
    const WRITES: usize = 20;
    let mut latencies = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let key = format!("visible-{i}");
        let hash = context_hash(&key);
        assert_eq!(
            reader.snapshot().check("live.g1", hash.as_bytes()).unwrap(),
            Status::Unknown
        );
        // Spread the writes over the poll period, so the figure is not phase-locked to it.
        std::thread::sleep(Duration::from_millis((i as u64 * 17) % 50));
        let line = format!(r#"{{"segment": "live.g1", "included": {{"add": ["{key}"]}}}}"#);
        segstore(dir.path(), &["apply", "--hash-keys", "-"], &line);
        // The child has exited 0: the write is acknowledged and durable.
        latencies.push(wait_for(&reader, &key, |s| {
            s.check("live.g1", hash.as_bytes()).unwrap() == Status::Included
        }));
    }
    latencies.sort();
    let median = latencies[WRITES / 2];
    let max = latencies[WRITES - 1];
    let within_1s = latencies
        .iter()
        .filter(|l| **l <= Duration::from_secs(1))
        .count();
    println!(
        "reader-process visibility after the writer's exit, {WRITES} writes: median {:.1} ms, max {:.1} ms, {within_1s}/{WRITES} within 1 s",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    assert_eq!(reader.last_error(), None);
}

/// Line `i` of the patch feed: one event of two patches, adding `a{i}` to `a.g1` and `b{i}`
/// to `b.g1`, moving the cursor from `i-1` to `i`. Applied as one atomic batch.
fn two_segment_event(i: u64) -> String {
    let previous = if i == 1 {
        String::new()
    } else {
        (i - 1).to_string()
    };
    format!(
        concat!(
            r#"[{{"segmentId": "a.g1", "version": "{i}", "previousVersion": "{p}", "#,
            r#""changes": {{"included": {{"add": ["{a}"]}}}}}}, "#,
            r#"{{"segmentId": "b.g1", "version": "{i}", "previousVersion": "{i}", "#,
            r#""changes": {{"included": {{"add": ["{b}"]}}}}}}]"#,
            "\n"
        ),
        i = i,
        p = previous,
        a = context_hash(&format!("a{i}")),
        b = context_hash(&format!("b{i}")),
    )
}

/// The number of events `snap` holds, after checking that it holds exactly events `1..=n`
/// (both halves of each, nothing of later ones) on a few probes.
fn whole_events(snap: &Snapshot, probe: u64) -> u64 {
    let cursor = snap.metadata().cursor;
    let n: u64 = if cursor.is_empty() {
        0
    } else {
        cursor.parse().expect("a numeric cursor")
    };
    let count = |segment: &str| snap.segment(segment).map_or(0, |s| s.included);
    assert_eq!(
        (count("a.g1"), count("b.g1")),
        (n, n),
        "half an event visible at cursor {n}"
    );
    for i in [1, probe % n.max(1) + 1, n] {
        if (1..=n).contains(&i) {
            for side in ["a", "b"] {
                let key = context_hash(&format!("{side}{i}"));
                assert_eq!(
                    snap.check(&format!("{side}.g1"), key.as_bytes()).unwrap(),
                    Status::Included,
                    "event {i} missing its {side} half at cursor {n}"
                );
            }
        }
    }
    let next = context_hash(&format!("b{}", n + 1));
    assert_eq!(
        snap.check("b.g1", next.as_bytes()).unwrap(),
        Status::Unknown
    );
    n
}

fn store_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sstbl") || name.ends_with(".seglog"))
        .collect()
}

#[test]
fn batches_are_whole_and_compactions_retire_files_under_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    // One handle as an SDK opens it (default 50 ms poll), and one refreshed as fast as a
    // thread can, so that it tails the log at every point of the writer's appends.
    let reader = ReadOnlyStore::open(dir.path(), Options::default()).unwrap();
    let eager = ReadOnlyStore::open(
        dir.path(),
        Options {
            poll_interval: None,
            ..Options::default()
        },
    )
    .unwrap();
    const ROUNDS: u64 = 6;
    const EVENTS_PER_ROUND: u64 = 50;

    let done = AtomicBool::new(false);
    let samples = AtomicU64::new(0);
    let mut retired = BTreeSet::new();
    let mut seen = BTreeSet::new();
    std::thread::scope(|scope| {
        // Readers in this process sample the handle's snapshot as fast as they can.
        let samplers: Vec<_> = [&reader, &eager]
            .into_iter()
            .enumerate()
            .map(|(t, handle)| {
                let (done, samples, refresh) = (&done, &samples, t == 1);
                scope.spawn(move || {
                    let mut seen = BTreeSet::new();
                    let mut last = 0;
                    let mut probe = t as u64;
                    while !done.load(Ordering::Acquire) {
                        if refresh {
                            handle.refresh().expect("refresh while the writer works");
                        }
                        let n = whole_events(&handle.snapshot(), probe);
                        assert!(n >= last, "went back from event {last} to {n}");
                        last = n;
                        probe += 1;
                        samples.fetch_add(1, Ordering::Relaxed);
                        seen.insert(n);
                    }
                    seen
                })
            })
            .collect();
        // The writer: rounds of patch events from one `apply` process, each followed by a
        // `compact` process that rewrites the tables and retires the old files.
        let mut before = store_files(dir.path());
        for round in 0..ROUNDS {
            let feed: String = (round * EVENTS_PER_ROUND + 1..=(round + 1) * EVENTS_PER_ROUND)
                .map(two_segment_event)
                .collect();
            segstore_paced(
                dir.path(),
                &["apply", "--format", "patches", "-"],
                &feed,
                Duration::from_millis(2),
            );
            segstore(dir.path(), &["compact"], "");
            let after = store_files(dir.path());
            retired.extend(before.difference(&after).cloned());
            before = after;
        }
        let total = ROUNDS * EVENTS_PER_ROUND;
        for handle in [&reader, &eager] {
            if std::ptr::eq(handle, &eager) {
                handle.refresh().unwrap();
            }
            wait_for(handle, "the last event", |s| {
                s.metadata().cursor == total.to_string()
            });
        }
        done.store(true, Ordering::Release);
        for sampler in samplers {
            seen.extend(sampler.join().unwrap());
        }
    });

    let total = ROUNDS * EVENTS_PER_ROUND;
    assert!(
        retired.len() >= ROUNDS as usize,
        "compactions retired only {retired:?}"
    );
    for handle in [&reader, &eager] {
        let snap = handle.snapshot();
        assert_eq!(whole_events(&snap, 7), total);
        for i in 1..=total {
            let key = context_hash(&format!("a{i}"));
            assert_eq!(
                snap.check("a.g1", key.as_bytes()).unwrap(),
                Status::Included
            );
        }
        assert_eq!(handle.last_error(), None);
    }
    println!(
        "{} snapshots sampled across {ROUNDS} apply + compact rounds: {} distinct states of {total} events, each whole; {} files retired under the reader",
        samples.load(Ordering::Relaxed),
        seen.len(),
        retired.len(),
    );
}
