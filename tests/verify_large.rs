//! `verify` over fst tables of several MiB: random keys, whose fst does not compress into one
//! 2 MiB write chunk, written by a bulk replace and by a compaction. `verify` must find them
//! sound, and then also run its index cross-check and its final replay.
//!
//! Sizes: a table's checksum went wrong only where one of fst's writes straddled a chunk
//! boundary, and fst writes many pieces of a byte or two, so a given boundary can fall between
//! writes. Tables of 14 MB (600k keys) and about 23 MB (1M keys) cross many boundaries; a 400k-key
//! compaction was seen to pass with the bug.

mod scratch;

use rand::distributions::Alphanumeric;
use rand::{Rng, SeedableRng};
use segstore::{context_hash, Batch, List, Options, SegmentChange, Status, Store, TableKind};

/// The size of one aligned write of a table file.
const CHUNK: u64 = 2 << 20;

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        ..Options::default()
    }
}

/// `n` distinct random 18-character keys.
fn random_keys(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut keys: Vec<Vec<u8>> = (0..n)
        .map(|_| (&mut rng).sample_iter(Alphanumeric).take(18).collect())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Eight hashed lists, so that a compaction builds the membership index and `verify`
/// cross-checks it.
fn add_hashed_lists(store: &Store) {
    for s in 0..8 {
        let keys = (0..2_000).map(|i| Ok(context_hash(&format!("user-{s}-{i}")).into_bytes()));
        store
            .replace_list(&format!("hashed-{s}.g1"), None, List::Included, keys)
            .unwrap();
    }
}

fn fst_table_bytes(dir: &std::path::Path) -> u64 {
    let stats = segstore::stats(dir).unwrap();
    stats
        .files
        .iter()
        .filter(|f| f.kind == "table")
        .map(|f| f.bytes)
        .max()
        .unwrap_or(0)
}

fn assert_sound(dir: &std::path::Path) {
    let problems = segstore::verify(dir).unwrap();
    assert!(problems.is_empty(), "verify: {problems:?}");
}

#[test]
fn a_multi_mib_fst_table_from_a_bulk_replace_verifies() {
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    let keys = random_keys(1, 600_000);
    let stats = store
        .replace_list(
            "general.g1",
            None,
            List::Included,
            keys.iter().cloned().map(Ok),
        )
        .unwrap();
    assert_eq!(stats.kind, Some(TableKind::Fst));
    assert_eq!(stats.keys, keys.len() as u64);
    let table_bytes = fst_table_bytes(dir.path());
    assert!(
        table_bytes > 3 * CHUNK,
        "the fst table is {table_bytes} bytes: too small to cross several write chunks"
    );
    add_hashed_lists(&store);
    store.compact().unwrap();
    assert!(segstore::stats(dir.path())
        .unwrap()
        .files
        .iter()
        .any(|f| f.kind == "index"));
    assert_sound(dir.path());
    drop(store);
    // The table reads back whole.
    let store = Store::open(dir.path(), options()).unwrap();
    let snap = store.snapshot();
    for key in keys.iter().step_by(997) {
        assert_eq!(snap.check("general.g1", key).unwrap(), Status::Included);
    }
    let exported: Vec<Vec<u8>> = snap.export("general.g1", List::Included).unwrap().collect();
    assert_eq!(exported, keys);
}

#[test]
fn a_multi_mib_fst_table_from_a_compaction_verifies() {
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    add_hashed_lists(&store);
    let keys = random_keys(2, 1_000_000);
    for part in keys.chunks(100_000) {
        let mut change = SegmentChange::new("general.g1");
        change.included.add = part.iter().collect();
        store.write(Batch::new().change(change)).unwrap();
    }
    store.compact().unwrap();
    let table_bytes = fst_table_bytes(dir.path());
    assert!(
        table_bytes > 3 * CHUNK,
        "the fst table is {table_bytes} bytes: too small to cross several write chunks"
    );
    assert_sound(dir.path());
    let snap = store.snapshot();
    for key in keys.iter().step_by(1009) {
        assert_eq!(snap.check("general.g1", key).unwrap(), Status::Included);
    }
}
