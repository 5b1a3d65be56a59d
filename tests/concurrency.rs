//! Readers never see half a write, never wait, and keep working while the writer compacts
//! and retires the files under them.
//!
//! Batch `i` adds `a{i}` to one segment and `b{i}` to another, removes `a{i-1}`'s twin
//! `c{i-1}`, and moves the cursor to `i`. A reader that sees cursor `c` must see exactly the
//! effect of batches `1..=c`.

use segstore::{Batch, List, Options, ReadOnlyStore, Snapshot, Status, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WRITES: u64 = 400;

fn batch(i: u64) -> Batch {
    let mut b = Batch::new()
        .add("one.g1", List::Included, format!("a{i}"))
        .add("two.g1", List::Included, format!("b{i}"))
        .add("two.g1", List::Excluded, format!("c{i}"));
    if i > 1 {
        b = b.remove("two.g1", List::Excluded, format!("c{}", i - 1));
    }
    b.with_cursor(
        if i == 1 {
            String::new()
        } else {
            (i - 1).to_string()
        },
        i.to_string(),
    )
}

/// Checks that `snap` is the state after exactly `c` writes; returns `c`.
fn check_prefix(snap: &Snapshot, probe: u64) -> u64 {
    let cursor = snap.metadata().cursor;
    let c: u64 = if cursor.is_empty() {
        0
    } else {
        cursor.parse().unwrap()
    };
    let j = if c == 0 { 0 } else { probe % c + 1 };
    if c > 0 {
        assert_eq!(
            snap.check("one.g1", format!("a{j}").as_bytes()).unwrap(),
            Status::Included
        );
        assert_eq!(
            snap.check("two.g1", format!("b{j}").as_bytes()).unwrap(),
            Status::Included
        );
        assert_eq!(
            snap.check("two.g1", format!("c{c}").as_bytes()).unwrap(),
            Status::Excluded
        );
        if j < c {
            assert_eq!(
                snap.check("two.g1", format!("c{j}").as_bytes()).unwrap(),
                Status::Unknown
            );
        }
        assert_eq!(snap.segment("one.g1").unwrap().included, c);
        assert_eq!(snap.segment("two.g1").unwrap().excluded, 1);
    }
    let next = c + 1;
    assert_eq!(
        snap.check("one.g1", format!("a{next}").as_bytes()).unwrap(),
        Status::Unknown
    );
    assert_eq!(
        snap.check("two.g1", format!("b{next}").as_bytes()).unwrap(),
        Status::Unknown
    );
    c
}

#[test]
fn readers_see_whole_prefixes_during_writes_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: false,
        auto_compact: true,
        compact_min_log_bytes: 4096,
        compact_log_ratio: 0.0,
        ..Options::default()
    };
    let store = Arc::new(Store::create(dir.path(), options.clone()).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..2u64 {
        let store = store.clone();
        let done = done.clone();
        handles.push(std::thread::spawn(move || {
            let mut last = 0;
            let mut probe = t;
            while !done.load(Ordering::Acquire) {
                probe = probe
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let c = check_prefix(&store.snapshot(), probe >> 33);
                assert!(c >= last, "went back from {last} to {c}");
                last = c;
            }
        }));
    }
    {
        let done = done.clone();
        let dir = dir.path().to_owned();
        let reader_options = Options {
            poll_interval: Some(Duration::from_millis(1)),
            ..options.clone()
        };
        handles.push(std::thread::spawn(move || {
            let reader = ReadOnlyStore::open(&dir, reader_options).unwrap();
            let mut last = 0;
            let mut probe = 7u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                probe = probe.wrapping_mul(6364136223846793005).wrapping_add(1);
                if finished {
                    reader.refresh().unwrap();
                }
                let c = check_prefix(&reader.snapshot(), probe >> 33);
                assert!(c >= last, "reader went back from {last} to {c}");
                last = c;
                if finished {
                    assert_eq!(c, WRITES, "reader caught up");
                    return;
                }
            }
        }));
    }
    for i in 1..=WRITES {
        store.write(batch(i)).unwrap();
        if i % 97 == 0 {
            store.compact().unwrap();
        }
    }
    done.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.background_error(), None);
    assert_eq!(check_prefix(&store.snapshot(), 3), WRITES);
    assert!(segstore::verify(dir.path()).unwrap().is_empty());
}

/// `verify` and `stats` take no lock. A compaction beside them retires logs and table files
/// that the manifest they read still named; they must read the store again, not report those
/// files missing.
#[test]
fn verify_and_stats_beside_a_compacting_writer_find_nothing_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: false,
        auto_compact: false,
        ..Options::default()
    };
    let store = Store::create(dir.path(), options).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let dir = dir.path().to_owned();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut runs = 0u32;
            while !done.load(Ordering::Acquire) || runs == 0 {
                let problems = segstore::verify(&dir).unwrap();
                assert!(problems.is_empty(), "run {runs}: {problems:?}");
                let stats = segstore::stats(&dir);
                assert!(stats.is_ok(), "run {runs}: {stats:?}");
                runs += 1;
            }
            runs
        })
    };
    // Each round bulk loads a few lists into files of their own and writes to the log, then
    // packs them all: every compaction retires the log and the files the last one named.
    for round in 0..40u64 {
        for list in 0..5u64 {
            let keys = (0..200).map(|k| Ok(format!("r{round}-l{list}-k{k}").into_bytes()));
            store
                .replace_list(&format!("s{list}.g1"), None, List::Included, keys)
                .unwrap();
        }
        store
            .write(Batch::new().add("w.g1", List::Included, format!("k{round}")))
            .unwrap();
        store.compact().unwrap();
    }
    done.store(true, Ordering::Release);
    let runs = checker.join().unwrap();
    assert!(runs > 0);
    assert!(segstore::verify(dir.path()).unwrap().is_empty());
}
