//! Recovery on open: a torn last record is a clean end (and is truncated), any other damage is
//! a typed error naming the file, and nothing acknowledged is dropped.

use segstore::{Batch, Error, List, Options, ReadOnlyStore, Status, Store};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        ..Options::default()
    }
}

fn live_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seglog"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

fn tables(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sstbl"))
        .collect()
}

/// Three acknowledged writes; returns the log length after each.
fn three_writes(dir: &Path) -> Vec<u64> {
    let store = Store::create(dir, options()).unwrap();
    let mut ends = Vec::new();
    for i in 0..3 {
        store
            .write(Batch::new().add("s.g1", List::Included, format!("k{i}")))
            .unwrap();
        ends.push(std::fs::metadata(live_log(dir)).unwrap().len());
    }
    ends
}

#[test]
fn torn_tail_is_truncated_and_earlier_writes_survive() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_writes(dir.path());
    let log = live_log(dir.path());
    // Cut the last record anywhere inside it.
    for cut in [ends[1] + 1, ends[1] + 10, ends[2] - 1] {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        let copied_log = copy.path().join(log.file_name().unwrap());
        OpenOptions::new()
            .write(true)
            .open(&copied_log)
            .unwrap()
            .set_len(cut)
            .unwrap();
        assert!(segstore::verify(copy.path()).unwrap().is_empty());
        let store = Store::open(copy.path(), options()).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.check("s.g1", b"k0").unwrap(), Status::Included);
        assert_eq!(snap.check("s.g1", b"k1").unwrap(), Status::Included);
        assert_eq!(snap.check("s.g1", b"k2").unwrap(), Status::Unknown);
        assert_eq!(
            std::fs::metadata(&copied_log).unwrap().len(),
            ends[1],
            "truncated"
        );
        // And writing continues cleanly after the repaired tail.
        store
            .write(Batch::new().add("s.g1", List::Included, "k9"))
            .unwrap();
        drop(store);
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(
            store.snapshot().check("s.g1", b"k9").unwrap(),
            Status::Included
        );
    }
}

#[test]
fn zero_filled_tail_is_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    three_writes(dir.path());
    let log = live_log(dir.path());
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&[0u8; 8192])
        .unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(
        store.snapshot().check("s.g1", b"k2").unwrap(),
        Status::Included
    );
}

#[test]
fn a_bad_checksum_before_the_end_is_corruption_naming_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_writes(dir.path());
    let log = live_log(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    // A flip inside the first record's payload.
    let at = (ends[0] - 6) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    match Store::open(dir.path(), options()) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, log),
        other => panic!("expected corruption, got {other:?}"),
    }
    let problems = segstore::verify(dir.path()).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, log);
    // Nothing was truncated or repaired.
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

/// A copy of the store in `dir`, in a new directory.
fn copy_store(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    copy
}

#[test]
fn a_flipped_bit_in_the_last_record_is_corruption_that_only_repair_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_writes(dir.path());
    let log_name = live_log(dir.path()).file_name().unwrap().to_owned();
    let original = std::fs::read(live_log(dir.path())).unwrap();
    // A flip in the last record's payload, and one in its checksum field: the record is whole
    // and non-zero to its end, so no tear explains either.
    for at in [ends[2] - 8, ends[2] - 4] {
        let copy = copy_store(dir.path());
        let log = copy.path().join(&log_name);
        let mut bytes = original.clone();
        bytes[at as usize] ^= 0x08;
        std::fs::write(&log, &bytes).unwrap();

        let problems = segstore::verify(copy.path()).unwrap();
        assert_eq!(problems.len(), 1, "flip at {at}: {problems:?}");
        assert_eq!(problems[0].path, log);
        match Store::open(copy.path(), options()) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, log),
            other => panic!("flip at {at}: expected corruption, got {other:?}"),
        }
        match ReadOnlyStore::open(copy.path(), options()) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, log),
            other => panic!("flip at {at}: a reader expected corruption, got {other:?}"),
        }
        assert_eq!(std::fs::read(&log).unwrap(), bytes, "nothing was truncated");

        // Asked to repair, the writer drops the damaged record, and only it.
        let repair = Options {
            repair: true,
            ..options()
        };
        let store = Store::open(copy.path(), repair).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.check("s.g1", b"k0").unwrap(), Status::Included);
        assert_eq!(snap.check("s.g1", b"k1").unwrap(), Status::Included);
        assert_eq!(snap.check("s.g1", b"k2").unwrap(), Status::Unknown);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), ends[1]);
        store
            .write(Batch::new().add("s.g1", List::Included, "k9"))
            .unwrap();
        drop(store);
        assert!(segstore::verify(copy.path()).unwrap().is_empty());
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(
            store.snapshot().check("s.g1", b"k9").unwrap(),
            Status::Included
        );
    }
}

#[test]
fn repair_leaves_damage_before_the_last_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_writes(dir.path());
    let log = live_log(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[(ends[1] - 8) as usize] ^= 0x08;
    std::fs::write(&log, &bytes).unwrap();
    let repair = Options {
        repair: true,
        ..options()
    };
    assert!(matches!(
        Store::open(dir.path(), repair),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

#[test]
fn a_last_record_cut_and_zero_filled_to_its_length_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_writes(dir.path());
    let log_name = live_log(dir.path()).file_name().unwrap().to_owned();
    // A tear keeps a prefix of the record and zeros up to the file's length (or beyond).
    for (cut, len) in [
        (ends[1] + 3, ends[2]),
        (ends[1] + 20, ends[2]),
        (ends[2] - 2, ends[2]),
        (ends[1] + 20, ends[2] + 4096),
    ] {
        let copy = copy_store(dir.path());
        let log = copy.path().join(&log_name);
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.truncate(cut as usize);
        bytes.resize(len as usize, 0);
        std::fs::write(&log, &bytes).unwrap();
        assert!(
            segstore::verify(copy.path()).unwrap().is_empty(),
            "cut {cut}"
        );
        let reader = ReadOnlyStore::open(copy.path(), options()).unwrap();
        assert_eq!(
            reader.snapshot().check("s.g1", b"k1").unwrap(),
            Status::Included
        );
        let store = Store::open(copy.path(), options()).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.check("s.g1", b"k1").unwrap(), Status::Included);
        assert_eq!(snap.check("s.g1", b"k2").unwrap(), Status::Unknown);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), ends[1], "truncated");
    }
}

#[test]
fn missing_or_damaged_table_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::create(dir.path(), options()).unwrap();
        store
            .replace_list(
                "s.g1",
                None,
                List::Included,
                (0..100).map(|i| Ok(format!("key{i}").into_bytes())),
            )
            .unwrap();
        store.compact().unwrap();
    }
    let table = tables(dir.path()).pop().unwrap();
    let original = std::fs::read(&table).unwrap();
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    std::fs::write(&table, &flipped).unwrap();
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::ChecksumMismatch { ref path, .. }) if *path == table
    ));
    assert!(matches!(
        ReadOnlyStore::open(dir.path(), options()),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert_eq!(segstore::verify(dir.path()).unwrap()[0].path, table);
    std::fs::remove_file(&table).unwrap();
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::MissingFile { ref path, .. }) if *path == table
    ));
    std::fs::write(&table, &original).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(
        store.snapshot().check("s.g1", b"key7").unwrap(),
        Status::Included
    );
}

/// True if `e` is an I/O error on `path` with errno ELOOP.
fn is_symlink_loop(e: &Error, path: &Path) -> bool {
    matches!(e, Error::Io { path: p, source } if p == path && source.raw_os_error() == Some(libc::ELOOP))
}

#[test]
fn a_symlink_loop_is_reported_as_a_loop_not_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::create(dir.path(), options()).unwrap();
        store
            .replace_list(
                "s.g1",
                None,
                List::Included,
                (0..100).map(|i| Ok(format!("key{i}").into_bytes())),
            )
            .unwrap();
        store.compact().unwrap();
        store
            .write(Batch::new().add("s.g1", List::Included, "k"))
            .unwrap();
    }
    let targets = [
        tables(dir.path()).pop().unwrap(),
        live_log(dir.path()),
        dir.path().join("MANIFEST"),
    ];
    for target in targets {
        let copy = copy_store(dir.path());
        let path = copy.path().join(target.file_name().unwrap());
        std::fs::remove_file(&path).unwrap();
        // A link to itself: resolving it never ends.
        std::os::unix::fs::symlink(&path, &path).unwrap();
        let name = path.display();
        match Store::open(copy.path(), options()) {
            Err(e) => assert!(is_symlink_loop(&e, &path), "{name}: Store::open: {e:?}"),
            Ok(_) => panic!("{name}: opened"),
        }
        match ReadOnlyStore::open(copy.path(), options()) {
            Err(e) => assert!(is_symlink_loop(&e, &path), "{name}: reader: {e:?}"),
            Ok(_) => panic!("{name}: a reader opened"),
        }
        let problems = segstore::verify(copy.path()).unwrap();
        assert!(
            problems.iter().any(|p| p.path == path
                && p.detail.contains("symbolic links")
                && !p.detail.contains("missing")),
            "{name}: verify: {problems:?}"
        );
    }
}

#[test]
fn newer_manifest_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    three_writes(dir.path());
    let path = dir.path().join("MANIFEST");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 9;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::UnsupportedVersion { found: 9, .. })
    ));
}

#[test]
fn a_log_from_another_store_is_foreign() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    three_writes(a.path());
    three_writes(b.path());
    std::fs::copy(live_log(b.path()), live_log(a.path())).unwrap();
    assert!(matches!(
        Store::open(a.path(), options()),
        Err(Error::ForeignFile { .. })
    ));
}

#[test]
fn open_without_a_store_is_not_found_and_create_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::open(dir.path(), options()),
        Err(Error::NotFound { .. })
    ));
    drop(Store::create(dir.path(), options()).unwrap());
    assert!(matches!(
        Store::create(dir.path(), options()),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn orphans_from_a_crash_are_removed_by_the_writer_only() {
    let dir = tempfile::tempdir().unwrap();
    three_writes(dir.path());
    let orphan_table = dir.path().join("t-00000000000000ff.sstbl");
    let orphan_log = dir.path().join("log-00000000000000ff.seglog");
    std::fs::write(&orphan_table, b"half a table").unwrap();
    std::fs::write(&orphan_log, b"half a log").unwrap();
    let sort_dir = dir.path().join("segstore-sort-AbC123");
    std::fs::create_dir(&sort_dir).unwrap();
    std::fs::write(sort_dir.join("run-000001"), b"spilled keys").unwrap();
    drop(ReadOnlyStore::open(dir.path(), options()).unwrap());
    assert!(orphan_table.exists(), "readers never delete");
    drop(Store::open(dir.path(), options()).unwrap());
    assert!(!orphan_table.exists());
    assert!(!orphan_log.exists());
    assert!(!sort_dir.exists());
}

/// Fails the first table file creation (so a compaction stops after rotating the log).
#[derive(Debug, Default)]
struct FailFirstTableCreate(std::sync::atomic::AtomicBool);

impl segstore::io::FaultInjector for FailFirstTableCreate {
    fn inject(&self, op: segstore::io::IoOp, path: &Path) -> Option<segstore::io::Fault> {
        let is_table = path.extension().is_some_and(|e| e == "sstbl");
        if op == segstore::io::IoOp::Create
            && is_table
            && !self.0.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Some(segstore::io::Fault::Error(libc::EIO));
        }
        None
    }
}

#[test]
fn a_rotated_log_cut_short_is_corruption_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let first_log = dir.path().join("log-0000000000000001.seglog");
    {
        let store = Store::create(
            dir.path(),
            Options {
                fault_injector: Some(std::sync::Arc::new(FailFirstTableCreate::default())),
                ..options()
            },
        )
        .unwrap();
        store
            .write(Batch::new().add("s.g1", List::Included, "a"))
            .unwrap();
        // The compaction rotates to log 2, then fails building its table: the chain is 1 → 2.
        assert!(store.compact().is_err());
        store
            .write(Batch::new().add("s.g1", List::Included, "b"))
            .unwrap();
    }
    assert!(dir.path().join("log-0000000000000002.seglog").exists());
    // Cut log 1 just before its rotate record.
    let bytes = std::fs::read(&first_log).unwrap();
    let rotate_len = 16 + 9 + 4;
    std::fs::write(&first_log, &bytes[..bytes.len() - rotate_len]).unwrap();
    match Store::open(dir.path(), options()) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, first_log),
        other => panic!("expected corruption naming log 1, got {other:?}"),
    }
    assert!(
        dir.path().join("log-0000000000000002.seglog").exists(),
        "the later log, holding an acknowledged write, must not be removed"
    );
    assert_eq!(segstore::verify(dir.path()).unwrap()[0].path, first_log);
}
