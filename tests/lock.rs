//! One writer at a time, in this process or another; readers beside it freely.

use segstore::{Error, Options, ReadOnlyStore, Store};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn options() -> Options {
    Options {
        poll_interval: None,
        ..Options::default()
    }
}

#[test]
fn second_writer_in_the_same_process_is_refused() {
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
