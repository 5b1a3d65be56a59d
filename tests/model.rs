//! The store against a plain in-memory model.
//!
//! Invariant: after every operation of a random sequence (creates, deletes, batches with
//! and without a cursor guard, bulk replaces, detail edits, compactions, close and reopen),
//! `check`, `membership`, `export`, `segments` and `metadata` answer exactly what the model
//! says, both through the writer and through a read-only handle; and `verify` finds the store
//! sound after every compaction (which writes packs, copying unchanged tables into them) and
//! at the end.

mod scratch;

use proptest::prelude::*;
use segstore::{
    context_hash, Batch, Details, Error, List, ListChange, Options, ReadOnlyStore, SegmentChange,
    Status, Store,
};
use std::collections::{BTreeMap, BTreeSet};

const SEGMENTS: [&str; 4] = ["alpha.g1", "beta.g2", "gamma.g1", "delta"];

fn key_universe() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..10).map(|i| format!("user-{i}").into_bytes()).collect();
    keys.extend((0..10).map(|i| context_hash(&format!("ctx-{i}")).into_bytes()));
    keys.extend((0..10u32).map(|i| {
        let x = i.wrapping_mul(0x9e37_79b9);
        let (a, b, c) = ((i * 7919) & 0xffff, i * 31, i * 104_729);
        format!("{x:08x}-{a:04x}-4{b:03x}-8000-{c:012x}").into_bytes()
    }));
    keys
}

/// Segments 0 and 1 hold only context hashes (so compaction gives them hashed tables and the
/// membership index); segment 2 only UUIDs (uuid tables, probed one by one); segment 3 mixes
/// all three shapes (fst tables).
fn key_for(keys: &[Vec<u8>], segment: usize, k: usize) -> Vec<u8> {
    match segment {
        0 | 1 => keys[10 + k % 10].clone(),
        2 => keys[20 + k % 10].clone(),
        _ => keys[k].clone(),
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ModelSegment {
    kind: String,
    details: Details,
    lists: [BTreeSet<Vec<u8>>; 2],
}

#[derive(Debug, Default)]
struct Model {
    segments: BTreeMap<String, ModelSegment>,
    cursor: String,
    synchronized_on: Option<u64>,
}

impl Model {
    fn apply_change(&mut self, change: &SegmentChange) {
        let seg = self
            .segments
            .entry(change.segment.clone())
            .or_insert_with(|| ModelSegment {
                kind: change.kind.clone().unwrap_or_else(|| "user".into()),
                details: Details {
                    name: change.name.clone(),
                    ..Details::default()
                },
                ..ModelSegment::default()
            });
        for list in List::BOTH {
            let lc = change.list(list);
            let set = &mut seg.lists[list.index()];
            for k in &lc.add {
                set.insert(k.to_vec());
            }
            for k in &lc.remove {
                set.remove(k);
            }
        }
    }

    fn check(&self, segment: &str, key: &[u8]) -> Status {
        match self.segments.get(segment) {
            Some(s) if s.lists[0].contains(key) => Status::Included,
            Some(s) if s.lists[1].contains(key) => Status::Excluded,
            _ => Status::Unknown,
        }
    }
}

/// Key operations on one segment: (key index, add?, excluded list?).
type KeyOps = Vec<(usize, bool, bool)>;

#[derive(Debug, Clone)]
enum Op {
    Create(usize, bool),
    Delete(usize),
    Write {
        changes: Vec<(usize, KeyOps)>,
        guard: Option<(bool, u8)>,
        synced: Option<u64>,
    },
    Replace(usize, bool, Vec<usize>),
    Details(usize, Option<String>, Vec<String>),
    Compact,
    Reopen,
}

fn op_strategy(nkeys: usize) -> impl Strategy<Value = Op> {
    let seg = 0..SEGMENTS.len();
    let key_ops = prop::collection::vec((0..nkeys, any::<bool>(), any::<bool>()), 0..8);
    prop_oneof![
        2 => (seg.clone(), any::<bool>()).prop_map(|(s, org)| Op::Create(s, org)),
        1 => seg.clone().prop_map(Op::Delete),
        8 => (
            prop::collection::vec((seg.clone(), key_ops), 1..3),
            prop::option::of((any::<bool>(), 0u8..4)),
            prop::option::of(0u64..1_000_000),
        )
            .prop_map(|(changes, guard, synced)| Op::Write { changes, guard, synced }),
        2 => (seg.clone(), any::<bool>(), prop::collection::vec(0..nkeys, 0..12))
            .prop_map(|(s, ex, keys)| Op::Replace(s, ex, keys)),
        1 => (seg.clone(), prop::option::of("[a-z]{1,6}"), prop::collection::vec("[a-z]{1,4}", 0..3))
            .prop_map(|(s, n, t)| Op::Details(s, n, t)),
        2 => Just(Op::Compact),
        2 => Just(Op::Reopen),
    ]
}

fn options(auto_compact: bool) -> Options {
    Options {
        sync: false,
        auto_compact,
        compact_min_log_bytes: 600,
        compact_log_ratio: 0.0,
        poll_interval: None,
        membership_index_min_lists: 1,
        ..Options::default()
    }
}

fn assert_matches(snapshot: &segstore::Snapshot, model: &Model, keys: &[Vec<u8>], who: &str) {
    let meta = snapshot.metadata();
    assert_eq!(meta.cursor, model.cursor, "{who}: cursor");
    assert_eq!(
        meta.synchronized_on, model.synchronized_on,
        "{who}: synchronized_on"
    );
    let infos = snapshot.segments();
    let listed: Vec<&str> = infos.iter().map(|i| i.segment.as_str()).collect();
    let expected: Vec<&str> = model.segments.keys().map(String::as_str).collect();
    assert_eq!(listed, expected, "{who}: segment list");
    for info in &infos {
        let m = &model.segments[&info.segment];
        assert_eq!(info.kind, m.kind, "{who}: kind of {}", info.segment);
        assert_eq!(
            info.details, m.details,
            "{who}: details of {}",
            info.segment
        );
        assert_eq!(
            info.included,
            m.lists[0].len() as u64,
            "{who}: included count"
        );
        assert_eq!(
            info.excluded,
            m.lists[1].len() as u64,
            "{who}: excluded count"
        );
        for list in List::BOTH {
            let exported: Vec<Vec<u8>> = snapshot.export(&info.segment, list).unwrap().collect();
            let want: Vec<Vec<u8>> = m.lists[list.index()].iter().cloned().collect();
            assert_eq!(exported, want, "{who}: export of {} {list:?}", info.segment);
        }
    }
    for key in keys {
        let membership = snapshot.membership(key).unwrap();
        let mut want = Vec::new();
        for segment in SEGMENTS {
            let status = model.check(segment, key);
            assert_eq!(
                snapshot.check(segment, key).unwrap(),
                status,
                "{who}: check {segment}"
            );
            match status {
                Status::Included => want.push((segment.to_string(), true)),
                Status::Excluded => want.push((segment.to_string(), false)),
                Status::Unknown => {}
            }
        }
        want.sort();
        let got: Vec<(String, bool)> = membership.iter().map(|(s, b)| (s.to_string(), b)).collect();
        assert_eq!(
            got,
            want,
            "{who}: membership of {:?}",
            String::from_utf8_lossy(key)
        );
    }
}

fn run(ops: Vec<Op>, auto_compact: bool) {
    let keys = key_universe();
    let dir = scratch::dir();
    let mut store = Some(Store::create(dir.path(), options(auto_compact)).unwrap());
    let mut model = Model::default();
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Create(i, org) => {
                let kind = if org { "org" } else { "user" };
                let result = s.create_segment(SEGMENTS[i], kind);
                if model.segments.contains_key(SEGMENTS[i]) {
                    assert!(matches!(result, Err(Error::SegmentExists(_))));
                } else {
                    result.unwrap();
                    model.segments.insert(
                        SEGMENTS[i].into(),
                        ModelSegment {
                            kind: kind.into(),
                            ..ModelSegment::default()
                        },
                    );
                }
            }
            Op::Delete(i) => {
                let result = s.delete_segment(SEGMENTS[i]);
                if model.segments.remove(SEGMENTS[i]).is_some() {
                    result.unwrap();
                } else {
                    assert!(matches!(result, Err(Error::UnknownSegment(_))));
                }
            }
            Op::Write {
                changes,
                guard,
                synced,
            } => {
                let mut batch = Batch::new();
                for (seg, key_ops) in changes {
                    let mut change = SegmentChange::new(SEGMENTS[seg]);
                    change.name = Some(format!("synced-{seg}"));
                    for (k, add, excluded) in key_ops {
                        let list = if excluded {
                            List::Excluded
                        } else {
                            List::Included
                        };
                        let lc: &mut ListChange = change.list_mut(list);
                        if add {
                            lc.add.push(key_for(&keys, seg, k));
                        } else {
                            lc.remove.push(key_for(&keys, seg, k));
                        }
                    }
                    batch.changes.push(change);
                }
                let mut expected_ok = true;
                if let Some((matching, next)) = guard {
                    let previous = if matching {
                        model.cursor.clone()
                    } else {
                        format!("{}-stale", model.cursor)
                    };
                    batch = batch.with_cursor(previous, format!("v{next}"));
                    expected_ok = matching;
                }
                if let Some(at) = synced {
                    batch = batch.synchronized_on(at);
                }
                let result = s.write(batch.clone());
                if expected_ok {
                    result.unwrap();
                    for change in &batch.changes {
                        model.apply_change(change);
                    }
                    if let Some(c) = batch.set_cursor {
                        model.cursor = c;
                    }
                    if let Some(at) = batch.synchronized_on {
                        model.synchronized_on = Some(at);
                    }
                } else {
                    assert!(
                        matches!(result, Err(Error::CursorMismatch { .. })),
                        "{result:?}"
                    );
                }
            }
            Op::Replace(i, excluded, idx) => {
                let list = if excluded {
                    List::Excluded
                } else {
                    List::Included
                };
                let chosen: Vec<Vec<u8>> = idx.iter().map(|&k| key_for(&keys, i, k)).collect();
                let stats = s
                    .replace_list(
                        SEGMENTS[i],
                        Some("user"),
                        list,
                        chosen.iter().cloned().map(Ok),
                    )
                    .unwrap();
                let seg =
                    model
                        .segments
                        .entry(SEGMENTS[i].into())
                        .or_insert_with(|| ModelSegment {
                            kind: "user".into(),
                            ..ModelSegment::default()
                        });
                seg.lists[list.index()] = chosen.into_iter().collect();
                assert_eq!(stats.keys, seg.lists[list.index()].len() as u64);
            }
            Op::Details(i, name, tags) => {
                let details = Details {
                    name,
                    description: Some("local".into()),
                    tags,
                };
                let result = s.set_details(SEGMENTS[i], details.clone());
                match model.segments.get_mut(SEGMENTS[i]) {
                    Some(seg) => {
                        result.unwrap();
                        seg.details = details;
                    }
                    None => assert!(matches!(result, Err(Error::UnknownSegment(_)))),
                }
            }
            Op::Compact => {
                s.compact().unwrap();
                // Every compaction leaves a store that verify passes (packs included). With
                // auto-compaction a background compaction may be retiring files meanwhile:
                // the final check below covers those runs.
                if !auto_compact {
                    let problems = segstore::verify(dir.path()).unwrap();
                    assert!(problems.is_empty(), "verify after compaction: {problems:?}");
                }
            }
            Op::Reopen => {
                drop(store.take());
                store = Some(Store::open(dir.path(), options(auto_compact)).unwrap());
            }
        }
        let s = store.as_ref().unwrap();
        assert_matches(&s.snapshot(), &model, &keys, "writer");
        assert_eq!(s.background_error(), None);
    }
    let reader = ReadOnlyStore::open(dir.path(), options(false)).unwrap();
    assert_matches(&reader.snapshot(), &model, &keys, "reader");
    drop(store);
    let problems = segstore::verify(dir.path()).unwrap();
    assert!(problems.is_empty(), "verify at the end: {problems:?}");
    let reopened = Store::open(dir.path(), options(false)).unwrap();
    assert_matches(&reopened.snapshot(), &model, &keys, "reopened");
}

fn cases() -> u32 {
    std::env::var("SEGSTORE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, .. ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op_strategy(30), 1..30), auto in any::<bool>()) {
        run(ops, auto);
    }
}
