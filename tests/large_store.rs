//! A store at the size users have: 20M random LaunchDarkly context hashes in one list (a
//! 670 MB hashed table), plus 2,000 segments of mixed sizes, built by bulk replace, changed
//! by batches, compacted, verified, and read back by a separate read-only handle.
//!
//! Too long for every `cargo test` (about two minutes in release on two cores), so it is
//! ignored there; `scripts/test-large-store.sh` runs it (`SEGSTORE_LARGE_KEYS=N` for another
//! size). It builds on tmpfs (`/dev/shm`) where there is one.

mod scratch;

use segstore::{context_hash, Batch, List, Options, ReadOnlyStore, Status, Store, TableKind};

fn key_count() -> u64 {
    std::env::var("SEGSTORE_LARGE_KEYS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(20_000_000)
}

/// Key `i` of the big list: the context hash of a key scattered over the space, so that
/// neither the import nor the table sees them in order.
fn big_key(i: u64) -> String {
    context_hash(&format!(
        "user-{:016x}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    ))
}

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        ..Options::default()
    }
}

fn assert_verifies(dir: &std::path::Path, when: &str) {
    let problems = segstore::verify(dir).unwrap();
    assert!(problems.is_empty(), "verify {when}: {problems:?}");
}

#[test]
#[ignore = "minutes long: run by scripts/test-large-store.sh"]
fn twenty_million_random_hashes_import_change_compact_verify() {
    let n = key_count();
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    let stats = store
        .replace_list(
            "everyone.g1",
            None,
            List::Included,
            (0..n).map(|i| Ok(big_key(i).into_bytes())),
        )
        .unwrap();
    assert_eq!(stats.keys, n);
    assert_eq!(stats.kind, Some(TableKind::Hashed));
    // 2,000 more segments, from 1 to 20,000 keys.
    for s in 0..2_000u64 {
        let size = (20_000 / (s + 1)).max(1);
        store
            .replace_list(
                &format!("segment-{s:04}.g1"),
                None,
                List::Included,
                (0..size).map(|j| Ok(context_hash(&format!("s{s}-{j}")).into_bytes())),
            )
            .unwrap();
    }
    assert_verifies(dir.path(), "after the import");

    // A sync's worth of changes to the big list and a few small ones, then compaction.
    let mut batch = Batch::new();
    for i in 0..50_000u64 {
        batch = batch.remove("everyone.g1", List::Included, big_key(i * 7));
        batch = batch.add("everyone.g1", List::Excluded, big_key(i * 7 + 1));
    }
    for s in 0..100u64 {
        batch = batch.add(
            &format!("segment-{s:04}.g1"),
            List::Included,
            context_hash(&format!("new-{s}")),
        );
    }
    store.write(batch).unwrap();
    store.compact().unwrap();
    assert_verifies(dir.path(), "after compaction");
    drop(store);

    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    let snap = reader.snapshot();
    for i in (0..n).step_by((n / 100_000).max(1) as usize) {
        let k = big_key(i);
        // Every seventh of the first 350,000 was removed; the keys after them are also
        // excluded now, and included beats excluded.
        let want = if i % 7 == 0 && i / 7 < 50_000 {
            Status::Unknown
        } else {
            Status::Included
        };
        assert_eq!(
            snap.check("everyone.g1", k.as_bytes()).unwrap(),
            want,
            "key {i}"
        );
    }
    assert_eq!(
        snap.check("everyone.g1", context_hash("nobody").as_bytes())
            .unwrap(),
        Status::Unknown
    );
    for s in (0..2_000u64).step_by(13) {
        let seg = format!("segment-{s:04}.g1");
        let k = context_hash(&format!("s{s}-0"));
        assert_eq!(snap.check(&seg, k.as_bytes()).unwrap(), Status::Included);
        let m = snap.membership(k.as_bytes()).unwrap();
        assert_eq!(m.get(&seg), Some(true));
        if s < 100 {
            let new = context_hash(&format!("new-{s}"));
            assert_eq!(snap.check(&seg, new.as_bytes()).unwrap(), Status::Included);
        }
    }
    let counted = snap.export("everyone.g1", List::Included).unwrap().count() as u64;
    assert_eq!(counted, n - 50_000);
}
