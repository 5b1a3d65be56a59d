//! The membership index: after a compaction, `membership` answers from one index probe plus
//! the lists changed since (and those in fst tables), exactly as probing every segment would.

use segstore::{context_hash, Batch, List, Options, ReadOnlyStore, Store};

fn hash(i: usize) -> Vec<u8> {
    context_hash(&format!("user-{i}")).into_bytes()
}

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        ..Options::default()
    }
}

#[test]
fn membership_through_the_index_tracks_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), options()).unwrap();
    for s in 0..20 {
        let keys: Vec<_> = (0..100).filter(|i| i % (s + 1) == 0).map(hash).collect();
        store
            .replace_list(
                &format!("seg-{s:02}.g1"),
                None,
                List::Included,
                keys.into_iter().map(Ok),
            )
            .unwrap();
    }
    store
        .replace_list(
            "seg-03.g1",
            None,
            List::Excluded,
            [Ok(hash(7)), Ok(hash(12))],
        )
        .unwrap();
    store
        .replace_list(
            "general.g1",
            None,
            List::Included,
            [Ok(b"user-7".to_vec()), Ok(hash(12))],
        )
        .unwrap();
    store.compact().unwrap();
    let stats = segstore::stats(dir.path()).unwrap();
    assert!(stats.files.iter().any(|f| f.kind == "index"), "{stats:?}");

    let expect = |store_snap: &segstore::Snapshot, key: &[u8], want: &[(&str, bool)]| {
        let got: Vec<(String, bool)> = store_snap
            .membership(key)
            .unwrap()
            .iter()
            .map(|(s, b)| (s.to_string(), b))
            .collect();
        let want: Vec<(String, bool)> = want.iter().map(|(s, b)| (s.to_string(), *b)).collect();
        assert_eq!(got, want, "membership of {}", String::from_utf8_lossy(key));
    };
    let snap = store.snapshot();
    // user-12: divisible by 1, 2, 3, 4, 6, 12 → seg-00, 01, 02, 03, 05, 11; also excluded in
    // seg-03 (included wins) and in the general (fst) segment.
    expect(
        &snap,
        &hash(12),
        &[
            ("general.g1", true),
            ("seg-00.g1", true),
            ("seg-01.g1", true),
            ("seg-02.g1", true),
            ("seg-03.g1", true),
            ("seg-05.g1", true),
            ("seg-11.g1", true),
        ],
    );
    expect(
        &snap,
        &hash(7),
        &[
            ("seg-00.g1", true),
            ("seg-03.g1", false),
            ("seg-06.g1", true),
        ],
    );
    expect(&snap, b"user-7", &[("general.g1", true)]);
    expect(&snap, &hash(1000), &[]);

    // Changes after the compaction: an add, a remove, a delete, a replace, a new segment.
    store
        .write(
            Batch::new()
                .add("seg-19.g1", List::Included, hash(7))
                .remove("seg-06.g1", List::Included, hash(7))
                .add("new.g1", List::Excluded, hash(7)),
        )
        .unwrap();
    store.delete_segment("seg-00.g1").unwrap();
    store
        .replace_list("seg-03.g1", None, List::Excluded, [Ok(hash(99))])
        .unwrap();
    let snap = store.snapshot();
    expect(&snap, &hash(7), &[("new.g1", false), ("seg-19.g1", true)]);
    // seg-03's included list still holds user-12; its excluded list no longer matters.
    expect(
        &snap,
        &hash(12),
        &[
            ("general.g1", true),
            ("seg-01.g1", true),
            ("seg-02.g1", true),
            ("seg-03.g1", true),
            ("seg-05.g1", true),
            ("seg-11.g1", true),
        ],
    );
    // A reader process sees the same, through the same index and the log.
    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    expect(
        &reader.snapshot(),
        &hash(7),
        &[("new.g1", false), ("seg-19.g1", true)],
    );
    // And a second compaction folds it all into a new index.
    store.compact().unwrap();
    expect(
        &store.snapshot(),
        &hash(7),
        &[("new.g1", false), ("seg-19.g1", true)],
    );
    drop(store);
    assert!(segstore::verify(dir.path()).unwrap().is_empty());
}

/// After the index is built, batches change lists whose tables the index still answers for:
/// `membership` takes the table's part from the index and the batches' part from the lists'
/// overlays. Random batches (adds and removes of keys the tables hold and do not hold, in both
/// lists, to indexed and new segments), then a bulk replace and a delete, with every key's
/// membership compared with `check` of every segment after each step.
#[test]
fn batches_after_the_index_are_answered_through_it_and_the_overlays() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), options()).unwrap();
    const SEGMENTS: usize = 12;
    const KEYS: usize = 300;
    for s in 0..SEGMENTS {
        let keys = (0..KEYS).filter(|i| i % (s + 2) == 0).map(|i| Ok(hash(i)));
        store
            .replace_list(&format!("seg-{s:02}.g1"), None, List::Included, keys)
            .unwrap();
    }
    store.compact().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let compare = |snap: &segstore::Snapshot, step: &str| {
        let mut refs: Vec<String> = snap.segments().into_iter().map(|s| s.segment).collect();
        refs.sort();
        for i in 0..KEYS + 20 {
            let key = hash(i);
            let mut want = Vec::new();
            for r in &refs {
                match snap.check(r, &key).unwrap() {
                    segstore::Status::Included => want.push((r.clone(), true)),
                    segstore::Status::Excluded => want.push((r.clone(), false)),
                    segstore::Status::Unknown => {}
                }
            }
            let got: Vec<(String, bool)> = snap
                .membership(&key)
                .unwrap()
                .iter()
                .map(|(s, b)| (s.to_string(), b))
                .collect();
            assert_eq!(got, want, "{step}: key {i}");
        }
    };
    for step in 0..30 {
        let mut batch = Batch::new();
        for _ in 0..rng.gen_range(1..40) {
            let segment = format!("seg-{:02}.g1", rng.gen_range(0..SEGMENTS + 2));
            let list = if rng.gen_bool(0.8) {
                List::Included
            } else {
                List::Excluded
            };
            let key = hash(rng.gen_range(0..KEYS + 20));
            batch = if rng.gen_bool(0.5) {
                batch.add(&segment, list, key)
            } else {
                batch.remove(&segment, list, key)
            };
        }
        store.write(batch).unwrap();
        compare(&store.snapshot(), &format!("batch {step}"));
    }
    store
        .replace_list(
            "seg-03.g1",
            None,
            List::Included,
            [Ok(hash(1)), Ok(hash(2))],
        )
        .unwrap();
    store.delete_segment("seg-04.g1").unwrap();
    store
        .write(Batch::new().add("seg-04.g1", List::Included, hash(5)))
        .unwrap();
    compare(&store.snapshot(), "replace, delete, recreate");
    let reader = ReadOnlyStore::open(dir.path(), options()).unwrap();
    compare(&reader.snapshot(), "a reader of the log");
    store.compact().unwrap();
    compare(&store.snapshot(), "compacted");
}
