//! One writer at a time, in this process or another; readers beside it freely.

use segstore::{Error, Options, ReadOnlyStore, Store};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The tests of this file run one at a time. A child process holds a copy of every open file
/// of the test process from its fork until its exec, and with it the `flock` of any writer's
/// `LOCK`: a test that drops a writer and opens the store again while another test spawns
/// its child can find the store still locked (seen once in CI, `Locked` at the reopen).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn options() -> Options {
    Options {
        poll_interval: None,
        ..Options::default()
    }
}

#[test]
fn second_writer_in_the_same_process_is_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let first = Store::create(dir.path(), options()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        Store::create(dir.path(), options()),
        Err(Error::Locked { .. })
    ));
    let _reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    drop(first);
    Store::open(dir.path(), options()).unwrap();
}

/// Run as a child process by the test below: holds the writer lock until stdin closes.
#[test]
#[ignore]
fn lock_holder_child() {
    let Ok(dir) = std::env::var("SEGSTORE_LOCK_TEST_DIR") else {
        return;
    };
    let _store = Store::open_or_create(&dir, options()).unwrap();
    println!("LOCKED");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn second_writer_in_another_process_is_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SEGSTORE_LOCK_TEST_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("LOCKED")),
        "child never took the lock"
    );
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::Locked { .. })
    ));
    // Reading works while the other process holds the lock.
    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    assert!(reader.snapshot().segments().is_empty());
    drop(child.stdin.take());
    child.wait().unwrap();
    Store::open(dir.path(), options()).unwrap();
}

fn live_log_len(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seglog"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// The writer that lost its lock refuses every kind of write, writes nothing, and the writer
/// that took the store over keeps a sound store.
fn lost_lock_stops_the_first_writer(take_lock: impl FnOnce(&std::path::Path)) {
    let _serial = one_at_a_time();
    use segstore::{Batch, List, Status};
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        auto_compact: false,
        ..options()
    };
    let first = Store::create(dir.path(), options.clone()).unwrap();
    first
        .write(Batch::new().add("s.g1", List::Included, "before"))
        .unwrap();
    take_lock(dir.path());
    // With LOCK gone or replaced, a second writer gets in: the first must notice.
    let second = Store::open(dir.path(), options.clone()).unwrap();
    second
        .write(Batch::new().add("s.g1", List::Included, "second"))
        .unwrap();
    let log_len = live_log_len(dir.path());
    let files_before = std::fs::read_dir(dir.path()).unwrap().count();

    let lost = |r: segstore::Result<()>, what: &str| match r {
        Err(Error::LockLost { path }) => assert_eq!(path, dir.path().join("LOCK"), "{what}"),
        other => panic!("{what}: expected LockLost, got {other:?}"),
    };
    lost(
        first
            .write(Batch::new().add("s.g1", List::Included, "first"))
            .map(drop),
        "write",
    );
    lost(first.create_segment("t.g1", "user"), "create_segment");
    lost(first.delete_segment("s.g1"), "delete_segment");
    lost(first.mark_synced(1).map(drop), "mark_synced");
    lost(
        first
            .replace_list("s.g1", None, List::Excluded, [Ok(b"x".to_vec())])
            .map(drop),
        "replace_list",
    );
    lost(first.compact().map(drop), "compact");
    // Still lost on a second try.
    lost(
        first
            .write(Batch::new().add("s.g1", List::Included, "again"))
            .map(drop),
        "write again",
    );
    assert_eq!(live_log_len(dir.path()), log_len, "no record written");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        files_before,
        "no file created"
    );
    drop(first);

    second
        .write(Batch::new().add("s.g1", List::Included, "second-2"))
        .unwrap();
    second.compact().unwrap();
    drop(second);
    assert!(segstore::verify(dir.path()).unwrap().is_empty());
    let store = Store::open(dir.path(), options).unwrap();
    let snap = store.snapshot();
    for key in ["before", "second", "second-2"] {
        assert_eq!(
            snap.check("s.g1", key.as_bytes()).unwrap(),
            Status::Included,
            "{key}"
        );
    }
    assert_eq!(snap.check("s.g1", b"first").unwrap(), Status::Unknown);
    assert!(snap.segment("t.g1").is_none());
}

#[test]
fn a_writer_whose_lock_file_is_deleted_stops_before_writing() {
    lost_lock_stops_the_first_writer(|dir| std::fs::remove_file(dir.join("LOCK")).unwrap());
}

#[test]
fn a_writer_whose_lock_file_is_replaced_stops_before_writing() {
    lost_lock_stops_the_first_writer(|dir| {
        let other = dir.join("LOCK.new");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, dir.join("LOCK")).unwrap();
    });
}
