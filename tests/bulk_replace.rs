//! Bulk replaces that spill: random context hashes and UUIDs, which the sorter holds and
//! spills as their codes and hands to the table builder as codes, and inputs whose shape
//! changes partway, which turn the sort back to plain keys. Each list must hold exactly its
//! distinct keys, in a table of the right kind, and `verify` must find the store sound.

mod scratch;

use rand::{Rng, SeedableRng};
use segstore::{context_hash, List, Options, Status, Store, TableKind};
use std::collections::BTreeSet;

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        // ~1,000 hashes a run: every list below spills tens of runs.
        sort_memory_budget: 64 << 10,
        ..Options::default()
    }
}

fn uuid(rng: &mut impl Rng) -> Vec<u8> {
    let hex = format!("{:032x}", rng.gen::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
    .into_bytes()
}

/// Replaces `segment`'s included list with `input` and checks the result against the set.
fn load_and_check(store: &Store, segment: &str, input: &[Vec<u8>], kind: TableKind) {
    let stats = store
        .replace_list(segment, None, List::Included, input.iter().cloned().map(Ok))
        .unwrap();
    let distinct: BTreeSet<&[u8]> = input.iter().map(|k| k.as_slice()).collect();
    assert_eq!(stats.kind, Some(kind), "{segment}");
    assert_eq!(stats.keys, distinct.len() as u64, "{segment}");
    assert_eq!(stats.keys_read, input.len() as u64, "{segment}");
    assert!(
        stats.spilled_runs >= 10,
        "{segment}: {} runs",
        stats.spilled_runs
    );
    let snapshot = store.snapshot();
    for key in &distinct {
        assert_eq!(
            snapshot.check(segment, key).unwrap(),
            Status::Included,
            "{segment}: {:?}",
            String::from_utf8_lossy(key)
        );
    }
    let exported: Vec<Vec<u8>> = snapshot.export(segment, List::Included).unwrap().collect();
    let expected: Vec<Vec<u8>> = distinct.iter().map(|k| k.to_vec()).collect();
    assert_eq!(exported, expected, "{segment}");
}

#[test]
fn spilled_bulk_replaces_hold_exactly_their_keys() {
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);

    // 40k random hashes, a tenth of them twice.
    let mut hashes: Vec<Vec<u8>> = (0..40_000)
        .map(|_| context_hash(&rng.gen::<u64>().to_string()).into_bytes())
        .collect();
    hashes.extend(hashes[..4_000].to_vec());
    load_and_check(&store, "hashes.g1", &hashes, TableKind::Hashed);

    let mut uuids: Vec<Vec<u8>> = (0..30_000).map(|_| uuid(&mut rng)).collect();
    uuids.extend(uuids[..3_000].to_vec());
    load_and_check(&store, "uuids.g1", &uuids, TableKind::Uuid);

    // Hashes, then a plain key three quarters of the way in: coded runs already on disk
    // merge with plain ones.
    let mut mixed = hashes.clone();
    mixed.insert(33_000, b"plain-key".to_vec());
    load_and_check(&store, "mixed.g1", &mixed, TableKind::Fst);

    // UUIDs with hashes among them.
    let mut shapes = uuids.clone();
    shapes.insert(20_000, hashes[0].clone());
    load_and_check(&store, "shapes.g1", &shapes, TableKind::Fst);

    let problems = segstore::verify(dir.path()).unwrap();
    assert!(problems.is_empty(), "verify: {problems:?}");
    drop(store);
    // The runs are gone.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("segstore-sort-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
