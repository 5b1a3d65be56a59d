//! A `Checksum` open (the default) hashes a store's large tables on other threads while it
//! opens the small ones. Damage in either must still fail the open, naming the damaged file,
//! in tables of their own and in packs; an intact store must answer every key.

mod scratch;

use segstore::{context_hash, List, Options, ReadOnlyStore, Status, Store};
use std::path::{Path, PathBuf};

/// Three lists of 40,000 hashes (1.4 MB tables: opened on the other threads) and 30 of 10.
fn build(dir: &Path, compact: bool) -> Vec<(String, Vec<String>)> {
    let store = Store::create(
        dir,
        Options {
            auto_compact: false,
            ..Options::default()
        },
    )
    .unwrap();
    let mut lists = Vec::new();
    for s in 0..33 {
        let n = if s < 3 { 40_000 } else { 10 };
        let segment = format!("segment-{s:02}.g1");
        let keys: Vec<String> = (0..n)
            .map(|i| context_hash(&format!("user-{s}-{i}")))
            .collect();
        store
            .replace_list(
                &segment,
                None,
                List::Included,
                keys.iter().map(|k| Ok(k.clone().into_bytes())),
            )
            .unwrap();
        lists.push((segment, keys));
    }
    if compact {
        store.compact().unwrap();
    }
    lists
}

fn open(dir: &Path) -> segstore::Result<ReadOnlyStore> {
    ReadOnlyStore::open(
        dir,
        Options {
            poll_interval: None,
            ..Options::default()
        },
    )
}

/// Table files, largest first.
fn tables_by_size(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sstbl"))
        .map(|e| (e.metadata().unwrap().len(), e.path()))
        .collect();
    files.sort_by(|a, b| b.cmp(a));
    files.into_iter().map(|(_, p)| p).collect()
}

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damage_in_a_large_or_a_small_table_fails_a_checksum_open() {
    for (compact, pick_largest) in [(false, true), (false, false), (true, true)] {
        let dir = scratch::dir();
        let lists = build(dir.path(), compact);
        {
            let reader = open(dir.path()).unwrap();
            let snapshot = reader.snapshot();
            for (segment, keys) in &lists {
                for key in keys.iter().step_by(97) {
                    assert_eq!(
                        snapshot.check(segment, key.as_bytes()).unwrap(),
                        Status::Included,
                        "{segment}"
                    );
                }
            }
        }
        let tables = tables_by_size(dir.path());
        let victim = if pick_largest {
            tables.first()
        } else {
            tables.last()
        }
        .unwrap()
        .clone();
        flip_middle_byte(&victim);
        let err = open(dir.path()).err().unwrap_or_else(|| {
            panic!(
                "opened with {} damaged (compact: {compact})",
                victim.display()
            )
        });
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            err.to_string().contains(&name),
            "compact {compact}: the error should name {name}: {err}"
        );
    }
}
