//! `Verification::Structure` opens without reading table bodies, then checks each 16 KiB block
//! the first time a lookup reads it (an fst body whole). On a store with packs, a membership
//! index and an fst list, damage anywhere in a table or postings file must make the lookups
//! that read it fail, and every lookup that succeeds must answer as the intact store does.

use rand::{Rng, SeedableRng};
use segstore::{context_hash, Error, List, Options, ReadOnlyStore, Status, Store, Verification};
use std::collections::BTreeMap;
use std::path::Path;

const SEGMENTS: usize = 12;
const KEYS_PER_SEGMENT: usize = 4_000;

fn hash(i: usize) -> Vec<u8> {
    context_hash(&format!("user-{i}")).into_bytes()
}

fn structure() -> Options {
    Options {
        poll_interval: None,
        verification: Verification::Structure,
        ..Options::default()
    }
}

/// Segment `s` holds the keys `i` with `i % SEGMENTS` in a window around `s`: every key is in a
/// few segments, so postings have several entries.
fn holds(s: usize, i: usize) -> bool {
    (i % SEGMENTS + SEGMENTS - s) % SEGMENTS < 3
}

fn build(dir: &Path) -> Vec<Vec<u8>> {
    let store = Store::create(
        dir,
        Options {
            auto_compact: false,
            ..Options::default()
        },
    )
    .unwrap();
    let universe = SEGMENTS * KEYS_PER_SEGMENT / 3;
    for s in 0..SEGMENTS {
        let keys = (0..universe).filter(|&i| holds(s, i)).map(|i| Ok(hash(i)));
        store
            .replace_list(&format!("seg-{s:02}.g1"), None, List::Included, keys)
            .unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let general: Vec<Vec<u8>> = (0..20_000)
        .map(|_| {
            let len = rng.gen_range(12..40);
            (0..len).map(|_| rng.gen_range(b'!'..=b'~')).collect()
        })
        .collect();
    store
        .replace_list(
            "general.g1",
            None,
            List::Included,
            general.iter().cloned().map(Ok),
        )
        .unwrap();
    store.compact().unwrap();
    let mut probes: Vec<Vec<u8>> = (0..universe + 500).map(hash).collect();
    probes.extend(general.into_iter().step_by(7));
    probes
}

/// What the intact store answers: `check` of every probe in every segment, and memberships.
type Answers = (Vec<Vec<Status>>, Vec<BTreeMap<String, bool>>);

fn answers(reader: &ReadOnlyStore, probes: &[Vec<u8>]) -> (Answers, usize) {
    let snapshot = reader.snapshot();
    let mut failed = 0;
    let mut checks = Vec::new();
    let mut memberships = Vec::new();
    let mut segments: Vec<String> = (0..SEGMENTS).map(|s| format!("seg-{s:02}.g1")).collect();
    segments.push("general.g1".into());
    for key in probes {
        let row: Vec<Status> = segments
            .iter()
            .map(|s| match snapshot.check(s, key) {
                Ok(status) => status,
                Err(e) => {
                    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
                    failed += 1;
                    // Never the answer of an intact lookup: marks the failure.
                    Status::Unknown
                }
            })
            .collect();
        checks.push(row);
        memberships.push(match snapshot.membership(key) {
            Ok(m) => m.iter().map(|(s, b)| (s.to_owned(), b)).collect(),
            Err(_) => {
                failed += 1;
                BTreeMap::from([("<failed>".to_owned(), false)])
            }
        });
    }
    ((checks, memberships), failed)
}

/// The store's files of one kind (`t-` tables, `x-` postings), largest first.
fn files(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    found
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn damaged_blocks_fail_the_lookups_that_read_them_and_no_other_answer_changes() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("good");
    let probes = build(&good);
    assert!(
        !files(&good, "x-").is_empty(),
        "the store has a membership index"
    );
    let intact = ReadOnlyStore::open(&good, structure()).unwrap();
    let (expected, failed) = answers(&intact, &probes);
    assert_eq!(failed, 0);
    drop(intact);

    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut noticed = 0;
    for trial in 0..16 {
        let dir = root.path().join(format!("bad-{trial}"));
        copy_store(&good, &dir);
        // Tables (packs, the fst list's file) and the index's postings file.
        let prefix = if trial % 4 == 3 { "x-" } else { "t-" };
        let victims = files(&dir, prefix);
        let victim = &victims[trial % victims.len()];
        let mut bytes = std::fs::read(victim).unwrap();
        // Past the first block, where the open does not look.
        let at = rng.gen_range(64 << 10..bytes.len() - 4096);
        bytes[at] ^= 1 << rng.gen_range(0..8);
        std::fs::write(victim, &bytes).unwrap();

        // The default level refuses the store at open, unless the flip fell in bytes no
        // table covers (padding between a pack's tables, never read).
        let damaged = ReadOnlyStore::open(&dir, Options::default()).is_err();
        let Ok(reader) = ReadOnlyStore::open(&dir, structure()) else {
            noticed += 1;
            continue;
        };
        let ((checks, memberships), failed) = answers(&reader, &probes);
        for (i, (row, want)) in checks.iter().zip(&expected.0).enumerate() {
            for (got, want) in row.iter().zip(want) {
                // A failed lookup is recorded as Unknown: anything else must match.
                assert!(
                    got == want || *got == Status::Unknown,
                    "{victim:?} byte {at}: probe {i} answered {got:?}, intact {want:?}"
                );
            }
        }
        for (got, want) in memberships.iter().zip(&expected.1) {
            assert!(
                got == want || got.contains_key("<failed>"),
                "{victim:?} byte {at}"
            );
        }
        if !damaged {
            assert_eq!(
                failed, 0,
                "{victim:?} byte {at}: unread bytes failed a lookup"
            );
            continue;
        }
        // The probes read every block of every list, so the damage shows.
        assert!(failed > 0, "{victim:?}: damage at byte {at} went unnoticed");
        noticed += 1;
        // `verify` names the damage too.
        assert!(segstore::verify(&dir).map_or(true, |problems| !problems.is_empty()));
    }
    assert!(
        noticed >= 12,
        "only {noticed} of 16 flips landed in checked bytes"
    );
}
