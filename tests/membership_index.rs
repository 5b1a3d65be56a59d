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
