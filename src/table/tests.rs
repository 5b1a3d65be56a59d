use super::*;
use crate::table::code::CODE_LEN;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

const STORE: [u8; 16] = *b"store-id-0123456";
const OTHER_STORE: [u8; 16] = *b"store-id-6543210";
/// The block sums of a table of at most 16 KiB (the small ones here): one block, one sum.
const SMALL_SUMS_LEN: usize = 8;

fn hash_key(rng: &mut impl Rng) -> Vec<u8> {
    let bytes: [u8; 32] = rng.gen();
    STANDARD.encode(bytes).into_bytes()
}

fn build(path: &Path, kind: TableKind, keys: &BTreeSet<Vec<u8>>, hint: u64) -> TableInfo {
    let mut b = TableBuilder::create(&Io::default(), path, &STORE, kind, hint).unwrap();
    for k in keys {
        b.push(k).unwrap();
    }
    let info = b.finish().unwrap();
    assert_eq!(info.kind, kind);
    assert_eq!(info.key_count, keys.len() as u64);
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(info.file_len, bytes.len() as u64);
    assert_eq!(info.checksum, xxh3_64(&bytes));
    info
}

fn general_keys(rng: &mut impl Rng, n: usize) -> BTreeSet<Vec<u8>> {
    (0..n)
        .map(|_| {
            let len = rng.gen_range(1..20);
            (0..len).map(|_| rng.gen_range(b'a'..=b'f')).collect()
        })
        .collect()
}

fn hash_keys(rng: &mut impl Rng, n: usize) -> BTreeSet<Vec<u8>> {
    (0..n).map(|_| hash_key(rng)).collect()
}

fn uuid_key(rng: &mut impl Rng) -> Vec<u8> {
    let b: [u8; 16] = rng.gen();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
    .into_bytes()
}

fn uuid_keys(rng: &mut impl Rng, n: usize) -> BTreeSet<Vec<u8>> {
    (0..n).map(|_| uuid_key(rng)).collect()
}

/// Keys for a table of `kind`: hash keys for hashed, UUIDs for uuid, general ones for fst.
fn keys_for(kind: TableKind, rng: &mut impl Rng, n: usize) -> BTreeSet<Vec<u8>> {
    match kind {
        TableKind::Fst => general_keys(rng, n),
        TableKind::Hashed => hash_keys(rng, n),
        TableKind::Uuid => uuid_keys(rng, n),
    }
}

fn check_table(table: &Table, keys: &BTreeSet<Vec<u8>>, probes: &[Vec<u8>]) {
    assert_eq!(table.len(), keys.len() as u64);
    assert_eq!(table.is_empty(), keys.is_empty());
    for k in keys {
        assert!(
            table.contains(k).unwrap(),
            "missing {:?}",
            String::from_utf8_lossy(k)
        );
    }
    for p in probes {
        assert_eq!(table.contains(p).unwrap(), keys.contains(p), "{p:?}");
    }
    let all: Vec<Vec<u8>> = table.keys().unwrap().collect();
    assert_eq!(all, keys.iter().cloned().collect::<Vec<_>>());
    for p in probes.iter().chain(keys.iter().take(20)) {
        let from: Vec<Vec<u8>> = table.keys_from(p).unwrap().collect();
        let want: Vec<Vec<u8>> = keys.range(p.clone()..).cloned().collect();
        assert_eq!(from, want, "keys_from {p:?}");
    }
}

fn probes(rng: &mut impl Rng) -> Vec<Vec<u8>> {
    let mut p = vec![
        vec![],
        b"a".to_vec(),
        b"zzzz".to_vec(),
        vec![0],
        vec![0xFF; 50],
        format!("{}0=", "+".repeat(42)).into_bytes(),
        format!("{}w=", "z".repeat(42)).into_bytes(),
        b"M".to_vec(),
    ];
    p.extend(general_keys(rng, 30));
    p.extend(hash_keys(rng, 30));
    p.extend(uuid_keys(rng, 30));
    // Near-UUIDs: uppercase, a hyphen moved, one digit short.
    p.push(b"0F0E0D0C-0B0A-0908-0706-050403020100".to_vec());
    p.push(b"0f0e0d0c0-b0a-0908-0706-050403020100".to_vec());
    p.push(b"0f0e0d0c-0b0a-0908-0706-05040302010".to_vec());
    p
}

#[test]
fn kind_tags() {
    assert_eq!(TableKind::from_u8(1), Some(TableKind::Fst));
    assert_eq!(TableKind::from_u8(2), Some(TableKind::Hashed));
    assert_eq!(TableKind::from_u8(3), Some(TableKind::Uuid));
    assert_eq!(TableKind::from_u8(0), None);
    assert_eq!(TableKind::from_u8(4), None);
    assert_eq!(TableKind::Hashed.as_u8(), 2);
    assert_eq!(TableKind::Uuid.as_u8(), 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    assert_eq!(
        TableKind::dense_for(&hash_key(&mut rng)),
        Some(TableKind::Hashed)
    );
    assert_eq!(
        TableKind::dense_for(&uuid_key(&mut rng)),
        Some(TableKind::Uuid)
    );
    assert_eq!(TableKind::dense_for(b"user-00001234"), None);
}

#[test]
fn table_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Table>();
}

#[test]
fn build_open_lookup_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let probes = probes(&mut rng);
    for (case, (kind, keys)) in [
        (TableKind::Fst, general_keys(&mut rng, 2000)),
        (TableKind::Fst, hash_keys(&mut rng, 500)),
        (TableKind::Hashed, hash_keys(&mut rng, 3000)),
        (TableKind::Fst, uuid_keys(&mut rng, 500)),
        (TableKind::Uuid, uuid_keys(&mut rng, 3000)),
    ]
    .into_iter()
    .enumerate()
    {
        for (i, hint) in [keys.len() as u64, 0, keys.len() as u64 * 100]
            .into_iter()
            .enumerate()
        {
            let path = dir
                .path()
                .join(format!("{case}-{kind:?}-{}-{i}.tbl", keys.len()));
            let info = build(&path, kind, &keys, hint);
            for v in [Verification::Checksum, Verification::Structure] {
                let t = Table::open(&path, &STORE, &info, v).unwrap();
                assert_eq!(t.kind(), kind);
                assert_eq!(t.info(), info);
                assert_eq!(t.path(), path);
                check_table(&t, &keys, &probes);
            }
            verify_table(&path, &STORE, &info).unwrap();
        }
    }
}

#[test]
fn empty_and_tiny_tables() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let probes = probes(&mut rng);
    for kind in [TableKind::Fst, TableKind::Hashed, TableKind::Uuid] {
        for n in [0usize, 1, 2, 3, 4, 5, 9] {
            let keys = match kind {
                TableKind::Uuid => uuid_keys(&mut rng, n),
                _ => hash_keys(&mut rng, n),
            };
            let path = dir.path().join(format!("{kind:?}-{n}.tbl"));
            let info = build(&path, kind, &keys, n as u64);
            let t = Table::open(&path, &STORE, &info, Verification::Checksum).unwrap();
            check_table(&t, &keys, &probes);
            verify_table(&path, &STORE, &info).unwrap();
        }
    }
}

#[test]
fn hashed_index_shrinks_when_hint_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let keys = hash_keys(&mut rng, 1000);
    let exact = build(&dir.path().join("a"), TableKind::Hashed, &keys, 1000);
    let over = build(&dir.path().join("b"), TableKind::Hashed, &keys, 1 << 20);
    assert_eq!(exact.file_len, over.file_len);
    assert_eq!(exact.checksum, over.checksum);
}

#[test]
fn builder_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut b = TableBuilder::create(&Io::default(), &path, &STORE, TableKind::Fst, 10).unwrap();
    assert!(matches!(
        TableBuilder::create(&Io::default(), &path, &STORE, TableKind::Fst, 10),
        Err(Error::Io { .. })
    ));
    b.push(b"b").unwrap();
    assert!(matches!(b.push(b"b"), Err(Error::InvalidArgument { .. })));
    assert!(matches!(b.push(b"a"), Err(Error::InvalidArgument { .. })));
    assert!(matches!(b.push(b""), Err(Error::InvalidKey { len: 0 })));
    assert!(matches!(
        b.push(&[b'z'; 4097]),
        Err(Error::InvalidKey { len: 4097 })
    ));
    b.push(&[b'z'; 4096]).unwrap();
    b.push(b"zz").unwrap_err(); // a prefix of the previous key
    let info = b.finish().unwrap();
    assert_eq!(info.key_count, 2);

    let path = dir.path().join("h");
    let mut b = TableBuilder::create(&Io::default(), &path, &STORE, TableKind::Hashed, 10).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let keys = hash_keys(&mut rng, 2);
    let (k1, k2) = (keys.first().unwrap(), keys.last().unwrap());
    b.push(k2).unwrap();
    assert!(matches!(b.push(k2), Err(Error::InvalidArgument { .. })));
    assert!(matches!(b.push(k1), Err(Error::InvalidArgument { .. })));
    assert!(matches!(b.push(b"zzz"), Err(Error::InvalidArgument { .. })));
    let mut noncanonical = k2.clone();
    noncanonical[42] = b'z'; // 'z' has low bits set
    assert!(matches!(
        b.push(&noncanonical),
        Err(Error::InvalidArgument { .. })
    ));
    drop(b);
    assert!(!path.exists(), "an unfinished table is removed on drop");
}

#[test]
fn open_rejects_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let keys = hash_keys(&mut rng, 100);
    let path = dir.path().join("h");
    let info = build(&path, TableKind::Hashed, &keys, 100);
    let open = |store: &[u8; 16], info: TableInfo, v| Table::open(&path, store, &info, v);
    for v in [Verification::Checksum, Verification::Structure] {
        assert!(matches!(
            open(&OTHER_STORE, info, v),
            Err(Error::ForeignFile { .. })
        ));
        let wrong_kind = TableInfo {
            kind: TableKind::Fst,
            ..info
        };
        assert!(matches!(
            open(&STORE, wrong_kind, v),
            Err(Error::Corrupt { .. })
        ));
        let wrong_count = TableInfo {
            key_count: 99,
            ..info
        };
        assert!(matches!(
            open(&STORE, wrong_count, v),
            Err(Error::Corrupt { .. })
        ));
        let wrong_len = TableInfo {
            file_len: info.file_len + 1,
            ..info
        };
        assert!(matches!(
            open(&STORE, wrong_len, v),
            Err(Error::Corrupt { .. })
        ));
    }
    let wrong_sum = TableInfo {
        checksum: info.checksum ^ 1,
        ..info
    };
    assert!(matches!(
        open(&STORE, wrong_sum, Verification::Checksum),
        Err(Error::ChecksumMismatch { .. })
    ));
    // A file of at most 64 KiB is read whole, and then checked whole even at the Structure
    // level.
    assert!(matches!(
        open(&STORE, wrong_sum, Verification::Structure),
        Err(Error::ChecksumMismatch { .. })
    ));

    // A newer version.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(TABLE_FORMAT_VERSION + 1).to_le_bytes());
    let newer = dir.path().join("newer");
    std::fs::write(&newer, &bytes).unwrap();
    let newer_info = TableInfo {
        checksum: xxh3_64(&bytes),
        ..info
    };
    assert!(matches!(
        Table::open(&newer, &STORE, &newer_info, Verification::Checksum),
        Err(Error::UnsupportedVersion { found: 3, .. })
    ));
    // Missing file.
    assert!(matches!(
        Table::open(
            &dir.path().join("nope"),
            &STORE,
            &info,
            Verification::Checksum
        ),
        Err(Error::Io { .. })
    ));
}

/// Every single-byte flip and every truncation of a small table: open with Checksum fails;
/// with Structure, open + contains + keys never panic on a hashed table.
fn corruption_sweep(kind: TableKind, keys: &BTreeSet<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orig");
    let info = build(&path, kind, keys, keys.len() as u64);
    let good = std::fs::read(&path).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let probes = probes(&mut rng);
    let bad = dir.path().join("bad");
    let try_all = |t: &Table| {
        for k in keys.iter().chain(probes.iter()) {
            let _ = t.contains(k);
        }
        assert!(t.keys().map_or(0, Iterator::count) <= keys.len());
        let _ = t.keys_from(b"M").map(Iterator::count);
    };
    for at in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bytes = good.clone();
            bytes[at] ^= flip;
            std::fs::write(&bad, &bytes).unwrap();
            let r = Table::open(&bad, &STORE, &info, Verification::Checksum);
            assert!(r.is_err(), "flip {flip:#x} at {at} accepted");
            assert!(verify_table(&bad, &STORE, &info).is_err());
            // With the file's real checksum the checksum no longer protects us: only the
            // structure does. Nothing may panic for a hashed table.
            if kind == TableKind::Hashed {
                let same_sum = TableInfo {
                    checksum: xxh3_64(&bytes),
                    ..info
                };
                for v in [Verification::Structure, Verification::Checksum] {
                    if let Ok(t) = Table::open(&bad, &STORE, &same_sum, v) {
                        try_all(&t);
                    }
                }
                let _ = verify_table(&bad, &STORE, &same_sum);
            }
        }
    }
    for len in 0..good.len() {
        std::fs::write(&bad, &good[..len]).unwrap();
        for v in [Verification::Checksum, Verification::Structure] {
            assert!(
                Table::open(&bad, &STORE, &info, v).is_err(),
                "truncated to {len}"
            );
            // Even when the manifest agrees with the truncated length.
            let short = TableInfo {
                file_len: len as u64,
                checksum: xxh3_64(&good[..len]),
                ..info
            };
            assert!(
                Table::open(&bad, &STORE, &short, v).is_err(),
                "truncated to {len}"
            );
        }
    }
}

#[test]
fn corruption_fst() {
    let keys: BTreeSet<Vec<u8>> = ["apple", "apricot", "banana", "band", "user-1", "user-2"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    corruption_sweep(TableKind::Fst, &keys);
}

#[test]
fn corruption_hashed() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    corruption_sweep(TableKind::Hashed, &hash_keys(&mut rng, 9));
}

#[test]
fn corruption_uuid() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    corruption_sweep(TableKind::Uuid, &keys_for(TableKind::Uuid, &mut rng, 9));
}

#[test]
fn dense_tables_reject_keys_of_the_other_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (kind, wrong) in [
        (TableKind::Hashed, uuid_key(&mut rng)),
        (TableKind::Uuid, hash_key(&mut rng)),
        (
            TableKind::Uuid,
            b"0F0E0D0C-0B0A-0908-0706-050403020100".to_vec(),
        ),
    ] {
        let path = dir.path().join(format!("{kind:?}-wrong.tbl"));
        let mut b = TableBuilder::create(&Io::default(), &path, &STORE, kind, 10).unwrap();
        let err = b.push(&wrong).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }
}

#[test]
fn hashed_structure_rejects_bad_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let keys = hash_keys(&mut rng, 64);
    let path = dir.path().join("h");
    let info = build(&path, TableKind::Hashed, &keys, 64);
    let bytes = std::fs::read(&path).unwrap();
    let index_start = HEADER_LEN + 64 * CODE_LEN;
    // Last index entry != key_count (the start is the first half of the 8-byte entry).
    let last = bytes.len() - FOOTER_LEN - SMALL_SUMS_LEN - INDEX_ENTRY_LEN;
    let mut b = bytes.clone();
    b[last] ^= 1;
    std::fs::write(&path, &b).unwrap();
    let i2 = TableInfo {
        checksum: xxh3_64(&b),
        ..info
    };
    assert!(Table::open(&path, &STORE, &i2, Verification::Structure).is_err());
    // A decreasing middle entry (with a checksum that agrees): caught at open by the
    // monotonicity check, which a file of at most 64 KiB (read whole) gets even at the
    // Structure level.
    let mut b = bytes.clone();
    let third = index_start + INDEX_ENTRY_LEN * 3;
    b[third..third + 4].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let i3 = TableInfo {
        checksum: xxh3_64(&b),
        ..info
    };
    assert!(Table::open(&path, &STORE, &i3, Verification::Structure).is_err());
    assert!(Table::open(&path, &STORE, &i3, Verification::Checksum).is_err());
    assert!(verify_table(&path, &STORE, &i3).is_err());
    // Two codes swapped: only verify_table notices.
    let mut b = bytes.clone();
    let (c0, c1) = (HEADER_LEN, HEADER_LEN + CODE_LEN);
    let first: Vec<u8> = b[c0..c1].to_vec();
    b.copy_within(c1..c1 + CODE_LEN, c0);
    b[c1..c1 + CODE_LEN].copy_from_slice(&first);
    std::fs::write(&path, &b).unwrap();
    let i4 = TableInfo {
        checksum: xxh3_64(&b),
        ..info
    };
    Table::open(&path, &STORE, &i4, Verification::Checksum).unwrap();
    assert!(matches!(
        verify_table(&path, &STORE, &i4),
        Err(Error::Corrupt { .. })
    ));
}

/// Bytes per key of a hashed table of 1M keys (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn hashed_bytes_per_key_1m() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let keys = hash_keys(&mut rng, 1_000_000);
    let path = dir.path().join("h");
    let info = build(&path, TableKind::Hashed, &keys, keys.len() as u64);
    let t = Table::open(&path, &STORE, &info, Verification::Checksum).unwrap();
    let mut hits: Vec<&Vec<u8>> = keys.iter().collect();
    rand::seq::SliceRandom::shuffle(&mut hits[..], &mut rng);
    let misses = hash_keys(&mut rng, 200_000);
    let mut found = 0usize;
    let (mut hit, mut miss) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..3 {
        let start = std::time::Instant::now();
        for k in hits.iter().take(200_000) {
            found += usize::from(t.contains(k).unwrap());
        }
        hit = hit.min(start.elapsed() / 200_000);
        let start = std::time::Instant::now();
        for k in &misses {
            found += usize::from(t.contains(k).unwrap());
        }
        miss = miss.min(start.elapsed() / 200_000);
    }
    assert_eq!(found, 600_000);
    println!(
        "hashed 1M keys: {} bytes, {:.3} B/key, hit {hit:?}, miss {miss:?} (mean, random order, best of 3)",
        info.file_len,
        info.file_len as f64 / info.key_count as f64
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fst_matches_btreeset(
        keys in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 1..12), 0..200),
        probes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..50),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let info = build(&path, TableKind::Fst, &keys, keys.len() as u64);
        let t = Table::open(&path, &STORE, &info, Verification::Checksum).unwrap();
        check_table(&t, &keys, &probes);
        verify_table(&path, &STORE, &info).unwrap();
    }

    #[test]
    fn hashed_matches_btreeset(
        raw in proptest::collection::btree_set(any::<[u8; 32]>(), 0..300),
        probes in proptest::collection::vec(any::<[u8; 32]>(), 0..50),
        hint_factor in 0u64..4,
    ) {
        let keys: BTreeSet<Vec<u8>> = raw.iter().map(|x| STANDARD.encode(x).into_bytes()).collect();
        let mut probes: Vec<Vec<u8>> =
            probes.iter().map(|x| STANDARD.encode(x).into_bytes()).collect();
        // Near misses: a key with one digit changed.
        probes.extend(keys.iter().take(10).map(|k| {
            let mut k = k.clone();
            k[5] = if k[5] == b'A' { b'B' } else { b'A' };
            k
        }));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let info = build(&path, TableKind::Hashed, &keys, keys.len() as u64 * hint_factor);
        let t = Table::open(&path, &STORE, &info, Verification::Checksum).unwrap();
        check_table(&t, &keys, &probes);
        verify_table(&path, &STORE, &info).unwrap();
    }
}

#[test]
fn hashed_filter_misses_are_caught_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let keys = hash_keys(&mut rng, 64);
    let path = dir.path().join("h");
    let info = build(&path, TableKind::Hashed, &keys, 64);
    let bytes = std::fs::read(&path).unwrap();
    let index_start = HEADER_LEN + 64 * CODE_LEN;
    // Clear the filter of the first bucket that has keys: its keys now look absent.
    let mut b = bytes.clone();
    let entries = (bytes.len() - FOOTER_LEN - SMALL_SUMS_LEN - index_start) / INDEX_ENTRY_LEN;
    let bucket = (0..entries - 1)
        .find(|&i| {
            let at = index_start + i * INDEX_ENTRY_LEN + 4;
            u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) != 0
        })
        .unwrap();
    let at = index_start + bucket * INDEX_ENTRY_LEN + 4;
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let forged = TableInfo {
        checksum: xxh3_64(&b),
        ..info
    };
    let table = Table::open(&path, &STORE, &forged, Verification::Structure).unwrap();
    assert!(
        keys.iter().any(|k| !table.contains(k).unwrap()),
        "the filter decides misses"
    );
    assert!(verify_table(&path, &STORE, &forged).is_err());
}

/// Keys that are not uniformly random still hash-encode: buckets of skewed and of very many
/// codes (bisection past `INTERPOLATION_MAX`) must answer exactly like uniform ones.
#[test]
fn hashed_lookups_with_skewed_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Every key shares its first 5 bytes (one bucket for small tables), and within that the
    // keys crowd at the low end of their bucket: interpolation lands far from them.
    let skewed = |rng: &mut rand::rngs::StdRng, spread: u8| {
        let mut bytes: [u8; 32] = rng.gen();
        bytes[..5].copy_from_slice(&[0x42, 0x17, 0x00, 0x99, 0x01]);
        bytes[5] %= spread;
        STANDARD.encode(bytes).into_bytes()
    };
    for (n, spread) in [(40usize, 2u8), (300, 1), (2_000, 3), (5_000, 255)] {
        let keys: BTreeSet<Vec<u8>> = (0..n).map(|_| skewed(&mut rng, spread)).collect();
        let path = dir.path().join(format!("skewed-{n}.sstbl"));
        let info = build(&path, TableKind::Hashed, &keys, keys.len() as u64);
        let table = Table::open(&path, &STORE, &info, Verification::Checksum).unwrap();
        let mut probes: Vec<Vec<u8>> = (0..500).map(|_| skewed(&mut rng, spread)).collect();
        probes.extend((0..200).map(|_| hash_key(&mut rng)));
        // Neighbours of real keys: the same code with the last byte changed.
        for k in keys.iter().take(200) {
            let mut bytes = STANDARD.decode(k).unwrap();
            bytes[31] ^= 1;
            probes.push(STANDARD.encode(bytes).into_bytes());
        }
        check_table(&table, &keys, &probes);
    }
}

#[test]
fn kind_choice_follows_the_first_key_or_the_table() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let (hash, uuid) = (hash_key(&mut rng), uuid_key(&mut rng));
    let choose = |start: Option<TableKind>, keys: &[&[u8]]| {
        let mut choice = KindChoice::starting_with(start);
        for key in keys {
            choice.see(key);
        }
        choice.kind()
    };
    assert_eq!(choose(None, &[&hash, &hash]), TableKind::Hashed);
    assert_eq!(choose(None, &[&uuid, &uuid]), TableKind::Uuid);
    assert_eq!(choose(None, &[&uuid, &hash]), TableKind::Fst);
    assert_eq!(choose(None, &[b"user-1", &hash]), TableKind::Fst);
    assert_eq!(choose(Some(TableKind::Uuid), &[]), TableKind::Uuid);
    assert_eq!(choose(Some(TableKind::Uuid), &[&hash]), TableKind::Fst);
    assert_eq!(choose(Some(TableKind::Hashed), &[&hash]), TableKind::Hashed);
    // A list never goes back from fst to a dense kind.
    assert_eq!(choose(Some(TableKind::Fst), &[&hash]), TableKind::Fst);
    let mut choice = KindChoice::starting_with(None);
    assert!(choice.see(&hash));
    assert!(!choice.see(b"user-1"));
    assert!(!choice.see(&hash), "fst stays fst");
}

/// Random printable keys of 12..40 bytes: an fst of them is large (random keys share little).
fn random_text_keys(rng: &mut impl Rng, n: usize) -> BTreeSet<Vec<u8>> {
    (0..n)
        .map(|_| {
            let len = rng.gen_range(12..40);
            (0..len).map(|_| rng.gen_range(b'!'..=b'~')).collect()
        })
        .collect()
}

/// At the Structure level a table over 64 KiB is mapped and checked block by block on first
/// touch (an fst body whole on its first lookup). Damage anywhere in it: every lookup and
/// iteration either fails or answers as the intact table does, and when the damage lies in
/// the bytes the lookups read, they fail rather than answer.
#[test]
fn structure_lookups_never_answer_from_damaged_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for (kind, keys) in [
        // 60,000 hashes: a 2 MB table, 125 blocks (past the first word of block bits).
        (TableKind::Hashed, hash_keys(&mut rng, 60_000)),
        (TableKind::Uuid, uuid_keys(&mut rng, 20_000)),
        (TableKind::Fst, random_text_keys(&mut rng, 20_000)),
    ] {
        let path = dir.path().join(format!("{kind:?}.sstbl"));
        let info = build(&path, kind, &keys, keys.len() as u64);
        assert!(
            info.file_len > 4 * READ_MAX,
            "{kind:?}: {} bytes",
            info.file_len
        );
        let good = std::fs::read(&path).unwrap();
        // The sums cover everything before themselves; the footer says where they start.
        let footer = good.len() - FOOTER_LEN;
        let index_end = (read_u64(&good, footer + 24).unwrap()
            + read_u64(&good, footer + 32).unwrap()) as usize;
        let mut lookups: Vec<Vec<u8>> = keys.iter().cloned().collect();
        lookups.extend(probes(&mut rng));
        lookups.extend(match kind {
            TableKind::Hashed => hash_keys(&mut rng, 2_000),
            TableKind::Uuid => uuid_keys(&mut rng, 2_000),
            TableKind::Fst => random_text_keys(&mut rng, 2_000),
        });
        let intact = Table::open(&path, &STORE, &info, Verification::Structure).unwrap();
        let expected: Vec<bool> = lookups
            .iter()
            .map(|p| intact.contains(p).unwrap())
            .collect();
        assert_eq!(intact.keys().unwrap().count(), keys.len());
        drop(intact);
        for trial in 0..24 {
            // Mostly in the data and index; sometimes in the sums or the footer.
            let at = if trial % 6 == 5 {
                rng.gen_range(index_end..good.len())
            } else {
                rng.gen_range(0..index_end)
            };
            let mut bytes = good.clone();
            bytes[at] ^= 1 << rng.gen_range(0..8);
            let bad = dir.path().join(format!("{kind:?}-bad-{trial}.sstbl"));
            std::fs::write(&bad, &bytes).unwrap();
            let Ok(t) = Table::open(&bad, &STORE, &info, Verification::Structure) else {
                continue;
            };
            assert!(
                at < index_end,
                "{kind:?}: damage at {at}, past the data, opened"
            );
            let mut failed = 0;
            for (p, want) in lookups.iter().zip(&expected) {
                match t.contains(p) {
                    Ok(found) => assert_eq!(found, *want, "{kind:?}: damage at {at}, {p:?}"),
                    Err(e) => {
                        assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
                        failed += 1;
                    }
                }
            }
            assert!(failed > 0, "{kind:?}: damage at {at} went unnoticed");
            assert!(t.keys().is_err() && t.keys_from(b"0").is_err());
            assert!(verify_table(&bad, &STORE, &info).is_err());
        }
    }
}

/// A version-1 table (no block sums) still opens, and at the Structure level is checked
/// whole: a damaged body is refused at open.
#[test]
fn version_1_tables_are_checked_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let keys = hash_keys(&mut rng, 5_000);
    let path = dir.path().join("v2");
    build(&path, TableKind::Hashed, &keys, keys.len() as u64);
    // Rewrite as version 1: drop the sums, clear the block shift, recompute the meta hash.
    let v2 = std::fs::read(&path).unwrap();
    let footer = v2.len() - FOOTER_LEN;
    let index_end =
        (read_u64(&v2, footer + 24).unwrap() + read_u64(&v2, footer + 32).unwrap()) as usize;
    let mut header: [u8; HEADER_LEN] = v2[..HEADER_LEN].try_into().unwrap();
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    let mut head: [u8; FOOTER_LEN - 8] = v2[footer..footer + FOOTER_LEN - 8].try_into().unwrap();
    head[41] = 0;
    let mut v1 = header.to_vec();
    v1.extend_from_slice(&v2[HEADER_LEN..index_end]);
    v1.extend_from_slice(&head);
    v1.extend_from_slice(&meta_hash(&header, &[], &head).to_le_bytes());
    let info = TableInfo {
        kind: TableKind::Hashed,
        key_count: keys.len() as u64,
        file_len: v1.len() as u64,
        checksum: xxh3_64(&v1),
    };
    let v1_path = dir.path().join("v1");
    std::fs::write(&v1_path, &v1).unwrap();
    for v in [Verification::Checksum, Verification::Structure] {
        let t = Table::open(&v1_path, &STORE, &info, v).unwrap();
        assert!(keys.iter().all(|k| t.contains(k).unwrap()));
    }
    verify_table(&v1_path, &STORE, &info).unwrap();
    v1[HEADER_LEN + 100] ^= 4;
    std::fs::write(&v1_path, &v1).unwrap();
    assert!(matches!(
        Table::open(&v1_path, &STORE, &info, Verification::Structure),
        Err(Error::ChecksumMismatch { .. })
    ));
}

/// `push_code` writes the same table as `push` of the decoded keys, and keeps its rules.
#[test]
fn push_code_matches_push() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let keys = hash_keys(&mut rng, 3_000);
    let by_key = dir.path().join("by-key");
    let info = build(&by_key, TableKind::Hashed, &keys, keys.len() as u64);
    let source = Table::open(&by_key, &STORE, &info, Verification::Checksum).unwrap();
    let by_code = dir.path().join("by-code");
    let mut b =
        TableBuilder::create(&Io::default(), &by_code, &STORE, TableKind::Hashed, 3_000).unwrap();
    let codes: Vec<&[u8]> = source.codes().unwrap().unwrap().collect();
    assert_eq!(codes.len(), keys.len());
    for code in &codes {
        b.push_code(code).unwrap();
    }
    // Out of order, and the wrong width, are refused; the builder stays usable.
    assert!(b.push_code(codes[0]).is_err());
    assert!(b.push_code(&[0xff; 16]).is_err());
    assert_eq!(b.finish().unwrap(), info);
    assert_eq!(
        std::fs::read(&by_key).unwrap(),
        std::fs::read(&by_code).unwrap()
    );
    let mut fst = TableBuilder::create(
        &Io::default(),
        &dir.path().join("fst"),
        &STORE,
        TableKind::Fst,
        1,
    )
    .unwrap();
    assert!(fst.push_code(codes[0]).is_err());
}

#[test]
fn bucket_bits_keep_two_and_a_half_to_five_keys_a_bucket_up_to_the_cap() {
    let sizes = [
        5u64,
        6,
        9,
        10,
        1_000,
        1 << 20,
        10_000_000,
        100_000_000,
        335_544_320,
        1_000_000_000,
        1_342_177_279,
    ];
    for n in sizes {
        let bits = bucket_bits_for(n);
        let per_bucket = n as f64 / (1u64 << bits) as f64;
        assert!(
            (2.5..5.0).contains(&per_bucket),
            "{n} keys: {bits} bits, {per_bucket} keys a bucket"
        );
    }
    // 1B keys: 2^28 buckets of 3.7 keys (2^26 of 15 before the cap was raised).
    assert_eq!(bucket_bits_for(1_000_000_000), 28);
    assert_eq!(bucket_bits_for(u64::MAX), MAX_BUILD_BUCKET_BITS);
    assert_eq!(bucket_bits_for(4), 0);
}
