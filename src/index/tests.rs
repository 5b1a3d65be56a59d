//! The membership index's codecs: the filter index written from hashed tables and read back,
//! its bytes independent of how many buckets the writer fills at once, every damage caught by
//! `check_against`, and the keyed index of earlier releases still read.

use super::filter::{bucket_bits, write_sections_striped, STRIPE_BITS};
use super::*;
use crate::entry::TableRef;
use crate::table::{Table, TableBuilder};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

const STORE_ID: [u8; 16] = [7; 16];

/// Lists as (segment ordinal, list, keys).
type Lists = Vec<(u32, List, BTreeSet<Vec<u8>>)>;

/// A random LaunchDarkly context hash.
fn random_hash(rng: &mut impl Rng) -> Vec<u8> {
    crate::key::context_hash(&format!("user-{}", rng.gen::<u64>())).into_bytes()
}

/// Hashed tables of `lists`, each (ordinal, list, keys), written under `dir`.
fn tables(
    dir: &Path,
    lists: &[(u32, List, BTreeSet<Vec<u8>>)],
) -> Vec<(u32, List, Arc<LoadedTable>)> {
    let io = Io::default();
    lists
        .iter()
        .enumerate()
        .map(|(i, (ordinal, list, keys))| {
            let file_id = i as u64 + 100;
            let path = dir.join(crate::files::table_file_name(file_id));
            let mut b =
                TableBuilder::create(&io, &path, &STORE_ID, TableKind::Hashed, keys.len() as u64)
                    .unwrap();
            for k in keys {
                b.push(k).unwrap();
            }
            let info = b.finish().unwrap();
            let table = Table::open(&path, &STORE_ID, &info, Verification::Checksum).unwrap();
            let loaded = LoadedTable {
                table_ref: TableRef {
                    file_id,
                    offset: 0,
                    info,
                },
                table,
            };
            (*ordinal, *list, Arc::new(loaded))
        })
        .collect()
}

/// `segments` segments whose two lists draw `per_list` keys each from a pool of `pool` random
/// hashes (so keys are shared between lists), with every third excluded list empty.
fn random_lists(seed: u64, segments: u32, per_list: usize, pool: usize) -> (Lists, Vec<Vec<u8>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keys: Vec<Vec<u8>> = (0..pool).map(|_| random_hash(&mut rng)).collect();
    let mut lists = Vec::new();
    for ordinal in 0..segments {
        for list in List::BOTH {
            if list == List::Excluded && ordinal % 3 == 0 {
                continue;
            }
            let n = rng.gen_range(1..=per_list);
            let set = (0..n)
                .map(|_| keys[rng.gen_range(0..keys.len())].clone())
                .collect();
            lists.push((ordinal, list, set));
        }
    }
    (lists, keys)
}

/// Builds and opens a filter index over `lists`.
fn filter_index(
    dir: &Path,
    lists: &[(u32, List, Arc<LoadedTable>)],
    verification: Verification,
) -> MembershipIndex {
    let io = Io::default();
    let index = build_index(&io, dir, &STORE_ID, 1, lists).unwrap().unwrap();
    MembershipIndex::open(&io, dir, &STORE_ID, &index, None, verification).unwrap()
}

/// The lists that hold `key` by the index: its candidates, confirmed in their tables.
fn confirmed(
    index: &MembershipIndex,
    by_posting: &BTreeMap<(u32, List), Arc<LoadedTable>>,
    key: &[u8],
) -> (BTreeSet<(u32, List)>, usize) {
    let code = crate::table::code::encode(key).unwrap();
    let mut out = BTreeSet::new();
    let mut candidates = 0;
    index
        .for_each_candidate(&code, |o, l| {
            candidates += 1;
            if by_posting[&(o, l)].table.contains_code(&code)? {
                out.insert((o, l));
            }
            Ok(())
        })
        .unwrap();
    (out, candidates)
}

#[test]
fn bucket_bits_keep_eight_to_sixteen_entries_a_bucket() {
    assert_eq!(bucket_bits(0), 0);
    assert_eq!(bucket_bits(15), 0);
    for entries in [16u64, 17, 1_000, 65_535, 10_000_000, 1 << 33, u64::MAX] {
        let bits = bucket_bits(entries);
        let per = entries as f64 / (1u64 << bits) as f64;
        assert!(
            (8.0..16.0).contains(&per) || bits == 32,
            "{entries}: {bits} bits"
        );
    }
}

/// Thousands of lists sharing keys, and keys absent from every list: the index names every
/// list that holds a key (its candidates, confirmed, are exactly the model's), and false tag
/// matches stay rare. `verify`'s cross-check passes at both open levels.
#[test]
fn the_filter_index_names_every_list_that_holds_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (lists, pool) = random_lists(1, 1_500, 60, 40_000);
    let mut model: BTreeMap<&[u8], BTreeSet<(u32, List)>> = BTreeMap::new();
    for (o, l, keys) in &lists {
        for k in keys {
            model.entry(k).or_default().insert((*o, *l));
        }
    }
    let loaded = tables(dir.path(), &lists);
    let by_posting: BTreeMap<(u32, List), Arc<LoadedTable>> = loaded
        .iter()
        .map(|(o, l, t)| ((*o, *l), t.clone()))
        .collect();
    for verification in [Verification::Checksum, Verification::Structure] {
        let sub = dir.path().join(format!("{verification:?}"));
        std::fs::create_dir(&sub).unwrap();
        let index = filter_index(&sub, &loaded, verification);
        index.check_structure(1_500).unwrap();
        index.check_against(&loaded).unwrap();
        let mut candidates = 0;
        let mut found = 0;
        for key in &pool {
            let (got, c) = confirmed(&index, &by_posting, key);
            let want = model.get(key.as_slice()).cloned().unwrap_or_default();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(key));
            candidates += c;
            found += want.len();
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for _ in 0..20_000 {
            let absent = random_hash(&mut rng);
            let (got, c) = confirmed(&index, &by_posting, &absent);
            assert!(got.is_empty());
            candidates += c;
        }
        // 8-16 entries a bucket and 256 tags: under 1 false candidate in 10 lookups.
        let false_candidates = candidates - found;
        assert!(
            false_candidates < (pool.len() + 20_000) / 10,
            "{false_candidates} false candidates"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The index's bytes do not depend on how many buckets the writer fills at a time, and
    /// a key in no list gets no confirmed candidate.
    #[test]
    fn the_bytes_do_not_depend_on_the_stripe_size(
        seed in any::<u64>(),
        segments in 50u32..200,
        per_list in 100usize..300,
        stripe_bits in 0u32..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (lists, _) = random_lists(seed, segments, per_list, 5_000);
        let loaded = tables(dir.path(), &lists);
        let written = |stripe_bits| {
            let mut bytes = Vec::new();
            let shape = write_sections_striped(&STORE_ID, &loaded, stripe_bits, &mut |c: &[u8]| {
                bytes.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            (bytes, shape)
        };
        let (small, a) = written(stripe_bits);
        prop_assert!(a.is_some_and(|s| s.bits > stripe_bits), "one stripe only: {a:?}");
        let (large, b) = written(STRIPE_BITS);
        prop_assert!(a.is_some());
        prop_assert_eq!(a, b);
        prop_assert!(small == large, "{} vs {} bytes", small.len(), large.len());
    }
}

/// Any changed byte of the entries or offsets is caught by `check_against` (or, for an offset
/// out of order, by `check_structure`), and no lookup of a damaged index panics.
#[test]
fn every_damaged_byte_of_the_sections_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (lists, pool) = random_lists(3, 100, 60, 3_000);
    let loaded = tables(dir.path(), &lists);
    let io = Io::default();
    let index = build_index(&io, dir.path(), &STORE_ID, 1, &loaded)
        .unwrap()
        .unwrap();
    let path = dir.path().join(postings_file_name(1));
    let original = std::fs::read(&path).unwrap();
    let footer = original.len() - 40;
    let bits = u32::from_le_bytes(original[footer..footer + 4].try_into().unwrap());
    let (width, delta_width) = (original[footer + 4] as usize, original[footer + 5] as usize);
    assert_eq!(delta_width, 2);
    let groups = 1usize << bits.saturating_sub(8);
    let covered = HEADER_LEN
        + (1 + width) * index.entry_count as usize
        + delta_width * ((1 << bits) + 1)
        + 8 * (groups + 1);
    assert!(
        bits > 8 && covered < footer,
        "{bits} bits: two groups or more"
    );
    let offsets = HEADER_LEN + (1 + width) * index.entry_count as usize;
    // Every byte of the offsets, every seventh of the entries.
    let targets = (HEADER_LEN..offsets).step_by(7).chain(offsets..covered);
    for at in targets {
        let mut damaged = original.clone();
        damaged[at] ^= 0x10;
        // With the file's checksum made to match, so that only the cross-check can tell.
        let body = damaged.len() - 8;
        let checksum = xxhash_rust::xxh3::xxh3_64(&damaged[..body]);
        damaged[body..].copy_from_slice(&checksum.to_le_bytes());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &damaged).unwrap();
        let mut rewritten = index;
        rewritten.postings_checksum = checksum;
        let opened = MembershipIndex::open(
            &io,
            dir.path(),
            &STORE_ID,
            &rewritten,
            None,
            Verification::Checksum,
        )
        .unwrap();
        let caught = opened.check_structure(100).is_err() || opened.check_against(&loaded).is_err();
        assert!(caught, "byte {at} of {covered}");
        for key in pool.iter().take(50) {
            let code = crate::table::code::encode(key).unwrap();
            let _ = opened.for_each_candidate(&code, |_, _| Ok(()));
        }
    }
}

/// A keyed index (what earlier releases wrote: a key table beside exact postings) still
/// opens at both levels, answers exactly, and passes `verify`'s cross-check.
#[test]
fn a_keyed_index_of_an_earlier_release_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let (lists, pool) = random_lists(4, 100, 50, 3_000);
    let loaded = tables(dir.path(), &lists);
    let io = Io::default();
    let (index, keys) = build_keyed_index(&io, dir.path(), &STORE_ID, 50, 51, &loaded)
        .unwrap()
        .unwrap();
    assert!(index.keys.is_some());
    for verification in [Verification::Checksum, Verification::Structure] {
        let opened = MembershipIndex::open(
            &io,
            dir.path(),
            &STORE_ID,
            &index,
            Some(keys.clone()),
            verification,
        )
        .unwrap();
        assert!(!opened.needs_confirming());
        opened.check_structure(100).unwrap();
        opened.check_against(&loaded).unwrap();
        for key in &pool {
            let code = crate::table::code::encode(key).unwrap();
            let mut got = BTreeSet::new();
            opened
                .for_each_candidate(&code, |o, l| {
                    got.insert((o, l));
                    Ok(())
                })
                .unwrap();
            let want: BTreeSet<(u32, List)> = lists
                .iter()
                .filter(|(_, _, keys)| keys.contains(key))
                .map(|(o, l, _)| (*o, *l))
                .collect();
            assert_eq!(got, want);
        }
    }
    // A manifest that names it as a filter index (no key table) is an error, not a misread.
    let wrong = MembershipIndex::open(
        &io,
        dir.path(),
        &STORE_ID,
        &index,
        None,
        Verification::Checksum,
    );
    assert!(matches!(wrong, Err(Error::Corrupt { .. })), "{wrong:?}");
}

/// Keys that share their top bits (no SHA-256 output does; hand-made keys may) crowd into a
/// few buckets: a group then holds more entries than a 2-byte delta can count, the writer
/// switches to 4-byte deltas, and every lookup still names every list that holds the key.
#[test]
fn crowded_buckets_take_wide_deltas_and_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let crowded = |rng: &mut rand::rngs::StdRng| {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes[4..]);
        bytes[..4].copy_from_slice(b"same");
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes).into_bytes()
    };
    let pool: Vec<Vec<u8>> = (0..40_000).map(|_| crowded(&mut rng)).collect();
    let lists: Lists = (0..3u32)
        .map(|o| {
            let keys = pool
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 != o as usize)
                .map(|(_, k)| k.clone())
                .collect();
            (o, List::Included, keys)
        })
        .collect();
    let loaded = tables(dir.path(), &lists);
    let by_posting: BTreeMap<(u32, List), Arc<LoadedTable>> = loaded
        .iter()
        .map(|(o, l, t)| ((*o, *l), t.clone()))
        .collect();
    let index = filter_index(dir.path(), &loaded, Verification::Structure);
    let bytes = std::fs::read(dir.path().join(postings_file_name(1))).unwrap();
    assert_eq!(bytes[bytes.len() - 40 + 5], 4, "4-byte deltas");
    index.check_structure(3).unwrap();
    index.check_against(&loaded).unwrap();
    for (i, key) in pool.iter().enumerate().step_by(13) {
        let want: BTreeSet<(u32, List)> = (0..3u32)
            .filter(|o| i % 3 != *o as usize)
            .map(|o| (o, List::Included))
            .collect();
        assert_eq!(confirmed(&index, &by_posting, key).0, want);
    }
    let absent = crowded(&mut rng);
    assert!(confirmed(&index, &by_posting, &absent).0.is_empty());
}
