//! Fuzzing entry points: one function per target of `fuzz/`, each taking arbitrary bytes.
//!
//! The decoders of the file formats are private to the crate; these functions reach them for
//! the cargo-fuzz targets in `fuzz/fuzz_targets/` (one line each) and for
//! `tests/fuzz_corpus.rs`, which replays every corpus and crash file through the same
//! functions in a plain `cargo test`. [`TARGETS`] lists them by target name.
//!
//! Each function must return normally whatever its input. It panics only when the engine
//! breaks one of its own invariants, which is what a fuzzer should report: a decoder or a
//! lookup panicking; a decoded value that does not survive an encode/decode round trip; a
//! table that passes [`crate::table::verify_table`] but answers a lookup wrongly; a store that
//! passes [`crate::verify`] but does not open; a writer and a reader that load different states
//! from the same files; a compaction that changes the state.
//!
//! Inputs that need files (tables, whole stores) are written to a fresh temporary directory
//! (`TMPDIR`; `scripts/fuzz.sh` points it at `/dev/shm`).
//!
//! This module is not part of the public API: it may change with any release.

use crate::change::{Batch, List};
use crate::entry::{Entry, TableRef};
use crate::files::table_file_name;
use crate::index::postings_file_name;
use crate::ingest::{parse_line, partner::Tool, Format, Parsed};
use crate::key::{validate_key, validate_kind, validate_ref, MAX_NAME_LEN};
use crate::log::{
    encode_record, log_file_name, scan_records, LogHeader, Tail, LOG_HEADER_LEN, RECORD_HEADER_LEN,
    RECORD_TRAILER_LEN,
};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::table::{
    is_hash_key, is_uuid_key, verify_table, Table, TableInfo, TableKind, Verification,
};
use crate::{Options, ReadOnlyStore, Snapshot, Status, Store};
use std::collections::BTreeMap;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// A fuzz target's function.
pub type Target = fn(&[u8]);

/// Every target: its name (the file `fuzz/fuzz_targets/NAME.rs` and the corpus directory
/// `fuzz/corpus/NAME/`) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("log_records", log_records),
    ("log_framed", log_framed),
    ("manifest", manifest),
    ("table", table),
    ("table_hashed", table_hashed),
    ("store", store),
    ("ingest_updates", ingest_updates),
    ("ingest_patches", ingest_patches),
    ("ingest_partner", ingest_partner),
    #[cfg(feature = "serve")]
    ("redis_session", redis_session),
];

/// The store id used where an input does not supply one.
const FUZZ_STORE_ID: [u8; 16] = *b"segstore fuzzing";

/// Size of a table's header and footer (`format-spec.md` §5.2, §5.3).
const TABLE_HEADER_LEN: usize = 64;
const TABLE_FOOTER_LEN: usize = 64;

/// Most keys a target reads from one list or table, to bound the time of one run.
const MAX_KEYS_READ: usize = 50_000;

// ---------------------------------------------------------------------------------------------
// Logs

/// Log decoding over raw bytes: [`LogHeader::decode`] and [`scan_records`] over the input as a
/// whole log file, [`scan_records`] over it as a record area, and [`Entry::decode`] over it as
/// one record payload.
pub fn log_records(data: &[u8]) {
    let path = Path::new("fuzz.seglog");
    let first_seq = match LogHeader::decode(data, path) {
        Ok(header) => header.first_seq,
        Err(_) => 1,
    };
    let body = data.get(LOG_HEADER_LEN..).unwrap_or_default();
    check_scan(body, LOG_HEADER_LEN as u64, first_seq, path);
    check_scan(data, 0, 1, path);
    entry_round_trip(data);
}

/// The record payloads of `data` after a valid log header: the input is split into payloads
/// (each a `u16` little-endian length and that many bytes; a short last one takes what is
/// left), each framed as a record with the right sequence number and checksums, so every input
/// reaches entry decoding. Also checks that cutting the framed log short is a torn tail.
pub fn log_framed(data: &[u8]) {
    let path = Path::new("fuzz.seglog");
    let header = LogHeader {
        store_id: FUZZ_STORE_ID,
        number: 1,
        first_seq: 1,
    };
    let mut file = header.encode();
    let payloads = split_chunks(data, usize::MAX);
    let mut boundaries = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let Ok(record) = encode_record(1 + i as u64, payload) else {
            return;
        };
        file.extend_from_slice(&record);
        boundaries.push(file.len());
    }
    assert_eq!(LogHeader::decode(&file, path).ok(), Some(header));
    let body = file.get(LOG_HEADER_LEN..).unwrap_or_default();
    let scan = check_scan(body, LOG_HEADER_LEN as u64, 1, path);
    // Expected: every payload up to the first that is not an entry, or up to a Rotate (which
    // must be the last record).
    let mut expect_ok = true;
    let mut entries = 0;
    for (i, payload) in payloads.iter().enumerate() {
        match entry_round_trip(payload) {
            Some(Entry::Rotate { .. }) if i + 1 < payloads.len() => {
                expect_ok = false;
                break;
            }
            Some(_) => entries += 1,
            None => {
                expect_ok = false;
                break;
            }
        }
    }
    if expect_ok {
        let Some(scan) = scan else {
            panic!("a log of {entries} well-framed entries did not scan");
        };
        assert_eq!(scan.records.len(), entries);
        assert_eq!(scan.tail, Tail::Clean);
        // Cut inside the last record: the other records, and a torn tail where it starts.
        if let Some(&end) = boundaries.last() {
            let start = boundaries
                .len()
                .checked_sub(2)
                .and_then(|i| boundaries.get(i).copied())
                .unwrap_or(LOG_HEADER_LEN);
            let cut = file.get(LOG_HEADER_LEN..end - 1).unwrap_or_default();
            let torn = scan_records(cut, LOG_HEADER_LEN as u64, 1, path);
            match torn {
                Ok(t) => {
                    assert_eq!(t.records.len(), entries - 1);
                    assert_eq!(
                        t.tail,
                        Tail::Torn {
                            offset: start as u64
                        }
                    );
                }
                Err(e) => panic!("a log cut inside its last record is not a torn tail: {e}"),
            }
        }
    }
}

/// Scans and checks what a successful scan promises.
fn check_scan(body: &[u8], start: u64, next_seq: u64, path: &Path) -> Option<crate::log::Scan> {
    let scan = scan_records(body, start, next_seq, path).ok()?;
    let end = start + body.len() as u64;
    assert!(scan.valid_end >= start && scan.valid_end <= end);
    match scan.tail {
        Tail::Clean => assert_eq!(scan.valid_end, end),
        Tail::Torn { offset } | Tail::Damaged { offset, .. } => {
            assert_eq!(offset, scan.valid_end)
        }
    }
    let mut seq = next_seq;
    let mut framed = 0u64;
    for (i, (s, entry)) in scan.records.iter().enumerate() {
        assert_eq!(*s, seq, "records out of sequence");
        seq = seq.wrapping_add(1);
        let payload = entry.encode();
        framed += (RECORD_HEADER_LEN + payload.len() + RECORD_TRAILER_LEN) as u64;
        if matches!(entry, Entry::Rotate { .. }) {
            assert_eq!(i + 1, scan.records.len(), "a record after a rotate");
        }
    }
    assert_eq!(scan.next_seq, seq);
    assert_eq!(
        start + framed,
        scan.valid_end,
        "records re-encode to other sizes"
    );
    Some(scan)
}

/// Decodes an entry; a decoded entry must encode to bytes that decode to itself.
fn entry_round_trip(bytes: &[u8]) -> Option<Entry> {
    let entry = Entry::decode(bytes).ok()?;
    let again = Entry::decode(&entry.encode());
    assert_eq!(again.as_ref().ok(), Some(&entry), "entry round trip");
    Some(entry)
}

// ---------------------------------------------------------------------------------------------
// Manifest

/// [`Manifest::decode`] over the input as a whole file, then over the input as the payload of
/// a correctly framed and checksummed manifest (so that every input reaches payload decoding).
/// A decoded manifest must survive an encode/decode round trip.
pub fn manifest(data: &[u8]) {
    manifest_round_trip(data);
    manifest_round_trip(&frame_manifest(data));
}

fn manifest_round_trip(bytes: &[u8]) -> Option<Manifest> {
    let path = Path::new(MANIFEST_FILE);
    let manifest = Manifest::decode(bytes, path).ok()?;
    let again = Manifest::decode(&manifest.encode(), path);
    assert_eq!(again.as_ref().ok(), Some(&manifest), "manifest round trip");
    Some(manifest)
}

/// A manifest file around `payload`: header, length and xxh3 as the format says.
fn frame_manifest(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 32);
    bytes.extend_from_slice(b"SEGSMAN\0");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    let sum = xxh3_64(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

// ---------------------------------------------------------------------------------------------
// Tables

/// A whole table file behind the checksum the manifest would record: the input is an 8-byte
/// little-endian xxh3-64 followed by the file. The kind and key count are taken from the
/// file's own header and footer, so only the checksum guards it, as in a store. Opened with
/// [`Verification::Checksum`] (both kinds), and also with [`Verification::Structure`] for the
/// hashed kind, which promises no panic whatever the bytes; then lookups and iteration.
pub fn table(data: &[u8]) {
    let Some((sum, file)) = data.split_first_chunk::<8>() else {
        return;
    };
    let kind = file
        .get(12)
        .and_then(|&tag| TableKind::from_u8(tag))
        .unwrap_or(TableKind::Fst);
    let key_count = file
        .len()
        .checked_sub(TABLE_FOOTER_LEN)
        .and_then(|at| file.get(at..at + 8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let info = TableInfo {
        kind,
        key_count,
        file_len: file.len() as u64,
        checksum: u64::from_le_bytes(*sum),
    };
    let store_id = file
        .get(16..32)
        .and_then(|b| b.try_into().ok())
        .unwrap_or(FUZZ_STORE_ID);
    exercise_table_file(file, &store_id, &info);
}

/// The body of a hashed table inside a valid header and footer whose whole-file checksum
/// matches, so that every input reaches the code area and the bucket index. Input: one byte
/// (high bit: a uuid table with 16-byte codes, else a hashed one with 32-byte codes; bucket
/// bits = the byte mod 6), then the codes and the index (`2^bits + 1` entries of a
/// little-endian `u32` start and `u32` filter); the index is the last `8 (2^bits + 1)` bytes
/// (zero-padded if short) and the codes are the whole code-sized units before it.
pub fn table_hashed(data: &[u8]) {
    let Some((&bits, rest)) = data.split_first() else {
        return;
    };
    // The high bit picks the scheme: LD hashes (32-byte codes) or UUIDs (16-byte codes).
    let (kind, width) = if bits & 0x80 == 0 {
        (TableKind::Hashed, 32)
    } else {
        (TableKind::Uuid, 16)
    };
    let bits = u32::from(bits % 6);
    let index_len = ((1usize << bits) + 1) * 8;
    let codes_len = rest.len().saturating_sub(index_len) / width * width;
    let codes = rest.get(..codes_len).unwrap_or_default();
    let mut index = rest.get(codes_len..).unwrap_or_default().to_vec();
    index.resize(index_len, 0);
    let file = hashed_table_file(&FUZZ_STORE_ID, kind, bits, codes, &index);
    let info = TableInfo {
        kind,
        key_count: (codes_len / width) as u64,
        file_len: file.len() as u64,
        checksum: xxh3_64(&file),
    };
    exercise_table_file(&file, &FUZZ_STORE_ID, &info);
}

/// A dense table file (hashed or uuid) as `format-spec.md` §5 lays it out.
fn hashed_table_file(
    store_id: &[u8; 16],
    kind: TableKind,
    bits: u32,
    codes: &[u8],
    index: &[u8],
) -> Vec<u8> {
    let width = if kind == TableKind::Uuid { 16 } else { 32 };
    let mut header = [0u8; TABLE_HEADER_LEN];
    header[0..8].copy_from_slice(&crate::table::TABLE_MAGIC);
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[12] = kind.as_u8();
    header[16..32].copy_from_slice(store_id);
    let data_off = TABLE_HEADER_LEN as u64;
    let index_off = data_off + codes.len() as u64;
    let mut head = [0u8; TABLE_FOOTER_LEN - 8];
    head[0..8].copy_from_slice(&((codes.len() / width) as u64).to_le_bytes());
    head[8..16].copy_from_slice(&data_off.to_le_bytes());
    head[16..24].copy_from_slice(&(codes.len() as u64).to_le_bytes());
    head[24..32].copy_from_slice(&index_off.to_le_bytes());
    head[32..40].copy_from_slice(&(index.len() as u64).to_le_bytes());
    head[40] = bits as u8;
    head[48..56].copy_from_slice(b"SEGSTEND");
    let mut meta = Vec::with_capacity(TABLE_HEADER_LEN + head.len());
    meta.extend_from_slice(&header);
    meta.extend_from_slice(&head);
    let mut file = Vec::with_capacity(meta.len() + codes.len() + index.len() + 8);
    file.extend_from_slice(&header);
    file.extend_from_slice(codes);
    file.extend_from_slice(index);
    file.extend_from_slice(&head);
    file.extend_from_slice(&xxh3_64(&meta).to_le_bytes());
    file
}

fn exercise_table_file(file: &[u8], store_id: &[u8; 16], info: &TableInfo) {
    let Some(dir) = scratch_dir() else { return };
    let path = dir.path().join(table_file_name(1));
    if std::fs::write(&path, file).is_err() {
        return;
    }
    if let Ok(table) = Table::open(&path, store_id, info, Verification::Checksum) {
        let sound = verify_table(&path, store_id, info).is_ok();
        exercise_table(&table, file, sound);
    }
    // Structure opens check blocks on first touch (fst bodies whole): lookups may fail, but
    // never panic.
    if let Ok(table) = Table::open(&path, store_id, info, Verification::Structure) {
        exercise_table(&table, file, false);
    }
}

/// Lookups and iteration. When `sound` (the table passed `verify_table`), the answers must
/// agree: keys come in strictly increasing order, as many as the table holds, each found by
/// `contains` and by `keys_from` at itself.
fn exercise_table(table: &Table, input: &[u8], sound: bool) {
    let mut keys = Vec::new();
    let Ok(all) = table.keys() else {
        assert!(!sound, "keys() of a sound table failed");
        return;
    };
    for key in all.take(MAX_KEYS_READ) {
        keys.push(key);
    }
    let mut probes: Vec<Vec<u8>> = vec![Vec::new(), b"a".to_vec(), vec![0xff; 44]];
    probes.extend(input.chunks(44).take(8).map(<[u8]>::to_vec));
    probes.extend(keys.iter().take(64).cloned());
    for probe in &probes {
        let (Ok(found), Ok(from)) = (table.contains(probe), table.keys_from(probe)) else {
            assert!(!sound, "a lookup in a sound table failed");
            continue;
        };
        let from: Vec<Vec<u8>> = from.take(3).collect();
        if sound {
            assert_eq!(
                found,
                keys.binary_search(probe).is_ok(),
                "contains({probe:?})"
            );
            if found {
                assert_eq!(from.first(), Some(probe), "keys_from at a key");
            }
            for key in &from {
                assert!(key >= probe, "keys_from yields a smaller key");
            }
        }
    }
    if sound {
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
        if keys.len() < MAX_KEYS_READ {
            assert_eq!(keys.len() as u64, table.len(), "key count");
        }
        if table.kind() == TableKind::Hashed {
            assert!(keys.iter().all(|k| is_hash_key(k)), "hashed table key");
        }
        if table.kind() == TableKind::Uuid {
            assert!(keys.iter().all(|k| is_uuid_key(k)), "uuid table key");
        }
    }
}

fn scratch_dir() -> Option<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("segstore-fuzz-")
        .tempdir()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Whole stores

/// Bit 0 of a store image's first byte: the image is in repair form (see [`store`]).
pub const IMAGE_REPAIR: u8 = 1;
/// Most table files in a store image.
const IMAGE_MAX_TABLES: usize = 6;
/// The chunk of a store image that holds the postings file.
const IMAGE_POSTINGS: usize = 3;
/// The chunk of a store image that holds the first table file.
const IMAGE_FIRST_TABLE: usize = 4;

/// A whole store directory built from the input, then opened every way: [`crate::verify`],
/// [`ReadOnlyStore::open`], [`Store::open`], lookups and exports of every segment, a compaction
/// and a write, and a reopen.
///
/// The input is a *store image*: a flags byte, then chunks, each a `u16` little-endian length
/// and that many bytes (a short last chunk takes what is left). Chunk 0 is `MANIFEST`, chunk 1
/// the first log of the chain, chunk 2 the log after it, chunk 3 the membership index's
/// postings file, chunks 4 to 9 table files. Files are named from what the chunks hold: the
/// logs by the manifest's log number, the postings file by the manifest's index, the tables by
/// the file ids the manifest's segments, its index and then the log name, in order of first
/// mention (extra tables get fresh ids: orphans).
///
/// With [`IMAGE_REPAIR`] set, the chunks are not taken as they are: chunk 0 is the manifest
/// *payload* (framed and checksummed here), each log chunk is a list of entry payloads
/// (`u16` length each) framed here behind a header that matches the manifest, each table
/// reference to a hashed table gets the true length and checksum of its chunk, and the index
/// reference those of the postings chunk (whose own trailing checksum is made to match). So mutations reach the state, the hashed tables and
/// the postings past every checksum. Fst tables keep the checksum the manifest states: an fst
/// body is guarded by it (see [`Verification::Structure`]). Repair also keeps the generation,
/// log numbers, sequence numbers and file ids below 2^40.
///
/// Invariants checked: a store `verify` finds sound opens both ways; writer and reader load
/// the same state; a compaction keeps the state; a sound store stays sound through open,
/// compaction, a write and a reopen, which finds the writer's last state.
pub fn store(data: &[u8]) {
    let Some(dir) = scratch_dir() else { return };
    let Ok(index_forged) = write_store_image(data, dir.path()) else {
        return;
    };
    exercise_store(dir.path(), !index_forged);
}

/// Keeps a generation, log number, sequence number or file id of a repaired image below 2^40.
///
/// The engine does not yet reject such numbers near `u64::MAX`, and overflows on them: raw-form
/// inputs in `fuzz/artifacts/store/` reproduce that. Repair keeps them small so that the
/// fuzzer explores past it.
fn tame(n: u64) -> u64 {
    n % (1 << 40)
}

/// An entry payload of a repaired log, with the file id of a `ReplaceList` tamed.
fn tame_entry(payload: &[u8]) -> Vec<u8> {
    match Entry::decode(payload) {
        Ok(Entry::ReplaceList {
            segment,
            kind,
            list,
            table: Some(mut t),
        }) => {
            t.file_id = tame(t.file_id);
            Entry::ReplaceList {
                segment,
                kind,
                list,
                table: Some(t),
            }
            .encode()
        }
        _ => payload.to_vec(),
    }
}

/// Writes the files of a store image (see [`store`]) into `dir`. Returns whether the checksums
/// of a membership index were made to match (repair form with an index): the index is then
/// whatever the input says, and no check short of rebuilding it can tell that it does not
/// index the tables it names.
pub fn write_store_image(data: &[u8], dir: &Path) -> std::io::Result<bool> {
    let Some((&flags, rest)) = data.split_first() else {
        return Ok(false);
    };
    let repair = flags & IMAGE_REPAIR != 0;
    let chunks = split_chunks(rest, IMAGE_FIRST_TABLE + IMAGE_MAX_TABLES);
    let chunk = |i: usize| chunks.get(i).copied();
    let path = Path::new(MANIFEST_FILE);

    let mut manifest_bytes = chunk(0).map(<[u8]>::to_vec);
    if repair {
        manifest_bytes = manifest_bytes.map(|payload| frame_manifest(&payload));
    }
    let mut manifest = manifest_bytes
        .as_deref()
        .and_then(|b| Manifest::decode(b, path).ok());
    if repair {
        if let Some(m) = manifest.as_mut() {
            m.generation = tame(m.generation);
            m.log_number = tame(m.log_number);
            m.log_first_seq = tame(m.log_first_seq);
            m.next_file_id = tame(m.next_file_id);
            for s in &mut m.segments {
                for t in s.tables.iter_mut().flatten() {
                    t.file_id = tame(t.file_id);
                }
            }
            if let Some(index) = m.index.as_mut() {
                if let Some(keys) = index.keys.as_mut() {
                    keys.file_id = tame(keys.file_id);
                }
                index.postings_id = tame(index.postings_id);
            }
        }
    }
    let store_id = manifest.as_ref().map_or(FUZZ_STORE_ID, |m| m.store_id);
    let log_number = manifest.as_ref().map_or(1, |m| m.log_number);
    let first_seq = manifest.as_ref().map_or(1, |m| m.log_first_seq);

    // Entries of the logs (repair form: payloads; raw form: what scans).
    let mut logs: Vec<Vec<Vec<u8>>> = Vec::new();
    for i in [1, 2] {
        let Some(bytes) = chunk(i).filter(|b| i == 1 || !b.is_empty()) else {
            break;
        };
        if repair {
            logs.push(
                split_chunks(bytes, usize::MAX)
                    .into_iter()
                    .map(tame_entry)
                    .collect(),
            );
        } else {
            let body = bytes.get(LOG_HEADER_LEN..).unwrap_or_default();
            let start = LogHeader::decode(bytes, path).map_or(1, |h| h.first_seq);
            let scan = scan_records(body, LOG_HEADER_LEN as u64, start, path);
            logs.push(
                scan.map(|s| s.records.iter().map(|(_, e)| e.encode()).collect())
                    .unwrap_or_default(),
            );
        }
    }

    // Table ids in order of first mention; table chunks are assigned in that order.
    let mut ids: Vec<u64> = Vec::new();
    let mention = |ids: &mut Vec<u64>, t: &TableRef| {
        if !ids.contains(&t.file_id) {
            ids.push(t.file_id);
        }
    };
    if let Some(m) = &manifest {
        for t in m.tables() {
            mention(&mut ids, t);
        }
        if let Some(keys) = m.index.as_ref().and_then(|i| i.keys.as_ref()) {
            mention(&mut ids, keys);
        }
    }
    for log in &logs {
        for payload in log {
            if let Ok(Entry::ReplaceList { table: Some(t), .. }) = Entry::decode(payload) {
                mention(&mut ids, &t);
            }
        }
    }
    let tables: Vec<&[u8]> = (IMAGE_FIRST_TABLE..IMAGE_FIRST_TABLE + IMAGE_MAX_TABLES)
        .filter_map(chunk)
        .collect();
    let mut next_free = ids.iter().copied().max().unwrap_or(0).saturating_add(1);
    while ids.len() < tables.len() {
        ids.push(next_free);
        next_free = next_free.saturating_add(1);
    }
    let file_of = |id: u64| {
        ids.iter()
            .position(|&i| i == id)
            .and_then(|i| tables.get(i))
    };
    // The postings file; in repair form its trailing xxh3 is made to match its body.
    let postings: Option<Vec<u8>> = chunk(IMAGE_POSTINGS).filter(|c| !c.is_empty()).map(|c| {
        let mut file = c.to_vec();
        if repair {
            if let Some((body, sum)) = file.split_last_chunk_mut::<8>() {
                *sum = xxh3_64(body).to_le_bytes();
            }
        }
        file
    });
    let repaired = |t: &mut TableRef| {
        if let Some(file) = file_of(t.file_id) {
            let dense = [TableKind::Hashed.as_u8(), TableKind::Uuid.as_u8()];
            if file.get(12).is_some_and(|k| dense.contains(k)) {
                t.info.file_len = file.len() as u64;
                t.info.checksum = xxh3_64(file);
            }
        }
    };

    if repair {
        if let Some(m) = manifest.as_mut() {
            for s in &mut m.segments {
                for t in s.tables.iter_mut().flatten() {
                    repaired(t);
                }
            }
            if let Some(index) = m.index.as_mut() {
                if let Some(keys) = index.keys.as_mut() {
                    repaired(keys);
                }
                if let Some(file) = &postings {
                    index.postings_len = file.len() as u64;
                    if let Some((body, _)) = file.split_last_chunk::<8>() {
                        index.postings_checksum = xxh3_64(body);
                    }
                }
            }
            manifest_bytes = Some(m.encode());
        }
    }
    if let Some(bytes) = &manifest_bytes {
        std::fs::write(dir.join(MANIFEST_FILE), bytes)?;
    }
    if let Some(postings) = &postings {
        let id = manifest
            .as_ref()
            .and_then(|m| m.index.as_ref())
            .map_or(1, |i| i.postings_id);
        std::fs::write(dir.join(postings_file_name(id)), postings)?;
    }

    let mut seq = first_seq;
    for (i, log) in logs.iter().enumerate() {
        let number = log_number.saturating_add(i as u64);
        let bytes = if repair {
            let header = LogHeader {
                store_id,
                number,
                first_seq: seq,
            };
            let mut file = header.encode();
            for payload in log {
                let mut payload = payload.clone();
                if let Ok(mut entry) = Entry::decode(&payload) {
                    if let Entry::ReplaceList { table: Some(t), .. } = &mut entry {
                        repaired(t);
                        payload = entry.encode();
                    }
                }
                let Ok(record) = encode_record(seq, &payload) else {
                    break;
                };
                file.extend_from_slice(&record);
                match seq.checked_add(1) {
                    Some(next) => seq = next,
                    None => break,
                }
            }
            file
        } else {
            chunk(1 + i).unwrap_or_default().to_vec()
        };
        std::fs::write(dir.join(log_file_name(number)), bytes)?;
    }
    for (id, file) in ids.iter().zip(&tables) {
        std::fs::write(dir.join(table_file_name(*id)), file)?;
    }
    Ok(repair && manifest.is_some_and(|m| m.index.is_some()))
}

/// The store image of the store in `dir` (see [`store`]), in raw or repair form: the input
/// that makes [`store`] rebuild the same files. For seeding the corpus.
pub fn store_image_of(dir: &Path, repair: bool) -> crate::Result<Vec<u8>> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| crate::Error::io(p, e));
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_bytes = read(&manifest_path)?;
    let manifest = Manifest::decode(&manifest_bytes, &manifest_path)?;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    chunks.push(if repair {
        manifest_bytes
            .get(24..manifest_bytes.len().saturating_sub(8))
            .unwrap_or_default()
            .to_vec()
    } else {
        manifest_bytes
    });
    // Each file once, in order of first mention, as the reader assigns them (the tables of a
    // pack share one file).
    let mut ids: Vec<u64> = Vec::new();
    for t in manifest.tables() {
        if !ids.contains(&t.file_id) {
            ids.push(t.file_id);
        }
    }
    if let Some(keys) = manifest.index.as_ref().and_then(|i| i.keys.as_ref()) {
        if !ids.contains(&keys.file_id) {
            ids.push(keys.file_id);
        }
    }
    let mut seq = manifest.log_first_seq;
    for i in 0..2u64 {
        let path = manifest
            .log_number
            .checked_add(i)
            .map(|n| dir.join(log_file_name(n)));
        let Some(Ok(bytes)) = path.as_ref().map(std::fs::read) else {
            chunks.push(Vec::new());
            continue;
        };
        let path = path.unwrap_or_default();
        let body = bytes.get(LOG_HEADER_LEN..).unwrap_or_default();
        let scan = scan_records(body, LOG_HEADER_LEN as u64, seq, &path)?;
        seq = scan.next_seq;
        let mut payloads = Vec::new();
        for (_, entry) in &scan.records {
            if let Entry::ReplaceList { table: Some(t), .. } = entry {
                if !ids.contains(&t.file_id) {
                    ids.push(t.file_id);
                }
            }
            let payload = entry.encode();
            payloads.extend_from_slice(&chunk_len(payload.len())?);
            payloads.extend_from_slice(&payload);
        }
        chunks.push(if repair { payloads } else { bytes });
    }
    chunks.push(match &manifest.index {
        Some(index) => read(&dir.join(postings_file_name(index.postings_id)))?,
        None => Vec::new(),
    });
    for id in ids.iter().take(IMAGE_MAX_TABLES) {
        chunks.push(read(&dir.join(table_file_name(*id)))?);
    }
    let mut image = vec![if repair { IMAGE_REPAIR } else { 0 }];
    for chunk in &chunks {
        image.extend_from_slice(&chunk_len(chunk.len())?);
        image.extend_from_slice(chunk);
    }
    Ok(image)
}

fn chunk_len(len: usize) -> crate::Result<[u8; 2]> {
    u16::try_from(len)
        .map(u16::to_le_bytes)
        .map_err(|_| crate::Error::InvalidArgument {
            what: "store image",
            detail: format!("a {len}-byte file does not fit a chunk"),
        })
}

fn fuzz_options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        sort_memory_budget: 1 << 20,
        ..Options::default()
    }
}

/// What a snapshot holds, as far as the target reads it.
type State = (
    BTreeMap<String, (String, crate::Details, Vec<Vec<u8>>, Vec<Vec<u8>>)>,
    Option<u64>,
    String,
);

/// How far a store's answers can be trusted to agree with each other.
#[derive(Clone, Copy)]
struct Trust {
    /// The store passed `verify`: every query must agree (a store that did not may give wrong
    /// answers, only never a panic).
    sound: bool,
    /// The membership index is the one the engine built (its checksums were not forged), so
    /// `membership` must agree with `check`.
    index: bool,
}

/// Reads a snapshot through every query, checking what `trust` promises.
fn read_state(snap: &Snapshot, trust: Trust) -> State {
    let mut segments = BTreeMap::new();
    for info in snap.segments().into_iter().take(64) {
        let export = |list| -> Vec<Vec<u8>> {
            snap.export(&info.segment, list)
                .map(|keys| keys.take(MAX_KEYS_READ).collect())
                .unwrap_or_default()
        };
        let included = export(List::Included);
        let excluded = export(List::Excluded);
        for key in included.iter().chain(&excluded).take(64) {
            let _ = snap.check(&info.segment, key);
            let _ = snap.membership(key);
        }
        assert!(matches!(
            snap.check(&info.segment, b""),
            Ok(Status::Unknown) | Err(_)
        ));
        segments.insert(
            info.segment.clone(),
            (info.kind.clone(), info.details.clone(), included, excluded),
        );
        if !trust.sound {
            continue;
        }
        let Some((_, _, included, excluded)) = segments.get(&info.segment) else {
            continue;
        };
        assert!(included.windows(2).all(|w| w[0] < w[1]), "export order");
        assert!(excluded.windows(2).all(|w| w[0] < w[1]), "export order");
        for key in included.iter().take(64) {
            assert_eq!(snap.check(&info.segment, key).ok(), Some(Status::Included));
            if trust.index {
                let membership = snap.membership(key).ok();
                assert_eq!(membership.and_then(|m| m.get(&info.segment)), Some(true));
            }
        }
        for key in excluded.iter().take(64) {
            if included.binary_search(key).is_err() {
                assert_eq!(snap.check(&info.segment, key).ok(), Some(Status::Excluded));
            }
        }
        if included.len() < MAX_KEYS_READ {
            assert_eq!(info.included, included.len() as u64, "included count");
        }
        if excluded.len() < MAX_KEYS_READ {
            assert_eq!(info.excluded, excluded.len() as u64, "excluded count");
        }
    }
    let meta = snap.metadata();
    (segments, meta.synchronized_on, meta.cursor)
}

fn is_sound(dir: &Path) -> bool {
    matches!(crate::verify(dir), Ok(problems) if problems.is_empty())
}

fn exercise_store(dir: &Path, index_trusted: bool) {
    let sound = is_sound(dir);
    let trust = Trust {
        sound,
        index: index_trusted,
    };
    let reader_state = match ReadOnlyStore::open(dir, fuzz_options()) {
        Ok(reader) => {
            let state = read_state(&reader.snapshot(), trust);
            let _ = reader.refresh();
            Some(state)
        }
        Err(e) => {
            assert!(
                !sound,
                "verify found no problem, ReadOnlyStore::open failed: {e}"
            );
            None
        }
    };
    let writer = match Store::open(dir, fuzz_options()) {
        Ok(writer) => writer,
        Err(e) => {
            assert!(!sound, "verify found no problem, Store::open failed: {e}");
            return;
        }
    };
    let opened = read_state(&writer.snapshot(), trust);
    if let Some(reader_state) = &reader_state {
        assert_eq!(
            &opened, reader_state,
            "writer and reader load different states"
        );
    }
    let compacted = writer.compact().is_ok();
    if compacted && sound {
        let after = read_state(&writer.snapshot(), trust);
        assert_eq!(after, opened, "compaction changed the state");
    }
    let wrote = writer
        .write(
            Batch::new()
                .add("fuzz.g1", List::Included, "k")
                .with_cursor(opened.2.clone(), "fuzzed"),
        )
        .is_ok();
    if sound {
        assert!(
            compacted && wrote,
            "a sound store refused a compaction or a write"
        );
    }
    let last = read_state(&writer.snapshot(), trust);
    drop(writer);
    if sound {
        assert!(
            is_sound(dir),
            "a sound store is not sound after compaction and a write"
        );
    }
    if compacted || wrote {
        match ReadOnlyStore::open(dir, fuzz_options()) {
            Ok(reader) => assert_eq!(read_state(&reader.snapshot(), trust), last, "reopen"),
            Err(e) => assert!(!sound, "reopen after the writer closed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// apply's input parsers

/// [`parse_line`] with [`Format::Updates`], raw and hashed keys.
pub fn ingest_updates(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    check_parsed(&Format::Updates, line, false);
    check_parsed(&Format::Updates, line, true);
}

/// [`parse_line`] with [`Format::Patches`], then the patches through
/// [`crate::sync::event_batches`] as `apply` and the sync daemon use them.
pub fn ingest_patches(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    check_parsed(&Format::Patches, line, false);
}

/// [`parse_line`] with a partner format: the first byte picks the tool (mod 8, in
/// [`Tool::ALL`] order), the rest is the line; raw and hashed keys.
pub fn ingest_partner(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(line) = std::str::from_utf8(rest) else {
        return;
    };
    let Some(&tool) = Tool::ALL.get(usize::from(pick) % Tool::ALL.len()) else {
        return;
    };
    check_parsed(&Format::Partner(tool), line, false);
    check_parsed(&Format::Partner(tool), line, true);
}

/// Everything a successful parse promises: valid refs, kinds and keys (hashes when hashing).
fn check_parsed(format: &Format, line: &str, hash_keys: bool) {
    let Ok(parsed) = parse_line(format, line, hash_keys) else {
        return;
    };
    let check_keys = |keys: &crate::Keys, hashed: bool| {
        for key in keys {
            assert!(validate_key(key).is_ok(), "parsed an invalid key");
            if hashed {
                assert!(is_hash_key(key), "a hashed key that is not a hash");
            }
        }
    };
    match parsed {
        Parsed::Changes(changes) => {
            for change in &changes {
                assert!(
                    validate_ref(&change.segment).is_ok(),
                    "parsed an invalid ref"
                );
                if let Some(kind) = &change.kind {
                    assert!(validate_kind(kind).is_ok(), "parsed an invalid kind");
                }
                for list in List::BOTH {
                    check_keys(&change.list(list).add, hash_keys);
                    check_keys(&change.list(list).remove, hash_keys);
                }
            }
        }
        Parsed::Patches(patches) => {
            let ops: usize = patches.iter().map(|p| p.change.op_count()).sum();
            for patch in &patches {
                assert!(validate_ref(&patch.change.segment).is_ok(), "invalid ref");
                assert!(patch.version.len() <= MAX_NAME_LEN);
                assert!(patch.previous_version.len() <= MAX_NAME_LEN);
                for list in List::BOTH {
                    check_keys(&patch.change.list(list).add, false);
                    check_keys(&patch.change.list(list).remove, false);
                }
            }
            for max_ops in [usize::MAX, 2] {
                if let Ok(batches) = crate::sync::event_batches(patches.clone(), max_ops, Some(1)) {
                    let batched: usize = batches.iter().map(Batch::op_count).sum();
                    assert_eq!(batched, ops, "event_batches lost or added operations");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared

/// Splits `data` into at most `max` chunks of a `u16` little-endian length and that many bytes;
/// a short last chunk takes what is left. A lone trailing byte is ignored.
fn split_chunks(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = data;
    while chunks.len() < max {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

// ---------------------------------------------------------------------------------------------
// The Redis endpoint

/// One client connection's bytes through the Redis endpoint (request decoder, sessions,
/// transactions, writes) over a fresh store: the server must answer or close without
/// panicking, and the store must verify clean afterwards, with a reader loading what the
/// writer holds.
#[cfg(feature = "serve")]
pub fn redis_session(data: &[u8]) {
    use crate::serve::redis::{RedisConfig, RedisEndpoint, RequestLimits};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let options = Options {
        auto_compact: false,
        ..Options::default()
    };
    let store = match Store::create(dir.path(), options.clone()) {
        Ok(store) => Arc::new(store),
        Err(_) => return,
    };
    let config = RedisConfig {
        request_limits: RequestLimits {
            max_bulk_len: 64 << 10,
            max_args: 4096,
            max_inline_len: 64 << 10,
        },
        max_transaction_bytes: 1 << 20,
        ..RedisConfig::default()
    };
    let endpoint = RedisEndpoint::new(store.clone(), config);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let served = runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(async move { endpoint.serve_stream(server, stopped).await });
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let send = async {
            let _ = to_server.write_all(data).await;
            let _ = to_server.shutdown().await;
        };
        let receive = async {
            let mut replies = Vec::new();
            let _ = from_server.read_to_end(&mut replies).await;
        };
        tokio::join!(send, receive);
        serving.await
    });
    if let Err(e) = served {
        panic!("the connection's task failed: {e}");
    }
    let written = store.snapshot();
    drop(store);
    let problems = crate::verify(dir.path()).unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(problems.is_empty(), "verify after a session: {problems:?}");
    let reader = ReadOnlyStore::open(dir.path(), options)
        .unwrap_or_else(|e| panic!("a reader cannot open the store: {e}"));
    let read = reader.snapshot();
    assert_eq!(
        read.segments(),
        written.segments(),
        "the reader and the writer disagree"
    );
    assert_eq!(read.metadata(), written.metadata());
}
