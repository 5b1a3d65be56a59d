//! Stores of tens of thousands of segments: every table a file of its own used to be one
//! memory mapping each, and Linux allows a process 65,530 (`vm.max_map_count`), shared with
//! everything else in it, so 70,000 one-key segments made a store that could not be opened,
//! and compaction could not rescue it. Now small files are read rather than mapped, and
//! compaction packs tables into shared files (format-spec §5.9): a store's mappings no longer
//! grow with its lists.

mod scratch;

use segstore::{context_hash, Batch, List, Options, ReadOnlyStore, Status, Store};
use std::path::Path;

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        ..Options::default()
    }
}

/// The memory mappings this process holds of files in `dir` (from `/proc/self/maps`).
fn mappings_of(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_str().unwrap();
    maps.lines().filter(|l| l.contains(dir)).count()
}

/// Files named like tables (`t-*.sstbl`) in `dir`.
fn table_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("t-") && name.ends_with(".sstbl")
        })
        .count()
}

fn assert_verifies(dir: &Path) {
    let problems = segstore::verify(dir).unwrap();
    assert!(problems.is_empty(), "verify: {problems:?}");
}

fn seg(i: usize) -> String {
    format!("segment-{i:06}.g1")
}

fn key(i: usize) -> String {
    context_hash(&format!("user-{i}"))
}

#[test]
fn seventy_thousand_bulk_loaded_segments_open_and_compact_into_packs() {
    const N: usize = 70_000;
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    for i in 0..N {
        store
            .replace_list(&seg(i), None, List::Included, [Ok(key(i).into_bytes())])
            .unwrap();
    }
    assert_eq!(
        table_files(dir.path()),
        N,
        "a bulk replace writes a file of its own"
    );
    drop(store);

    // 70,000 files of their own: each is small, so read, not mapped.
    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    assert!(
        mappings_of(dir.path()) <= 256,
        "{}",
        mappings_of(dir.path())
    );
    let snap = reader.snapshot();
    for i in (0..N).step_by(997) {
        assert_eq!(
            snap.check(&seg(i), key(i).as_bytes()).unwrap(),
            Status::Included
        );
        assert_eq!(
            snap.check(&seg(i), key(i + 1).as_bytes()).unwrap(),
            Status::Unknown
        );
    }
    drop(snap);
    drop(reader);

    // The writer opens it and compaction moves every table into a pack.
    let store = Store::open(dir.path(), options()).unwrap();
    store.compact().unwrap();
    let files = table_files(dir.path());
    assert!(files <= 3, "{files} table files after compaction");
    drop(store);
    assert_verifies(dir.path());

    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    let mapped = mappings_of(dir.path());
    assert!((1..=8).contains(&mapped), "{mapped} mappings of the store");
    let snap = reader.snapshot();
    assert_eq!(snap.segment_count(), N);
    for i in (0..N).step_by(491) {
        assert_eq!(
            snap.check(&seg(i), key(i).as_bytes()).unwrap(),
            Status::Included
        );
        let found: Vec<(String, bool)> = snap
            .membership(key(i).as_bytes())
            .unwrap()
            .iter()
            .map(|(s, inc)| (s.to_owned(), inc))
            .collect();
        assert_eq!(found, vec![(seg(i), true)]);
    }
}

#[test]
fn one_batch_creating_a_hundred_thousand_segments_compacts_into_few_files() {
    const N: usize = 100_000;
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    let mut batch = Batch::new();
    for i in 0..N {
        batch = batch.add(&seg(i), List::Included, key(i));
        if i % 10 == 0 {
            // Every tenth segment also excludes a key, and a few hold more keys.
            batch = batch.add(&seg(i), List::Excluded, key(N + i));
        }
        if i % 1000 == 0 {
            for j in 0..2_000 {
                batch = batch.add(&seg(i), List::Included, key(10 * N + i * 2_000 + j));
            }
        }
    }
    store.write(batch).unwrap();
    store.compact().unwrap();
    assert!(table_files(dir.path()) <= 3, "{}", table_files(dir.path()));
    assert_verifies(dir.path());

    // A second compaction after a few changes: the changed lists go into a new pack; the
    // small old pack is merged into it and retired.
    store
        .write(Batch::new().remove(&seg(5), List::Included, key(5)).add(
            &seg(7),
            List::Included,
            key(3 * N),
        ))
        .unwrap();
    store.compact().unwrap();
    assert!(table_files(dir.path()) <= 3, "{}", table_files(dir.path()));
    assert_verifies(dir.path());
    drop(store);

    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    let mapped = mappings_of(dir.path());
    assert!((1..=8).contains(&mapped), "{mapped} mappings of the store");
    let snap = reader.snapshot();
    assert_eq!(snap.segment_count(), N);
    assert_eq!(
        snap.check(&seg(5), key(5).as_bytes()).unwrap(),
        Status::Unknown
    );
    assert_eq!(
        snap.check(&seg(7), key(3 * N).as_bytes()).unwrap(),
        Status::Included
    );
    for i in (0..N).step_by(777) {
        if i != 5 {
            assert_eq!(
                snap.check(&seg(i), key(i).as_bytes()).unwrap(),
                Status::Included
            );
        }
        let excluded = if i % 10 == 0 {
            Status::Excluded
        } else {
            Status::Unknown
        };
        assert_eq!(
            snap.check(&seg(i), key(N + i).as_bytes()).unwrap(),
            excluded
        );
    }
    assert_eq!(
        snap.check(&seg(3000), key(10 * N + 3000 * 2_000 + 1999).as_bytes())
            .unwrap(),
        Status::Included
    );
}

/// Table files by name, with their lengths.
fn table_file_lens(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("t-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

fn replace_with(store: &Store, segment: &str, keys: std::ops::Range<usize>) {
    store
        .replace_list(
            segment,
            None,
            List::Included,
            keys.map(|k| Ok(key(k).into_bytes())),
        )
        .unwrap();
}

#[test]
fn a_large_pack_is_kept_while_mostly_named_and_rewritten_when_not() {
    // 2,100 lists of 1,000 hashes: a pack of about 72 MB, over the 64 MiB below which packs
    // are always rewritten.
    const LISTS: usize = 2_100;
    const PER: usize = 1_000;
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    for i in 0..LISTS {
        replace_with(&store, &seg(i), i * PER..(i + 1) * PER);
    }
    store.compact().unwrap();
    let first = table_file_lens(dir.path());
    // The pack (the membership index is a postings file, no table).
    assert_eq!(first.len(), 1, "{first:?}");
    let big_pack = first
        .iter()
        .find(|(_, len)| *len > 64 << 20)
        .unwrap()
        .clone();

    // A few lists change: the big pack stays as it is, the new tables go into a new pack.
    for i in 0..10 {
        replace_with(
            &store,
            &seg(i),
            5_000_000 + i * PER..5_000_000 + (i + 1) * PER,
        );
    }
    store.compact().unwrap();
    let second = table_file_lens(dir.path());
    assert!(second.contains(&big_pack), "{second:?}");
    assert_eq!(second.len(), 2, "{second:?}");
    assert_verifies(dir.path());

    // Most lists change: under half of the big pack is still named, so what is left of it
    // is copied and the pack retired.
    for i in 0..1_200 {
        replace_with(
            &store,
            &seg(i),
            6_000_000 + i * PER..6_000_000 + (i + 1) * PER,
        );
    }
    store.compact().unwrap();
    let third = table_file_lens(dir.path());
    assert!(!third.contains(&big_pack), "{third:?}");
    assert_eq!(third.len(), 1, "{third:?}");
    assert_verifies(dir.path());
    drop(store);

    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    let snap = reader.snapshot();
    for i in (0..LISTS).step_by(37) {
        let first_key = if i < 1_200 {
            6_000_000 + i * PER
        } else {
            i * PER
        };
        assert_eq!(
            snap.check(&seg(i), key(first_key).as_bytes()).unwrap(),
            Status::Included
        );
        assert_eq!(
            snap.check(&seg(i), key(first_key + PER - 1).as_bytes())
                .unwrap(),
            Status::Included
        );
        assert_eq!(
            snap.check(&seg(i), key(first_key + PER).as_bytes())
                .unwrap(),
            Status::Unknown
        );
    }
}

#[test]
fn a_damaged_table_inside_a_pack_is_reported_with_its_offset() {
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    for i in 0..50 {
        replace_with(&store, &seg(i), i * 100..(i + 1) * 100);
    }
    store.compact().unwrap();
    drop(store);
    let (pack, _) = table_file_lens(dir.path())
        .into_iter()
        .find(|(_, len)| *len > 50 * 3_000)
        .unwrap();
    let path = dir.path().join(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    // Inside the first table's codes (tables start after the 64-byte pack header).
    bytes[64 + 64 + 40] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let problems = segstore::verify(dir.path()).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.path == path && p.detail.contains("checksum")),
        "{problems:?}"
    );
    // Every open mode that checks checksums refuses the store; none answers from it.
    let err = ReadOnlyStore::open(dir.path(), options()).unwrap_err();
    assert!(err.to_string().contains(&pack), "{err}");
    assert!(Store::open(dir.path(), options()).is_err());

    // A damaged pack header is reported too.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[64 + 64 + 40] ^= 0x10;
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let problems = segstore::verify(dir.path()).unwrap();
    assert!(
        problems.iter().any(|p| p.detail.contains("pack header")),
        "{problems:?}"
    );
}

/// Lists of a few MiB each pack without 2 MiB padding between them: the pack is the tables'
/// bytes and little else (aligning each to 2 MiB cost such tables 17% on average).
#[test]
fn tables_of_a_few_mib_pack_without_padding() {
    const LISTS: usize = 12;
    const PER: usize = 90_000;
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    for i in 0..LISTS {
        replace_with(&store, &seg(i), i * PER..(i + 1) * PER);
    }
    let own_files: u64 = table_file_lens(dir.path()).iter().map(|(_, len)| len).sum();
    store.compact().unwrap();
    let packed = table_file_lens(dir.path());
    assert_eq!(packed.len(), 1, "one pack: {packed:?}");
    let pack = packed[0].1;
    assert!(
        pack <= own_files + own_files / 100,
        "pack {pack} bytes for {own_files} bytes of tables"
    );
    assert_verifies(dir.path());
    let snap = store.snapshot();
    for i in 0..LISTS {
        assert_eq!(
            snap.check(&seg(i), key(i * PER + 7).as_bytes()).unwrap(),
            Status::Included
        );
    }
}

/// Waits (at most a minute) until `done` holds of the store's files, polling. `stats` reads
/// the files without a lock while the background compacts; it reads them again when a file
/// it read was retired meanwhile, so it must not fail.
fn wait_for(dir: &Path, what: &str, done: impl Fn(&segstore::StoreStats) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let stats = segstore::stats(dir).unwrap();
        if done(&stats) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what}: not within 60 s: {:?}",
            stats.files
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Automatic compaction builds the membership index after bulk loads without copying their
/// tables into a pack while they are few (that copy was most of its time); an explicit
/// `compact` packs them; and once 1,024 small files would be named, automatic compaction
/// packs them too.
#[test]
fn automatic_compaction_leaves_few_bulk_loaded_files_where_they_are() {
    let dir = scratch::dir();
    let auto = Options {
        poll_interval: None,
        ..Options::default()
    };
    let store = Store::create(dir.path(), auto.clone()).unwrap();
    const LISTS: usize = 40;
    for i in 0..LISTS {
        replace_with(&store, &seg(i), i * 3_000..(i + 1) * 3_000);
    }
    let kinds = |stats: &segstore::StoreStats, kind: &str| {
        stats.files.iter().filter(|f| f.kind == kind).count()
    };
    wait_for(dir.path(), "an index over every list", |stats| {
        kinds(stats, "index") == 1
            && store
                .snapshot()
                .membership(key(LISTS * 3_000 - 1).as_bytes())
                .unwrap()
                .get(&seg(LISTS - 1))
                == Some(true)
            && segstore::verify(dir.path()).is_ok_and(|p| p.is_empty())
    });
    drop(store);
    let reopened = Store::open(dir.path(), options()).unwrap();
    assert_eq!(
        table_files(dir.path()),
        LISTS,
        "each bulk load still in its own file"
    );
    assert_verifies(dir.path());
    reopened.compact().unwrap();
    assert_eq!(
        table_files(dir.path()),
        1,
        "an explicit compaction packs them"
    );
    assert_verifies(dir.path());
    drop(reopened);

    // 1,100 more, of one key each: past 1,024 small files, the background packs them (those
    // that arrive while it does stay in files of their own, under the bound again). 1,140
    // files can only fall under 1,024 by being packed.
    let store = Store::open(dir.path(), auto).unwrap();
    for i in LISTS..LISTS + 1_100 {
        replace_with(&store, &seg(i), i * 3_000..i * 3_000 + 1);
    }
    wait_for(dir.path(), "the small files packed", |_| {
        table_files(dir.path()) < 1_024
    });
    drop(store);
    assert_verifies(dir.path());
    let snap = ReadOnlyStore::open(dir.path(), options())
        .unwrap()
        .snapshot();
    for i in (0..LISTS + 1_100).step_by(97) {
        assert_eq!(
            snap.check(&seg(i), key(i * 3_000).as_bytes()).unwrap(),
            Status::Included
        );
    }
}
