//! A FIFO (or any file that is not a regular file) where a store file belongs is an error at
//! once, naming it, in every way of opening the store: opening a FIFO blocks until its other
//! end is opened, so a store that opened it plainly would hang every command.

mod scratch;

use segstore::{context_hash, Batch, Error, List, Options, ReadOnlyStore, Store};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        ..Options::default()
    }
}

/// A store with tables, a membership index (its postings file) and records in
/// its live log.
fn fixture() -> tempfile::TempDir {
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    for s in 0..8 {
        let keys = (0..50).map(|i| Ok(context_hash(&format!("u-{s}-{i}")).into_bytes()));
        store
            .replace_list(&format!("s{s}.g1"), None, List::Included, keys)
            .unwrap();
    }
    store.compact().unwrap();
    store
        .write(Batch::new().add("s0.g1", List::Included, "k"))
        .unwrap();
    drop(store);
    dir
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Replaces `path` (if present) with a FIFO of the same name.
fn make_fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Runs `f` on another thread and returns what it returned. A call that blocks is what this
/// file tests against, so it fails the test instead of hanging the suite.
fn without_blocking<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} blocked on a FIFO"))
}

fn assert_names_fifo(result: Result<(), Error>, fifo: &Path, what: &str) {
    match result {
        Err(Error::NotRegularFile { path, file_type }) => {
            assert_eq!(path, fifo, "{what}");
            assert_eq!(file_type, "FIFO", "{what}");
        }
        other => panic!("{what} with {}: {other:?}", fifo.display()),
    }
}

#[test]
fn a_fifo_in_place_of_any_store_file_is_an_error_at_once_in_every_open_mode() {
    let original = fixture();
    let logs = files_ending(original.path(), ".seglog");
    let live_log = logs.last().unwrap().file_name().unwrap().to_owned();
    let table = files_ending(original.path(), ".sstbl")[0]
        .file_name()
        .unwrap()
        .to_owned();
    let postings = files_ending(original.path(), ".ssidx")[0]
        .file_name()
        .unwrap()
        .to_owned();
    let live_number = u64::from_str_radix(&live_log.to_string_lossy()[4..20], 16).unwrap();
    let next_log = format!("log-{:016x}.seglog", live_number + 1);
    let targets: Vec<std::ffi::OsString> = vec![
        "MANIFEST".into(),
        table,
        postings,
        live_log,
        next_log.into(),
    ];
    for name in targets {
        let work = scratch::dir();
        copy_dir(original.path(), work.path());
        let fifo = work.path().join(&name);
        make_fifo(&fifo);
        let dir = work.path().to_owned();
        let what = name.to_string_lossy().into_owned();

        let d = dir.clone();
        let opened = without_blocking("Store::open", move || Store::open(&d, options()).map(drop));
        assert_names_fifo(opened, &fifo, &format!("Store::open, {what}"));

        let d = dir.clone();
        let opened = without_blocking("ReadOnlyStore::open", move || {
            ReadOnlyStore::open(&d, options()).map(drop)
        });
        assert_names_fifo(opened, &fifo, &format!("ReadOnlyStore::open, {what}"));

        let d = dir.clone();
        let problems = without_blocking("verify", move || segstore::verify(&d)).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.path == fifo && p.detail.contains("FIFO")),
            "verify, {what}: {problems:?}"
        );
        assert!(fifo.exists(), "nothing removed the FIFO ({what})");
    }
}

#[test]
fn a_fifo_as_the_lock_file_stops_the_writer_at_once() {
    let work = fixture();
    let fifo = work.path().join("LOCK");
    make_fifo(&fifo);
    let dir = work.path().to_owned();
    let opened = without_blocking("Store::open", move || {
        Store::open(&dir, options()).map(drop)
    });
    assert_names_fifo(opened, &fifo, "Store::open, LOCK");
    // Readers never touch the lock.
    let dir = work.path().to_owned();
    without_blocking("ReadOnlyStore::open", move || {
        ReadOnlyStore::open(&dir, options()).map(drop)
    })
    .unwrap();
}
