//! The manifest: the one file that names the store's live tables and log, switched atomically.
//!
//! Layout (see `format-spec.md`, "MANIFEST"): `magic | version u32 | reserved u32 |
//! payload_len u64 | payload | xxh3_64 u64`, the checksum covering every byte before it.

use crate::codec::{Decoder, Encoder};
use crate::entry::{
    decode_details, decode_opt_table, encode_details, encode_opt_table, Details, TableRef,
};
use crate::error::{Error, Result};
use crate::fsutil::{read_file, replace_file};
use crate::index::IndexRef;
use crate::io::Io;
use crate::key::MAX_NAME_LEN;
use std::path::Path;
use std::sync::Arc;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// The first eight bytes of a manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"SEGSMAN\0";
/// The manifest format version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_LEN: u64 = 1 << 30;

/// One segment as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Ref.
    pub segment: Arc<str>,
    /// Context kind (segments of one kind share it).
    pub kind: Arc<str>,
    /// Local details.
    pub details: Details,
    /// Included and excluded tables (index by [`crate::List::index`]).
    pub tables: [Option<TableRef>; 2],
}

/// The decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Random id shared by every file of the store.
    pub store_id: [u8; 16],
    /// Increases by one at every manifest switch.
    pub generation: u64,
    /// The first log file to replay.
    pub log_number: u64,
    /// Sequence number of that log's first record.
    pub log_first_seq: u64,
    /// Lowest file id not yet used by this manifest's tables (a hint; ids found on disk win).
    pub next_file_id: u64,
    /// Metadata as of the manifest.
    pub synchronized_on: Option<u64>,
    /// Sync cursor as of the manifest.
    pub cursor: String,
    /// Segments in ref order.
    pub segments: Vec<SegmentRecord>,
    /// The membership index over the hashed tables, if one was built.
    pub index: Option<IndexRef>,
}

impl Manifest {
    /// Encodes the whole file.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Encoder::new();
        p.raw(&self.store_id);
        p.u64(self.generation);
        p.u64(self.log_number);
        p.u64(self.log_first_seq);
        p.u64(self.next_file_id);
        p.opt_u64(self.synchronized_on);
        p.str(&self.cursor);
        p.u32(u32::try_from(self.segments.len()).unwrap_or(u32::MAX));
        for s in &self.segments {
            p.str(&s.segment);
            p.str(&s.kind);
            encode_details(&mut p, &s.details);
            for t in &s.tables {
                encode_opt_table(&mut p, t.as_ref());
            }
        }
        match &self.index {
            None => p.u8(0),
            Some(index) => {
                // 1: a keyed index, its key table first; 2: a filter index.
                match &index.keys {
                    Some(keys) => {
                        p.u8(1);
                        encode_opt_table(&mut p, Some(keys));
                    }
                    None => p.u8(2),
                }
                p.u64(index.postings_id);
                p.u64(index.entry_count);
                p.u64(index.postings_len);
                p.u64(index.postings_checksum);
            }
        }
        let payload = p.into_bytes();
        let mut e = Encoder::new();
        e.raw(&MANIFEST_MAGIC);
        e.u32(MANIFEST_VERSION);
        e.u32(0);
        e.u64(payload.len() as u64);
        e.raw(&payload);
        let mut bytes = e.into_bytes();
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        bytes
    }

    /// Decodes and checks a manifest; `path` is used in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let corrupt = |e: crate::codec::DecodeError| Error::corrupt(path, format!("manifest {e}"));
        let mut d = Decoder::new(bytes);
        let magic: [u8; 8] = d.array().map_err(corrupt)?;
        if magic != MANIFEST_MAGIC {
            return Err(Error::corrupt(path, "not a segstore manifest (bad magic)"));
        }
        let version = d.u32().map_err(corrupt)?;
        if version != MANIFEST_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: MANIFEST_VERSION,
            });
        }
        let _reserved = d.u32().map_err(corrupt)?;
        let payload_len = d.u64().map_err(corrupt)?;
        let expected_len = 24u64
            .checked_add(payload_len)
            .and_then(|n| n.checked_add(8))
            .filter(|&n| n == bytes.len() as u64)
            .ok_or_else(|| {
                Error::corrupt(
                    path,
                    format!(
                        "payload length {payload_len} does not match the file size {}",
                        bytes.len()
                    ),
                )
            })?;
        let body_end = (expected_len - 8) as usize;
        let covered = bytes.get(..body_end).unwrap_or_default();
        let stored: [u8; 8] = bytes
            .get(body_end..)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::corrupt(path, "manifest checksum missing"))?;
        let stored = u64::from_le_bytes(stored);
        let found = xxhash_rust::xxh3::xxh3_64(covered);
        if stored != found {
            return Err(Error::ChecksumMismatch {
                path: path.to_owned(),
                expected: stored,
                found,
            });
        }
        let payload = covered.get(24..).unwrap_or_default();
        let mut d = Decoder::new(payload);
        let store_id = d.array().map_err(corrupt)?;
        let generation = d.u64().map_err(corrupt)?;
        let log_number = d.u64().map_err(corrupt)?;
        let log_first_seq = d.u64().map_err(corrupt)?;
        let next_file_id = d.u64().map_err(corrupt)?;
        for (field, value) in [
            ("generation", generation),
            ("log_number", log_number),
            ("log_first_seq", log_first_seq),
            ("next_file_id", next_file_id),
        ] {
            if value >= crate::log::MAX_COUNTER {
                return Err(Error::corrupt(
                    path,
                    format!("manifest {field} {value} is not below 2^62"),
                ));
            }
        }
        let synchronized_on = d.opt_u64().map_err(corrupt)?;
        let cursor = d.str(MAX_NAME_LEN).map_err(corrupt)?.to_owned();
        let count = d.u32().map_err(corrupt)? as usize;
        let mut segments = Vec::with_capacity(count.min(d.remaining() / 16));
        for _ in 0..count {
            let segment = d.str(MAX_NAME_LEN).map_err(corrupt)?;
            // Against the record before (no copy of each ref kept aside).
            let previous = segments.last().map(|r: &SegmentRecord| &*r.segment);
            if previous.is_some_and(|p| p >= segment) {
                return Err(Error::corrupt(
                    path,
                    format!("segment {segment:?} is out of order or repeated"),
                ));
            }
            let segment = Arc::from(segment);
            let kind = d.str(MAX_NAME_LEN).map_err(corrupt)?;
            // Most segments share a kind: one string for a run of them.
            let kind = match segments.last() {
                Some(r) if &*r.kind == kind => r.kind.clone(),
                _ => Arc::from(kind),
            };
            let details = decode_details(&mut d).map_err(corrupt)?;
            let included = decode_opt_table(&mut d).map_err(corrupt)?;
            let excluded = decode_opt_table(&mut d).map_err(corrupt)?;
            segments.push(SegmentRecord {
                segment,
                kind,
                details,
                tables: [included, excluded],
            });
        }
        let index = match d.u8().map_err(corrupt)? {
            0 => None,
            presence @ (1 | 2) => {
                let keys = match presence {
                    1 => Some(decode_opt_table(&mut d).map_err(corrupt)?.ok_or_else(|| {
                        Error::corrupt(path, "keyed membership index without a key table")
                    })?),
                    _ => None,
                };
                Some(IndexRef {
                    keys,
                    postings_id: d.u64().map_err(corrupt)?,
                    entry_count: d.u64().map_err(corrupt)?,
                    postings_len: d.u64().map_err(corrupt)?,
                    postings_checksum: d.u64().map_err(corrupt)?,
                })
            }
            other => {
                return Err(Error::corrupt(
                    path,
                    format!("index presence byte {other} is not 0, 1 or 2"),
                ))
            }
        };
        d.finish().map_err(corrupt)?;
        Ok(Manifest {
            index,
            store_id,
            generation,
            log_number,
            log_first_seq,
            next_file_id,
            synchronized_on,
            cursor,
            segments,
        })
    }

    /// Reads `dir/MANIFEST`. A missing file is [`Error::NotFound`].
    pub fn load(io: &Io, dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    path: dir.to_owned(),
                })
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        if len > MAX_MANIFEST_LEN {
            return Err(Error::corrupt(
                &path,
                format!("{len} bytes, over the 1 GiB limit"),
            ));
        }
        Manifest::decode(&read_file(io, &path)?, &path)
    }

    /// Writes the manifest atomically (temp file, fsync, rename, fsync directory).
    pub fn store(&self, io: &Io, dir: &Path) -> Result<()> {
        replace_file(io, dir, MANIFEST_FILE, &self.encode())
    }

    /// Ids of every file the manifest names beside the segments' tables: the membership
    /// index's key table and postings file.
    pub fn index_files(&self) -> (Option<u64>, Option<u64>) {
        match &self.index {
            Some(i) => (i.keys.map(|k| k.file_id), Some(i.postings_id)),
            None => (None, None),
        }
    }

    /// Every segment table the manifest names (not the index's key table).
    pub fn tables(&self) -> impl Iterator<Item = &TableRef> {
        self.segments.iter().flat_map(|s| s.tables.iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{TableInfo, TableKind};

    fn sample() -> Manifest {
        Manifest {
            store_id: [3; 16],
            generation: 5,
            log_number: 2,
            log_first_seq: 77,
            next_file_id: 12,
            synchronized_on: Some(1_700_000_000_000),
            cursor: "v9".into(),
            index: None,
            segments: vec![
                SegmentRecord {
                    segment: "a.g1".into(),
                    kind: "user".into(),
                    details: Details {
                        name: Some("A".into()),
                        description: Some("desc".into()),
                        tags: vec!["t".into()],
                    },
                    tables: [
                        Some(TableRef {
                            file_id: 4,
                            offset: 0,
                            info: TableInfo {
                                kind: TableKind::Fst,
                                key_count: 10,
                                file_len: 300,
                                checksum: 1,
                            },
                        }),
                        // A table inside a pack (presence byte 2, with its offset).
                        Some(TableRef {
                            file_id: 5,
                            offset: 4096,
                            info: TableInfo {
                                kind: TableKind::Hashed,
                                key_count: 2,
                                file_len: 200,
                                checksum: 2,
                            },
                        }),
                    ],
                },
                SegmentRecord {
                    segment: "b.g1".into(),
                    kind: "org".into(),
                    details: Details::default(),
                    tables: [None, None],
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode(), Path::new("M")).unwrap(), m);
    }

    /// Segment records must be in strictly increasing ref order (M1): a repeated or
    /// out-of-order ref is rejected, checksum and all else intact. And both index kinds round
    /// trip.
    #[test]
    fn refs_out_of_order_or_repeated_are_rejected_and_both_index_kinds_round_trip() {
        for refs in [["b.g1", "a.g1"], ["a.g1", "a.g1"]] {
            let mut m = sample();
            for (record, r) in m.segments.iter_mut().zip(refs) {
                record.segment = r.into();
            }
            let err = Manifest::decode(&m.encode(), Path::new("M")).unwrap_err();
            assert!(
                err.to_string().contains("out of order or repeated"),
                "{refs:?}: {err}"
            );
        }
        let table = sample().segments[0].tables[1];
        for keys in [None, table] {
            let mut m = sample();
            m.index = Some(IndexRef {
                keys,
                postings_id: 9,
                entry_count: 3,
                postings_len: 400,
                postings_checksum: 7,
            });
            assert_eq!(Manifest::decode(&m.encode(), Path::new("M")).unwrap(), m);
        }
    }

    #[test]
    fn every_flip_and_truncation_is_an_error() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(
                Manifest::decode(&bad, Path::new("M")).is_err(),
                "flip at {i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut], Path::new("M")).is_err());
        }
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let mut bytes = sample().encode();
        bytes[8] = 2;
        assert!(matches!(
            Manifest::decode(&bytes, Path::new("M")),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }
}
