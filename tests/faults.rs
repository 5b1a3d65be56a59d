//! Fault injection below the engine: the N-th file operation of a write, a bulk replace or a
//! compaction fails (EIO, ENOSPC, or a short write), for every N.
//!
//! Invariants: the failed call returns an error; the writer's snapshot (what readers see)
//! is still the last good state; after a failed log append or fsync the writer refuses every
//! further write until reopened (it never carries on as if the fsync had succeeded); a reopen
//! without faults finds either the state before the call or the state after it, whole, and
//! `verify` finds nothing wrong. A call that returned `Ok` is durable.

mod scratch;

use segstore::io::{Fault, FaultInjector, IoOp};
use segstore::{Batch, Error, List, Options, Snapshot, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Fails the `fail_at`-th operation (counting from 0) once armed.
#[derive(Debug)]
struct Countdown {
    armed: AtomicBool,
    count: AtomicUsize,
    fail_at: usize,
    fault: Fault,
    hit: Mutex<Option<(IoOp, PathBuf)>>,
}

impl Countdown {
    fn new(fail_at: usize, fault: Fault) -> Arc<Countdown> {
        Arc::new(Countdown {
            armed: AtomicBool::new(false),
            count: AtomicUsize::new(0),
            fail_at,
            fault,
            hit: Mutex::new(None),
        })
    }
}

impl FaultInjector for Countdown {
    fn inject(&self, op: IoOp, path: &Path) -> Option<Fault> {
        if !self.armed.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if n == self.fail_at {
            *self.hit.lock().unwrap() = Some((op, path.to_owned()));
            return Some(self.fault);
        }
        None
    }
}

type State = (
    BTreeMap<String, (String, Vec<Vec<u8>>, Vec<Vec<u8>>)>,
    Option<u64>,
    String,
);

fn state(snap: &Snapshot) -> State {
    let mut segments = BTreeMap::new();
    for info in snap.segments() {
        let inc = snap
            .export(&info.segment, List::Included)
            .unwrap()
            .collect();
        let exc = snap
            .export(&info.segment, List::Excluded)
            .unwrap()
            .collect();
        segments.insert(info.segment.clone(), (info.kind.clone(), inc, exc));
    }
    let meta = snap.metadata();
    (segments, meta.synchronized_on, meta.cursor)
}

fn options(injector: Option<Arc<Countdown>>) -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        sort_memory_budget: 200,
        fault_injector: injector.map(|i| i as Arc<dyn FaultInjector>),
        membership_index_min_lists: 1,
        ..Options::default()
    }
}

fn keys(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i:04}").into_bytes())
        .collect()
}

/// Prior state: a table, an overlay on it, a second segment, a cursor.
fn setup(store: &Store) {
    store
        .replace_list(
            "base.g1",
            None,
            List::Included,
            keys("base", 40).into_iter().map(Ok),
        )
        .unwrap();
    store
        .write(
            Batch::new()
                .add("base.g1", List::Included, "extra-1")
                .remove("base.g1", List::Included, "base-0003")
                .add("other.g1", List::Excluded, "x")
                .with_cursor("", "v1"),
        )
        .unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Write,
    Replace,
    Compact,
}

fn run_scenario(store: &Store, scenario: Scenario) -> segstore::Result<()> {
    match scenario {
        Scenario::Write => store
            .write(
                Batch::new()
                    .add("base.g1", List::Included, "new-1")
                    .add("other.g1", List::Included, "new-2")
                    .with_cursor("v1", "v2")
                    .synchronized_on(42),
            )
            .map(drop),
        Scenario::Replace => store
            .replace_list(
                "other.g1",
                None,
                List::Included,
                keys("repl", 60).into_iter().rev().map(Ok),
            )
            .map(drop),
        Scenario::Compact => store.compact().map(drop),
    }
}

/// True if the fault hit an append to (or fsync of) a log that existed before the call: the
/// live log, where a failure leaves durability unknown. A failure writing a brand-new log's
/// header during a rotation does not (nothing names that file yet).
fn hit_live_log(hit: &Option<(IoOp, PathBuf)>, logs_before: &[PathBuf]) -> bool {
    matches!(hit, Some((IoOp::Write | IoOp::Sync, p)) if logs_before.contains(p))
}

fn logs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seglog"))
        .collect()
}

fn sweep(scenario: Scenario) -> usize {
    // Reference run: count the operations and learn the state after.
    let dir = scratch::dir();
    let counter = Countdown::new(usize::MAX, Fault::Error(libc::EIO));
    let store = Store::create(dir.path(), options(Some(counter.clone()))).unwrap();
    setup(&store);
    let before = state(&store.snapshot());
    counter.armed.store(true, Ordering::SeqCst);
    run_scenario(&store, scenario).unwrap();
    counter.armed.store(false, Ordering::SeqCst);
    let after = state(&store.snapshot());
    let points = counter.count.load(Ordering::SeqCst);
    eprintln!("{scenario:?}: {points} I/O points, 3 faults each");
    assert!(points > 0, "{scenario:?} performed no I/O");
    drop(store);

    let mut runs = 0;
    for fail_at in 0..points {
        for fault in [
            Fault::Error(libc::EIO),
            Fault::Error(libc::ENOSPC),
            Fault::ShortWrite(7),
        ] {
            runs += 1;
            let dir = scratch::dir();
            let injector = Countdown::new(fail_at, fault);
            let store = Store::create(dir.path(), options(Some(injector.clone()))).unwrap();
            setup(&store);
            let logs_before = logs(dir.path());
            injector.armed.store(true, Ordering::SeqCst);
            let result = run_scenario(&store, scenario);
            injector.armed.store(false, Ordering::SeqCst);
            let hit = injector.hit.lock().unwrap().clone();
            let ctx = format!("{scenario:?}, fault {fault:?} at op {fail_at} ({hit:?})");
            let live = state(&store.snapshot());
            match &result {
                Ok(()) => assert_eq!(live, after, "{ctx}: succeeded but state differs"),
                Err(_) => {
                    assert!(hit.is_some(), "{ctx}: failed without a fault");
                    assert_eq!(live, before, "{ctx}: readers must keep the last good state");
                }
            }
            // A failed log append or fsync poisons the writer until reopened.
            let probe = store.write(Batch::new());
            if result.is_err() && hit_live_log(&hit, &logs_before) {
                assert!(
                    matches!(probe, Err(Error::PreviousIo(_))),
                    "{ctx}: {probe:?}"
                );
            } else if let Err(e) = &probe {
                assert!(
                    matches!(e, Error::PreviousIo(_)),
                    "{ctx}: probe failed with {e:?}"
                );
            }
            drop(store);
            let reopened = Store::open(dir.path(), options(None))
                .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
            let recovered = state(&reopened.snapshot());
            if result.is_ok() {
                assert_eq!(recovered, after, "{ctx}: acknowledged but lost");
            } else {
                assert!(
                    recovered == before || recovered == after,
                    "{ctx}: recovered a state that is neither before nor after"
                );
            }
            drop(reopened);
            let problems = segstore::verify(dir.path()).unwrap();
            assert!(problems.is_empty(), "{ctx}: verify: {problems:?}");
        }
    }
    runs
}

#[test]
fn every_io_point_of_a_write_can_fail_safely() {
    assert!(sweep(Scenario::Write) >= 3);
}

#[test]
fn every_io_point_of_a_bulk_replace_can_fail_safely() {
    assert!(sweep(Scenario::Replace) >= 3);
}

#[test]
fn every_io_point_of_a_compaction_can_fail_safely() {
    assert!(sweep(Scenario::Compact) >= 3);
}

/// Opening (writer or reader) when the N-th read, truncation or fsync fails: an error, never a
/// panic, and the store is intact for the next open.
#[test]
fn every_io_point_of_open_can_fail_safely() {
    let dir = scratch::dir();
    {
        let store = Store::create(dir.path(), options(None)).unwrap();
        setup(&store);
        store.compact().unwrap();
        setup_more(&store);
    }
    let expected = state(&Store::open(dir.path(), options(None)).unwrap().snapshot());
    let counter = Countdown::new(usize::MAX, Fault::Error(libc::EIO));
    counter.armed.store(true, Ordering::SeqCst);
    drop(Store::open(dir.path(), options(Some(counter.clone()))).unwrap());
    let points = counter.count.load(Ordering::SeqCst);
    assert!(points >= 3, "open performed {points} operations");
    for fail_at in 0..points {
        let injector = Countdown::new(fail_at, Fault::Error(libc::EIO));
        injector.armed.store(true, Ordering::SeqCst);
        match Store::open(dir.path(), options(Some(injector.clone()))) {
            Ok(store) => assert_eq!(state(&store.snapshot()), expected),
            Err(e) => assert!(injector.hit.lock().unwrap().is_some(), "{e}"),
        }
        let injector = Countdown::new(fail_at, Fault::Error(libc::EIO));
        injector.armed.store(true, Ordering::SeqCst);
        if let Ok(reader) = segstore::ReadOnlyStore::open(dir.path(), options(Some(injector))) {
            assert_eq!(state(&reader.snapshot()), expected);
        }
        let clean = Store::open(dir.path(), options(None)).unwrap();
        assert_eq!(state(&clean.snapshot()), expected, "fault at op {fail_at}");
    }
}

fn setup_more(store: &Store) {
    store
        .write(
            Batch::new()
                .add("base.g1", List::Excluded, "late")
                .with_cursor("v1", "v3"),
        )
        .unwrap();
    store
        .replace_list(
            "third.g1",
            None,
            List::Included,
            keys("third", 5).into_iter().map(Ok),
        )
        .unwrap();
}
