//! The delta log: an append-only file of checksummed records, one atomic write each.
//!
//! Layout (see `format-spec.md`, "Log files"): a 56-byte header, then records of
//! `len u32 | seq u64 | header_crc u32 | payload (len bytes) | payload_crc u32`.

use crate::codec::{Decoder, Encoder, Gathered};
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::io::Io;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The first eight bytes of every log file.
pub const LOG_MAGIC: [u8; 8] = *b"SEGSLOG\0";
/// The log format version this build writes and reads.
pub const LOG_VERSION: u32 = 1;
/// Size of the log file header.
pub const LOG_HEADER_LEN: usize = 56;
/// Size of a record's header (`len`, `seq`, `header_crc`).
pub const RECORD_HEADER_LEN: usize = 16;
/// Size of a record's trailer (`payload_crc`).
pub const RECORD_TRAILER_LEN: usize = 4;
/// Generations, log numbers, sequence numbers and file ids are below this (2^62): a file
/// holding a larger one is corrupt, so incrementing them never overflows.
pub const MAX_COUNTER: u64 = 1 << 62;
/// The largest record payload, in bytes. A batch that encodes larger is refused.
pub const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// The file name of log number `number`.
pub fn log_file_name(number: u64) -> String {
    crate::files::numbered_name("log-", number, ".seglog")
}

/// Parses a log file name back to its number.
pub fn parse_log_file_name(name: &str) -> Option<u64> {
    crate::files::parse_numbered_name(name, "log-", ".seglog")
}

/// What a log file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// The store the log belongs to.
    pub store_id: [u8; 16],
    /// The log's number (also in its name).
    pub number: u64,
    /// Sequence number of its first record.
    pub first_seq: u64,
}

impl LogHeader {
    /// The 56 header bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.raw(&LOG_MAGIC);
        e.u32(LOG_VERSION);
        e.u32(0);
        e.raw(&self.store_id);
        e.u64(self.number);
        e.u64(self.first_seq);
        e.u32(0);
        let bytes = e.into_bytes();
        let crc = crc32fast::hash(&bytes);
        let mut e = Encoder::new();
        e.raw(&bytes);
        e.u32(crc);
        e.into_bytes()
    }

    /// Reads and checks a header.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<LogHeader> {
        let head = bytes.get(..LOG_HEADER_LEN).ok_or_else(|| {
            Error::corrupt(
                path,
                format!("{} bytes, shorter than the log header", bytes.len()),
            )
        })?;
        let mut d = Decoder::new(head);
        let corrupt =
            |e: crate::codec::DecodeError| Error::corrupt(path, format!("log header {e}"));
        let magic: [u8; 8] = d.array().map_err(corrupt)?;
        if magic != LOG_MAGIC {
            return Err(Error::corrupt(path, "not a segstore log file (bad magic)"));
        }
        let version = d.u32().map_err(corrupt)?;
        if version != LOG_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: LOG_VERSION,
            });
        }
        let _reserved = d.u32().map_err(corrupt)?;
        let store_id: [u8; 16] = d.array().map_err(corrupt)?;
        let number = d.u64().map_err(corrupt)?;
        let first_seq = d.u64().map_err(corrupt)?;
        let _reserved = d.u32().map_err(corrupt)?;
        let crc_end = d.position();
        let crc = d.u32().map_err(corrupt)?;
        let covered = head.get(..crc_end).unwrap_or_default();
        if crc32fast::hash(covered) != crc {
            return Err(Error::corrupt(path, "log header checksum mismatch"));
        }
        if number >= MAX_COUNTER || first_seq >= MAX_COUNTER {
            return Err(Error::corrupt(
                path,
                format!(
                    "log header number {number} or first sequence {first_seq} is not below 2^62"
                ),
            ));
        }
        Ok(LogHeader {
            store_id,
            number,
            first_seq,
        })
    }
}

/// How a scan of a log's records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belongs to a whole, valid record.
    Clean,
    /// The bytes from `offset` on are an incomplete last record (a torn write, or a write still
    /// in progress when a reader looked). The writer truncates them on open.
    Torn {
        /// File offset of the first byte not part of a whole record.
        offset: u64,
    },
    /// The last record is whole but fails its payload checksum in a way no tear explains
    /// (a flipped bit, not a prefix followed by zeros): the record was damaged after it was
    /// written. Only [`scan_records_repairing`] reports this; [`scan_records`] fails with
    /// [`Error::Corrupt`] instead. The writer truncates it only when asked to repair.
    Damaged {
        /// File offset of the damaged record.
        offset: u64,
        /// Its sequence number (its header checksum matched).
        seq: u64,
    },
}

/// The result of scanning records.
#[derive(Debug)]
pub struct Scan {
    /// The records read, with their sequence numbers.
    pub records: Vec<(u64, Entry)>,
    /// File offset just past the last whole record.
    pub valid_end: u64,
    /// Sequence number the next record must carry.
    pub next_seq: u64,
    /// How the scan ended.
    pub tail: Tail,
    /// True if the last record is a `Rotate`.
    pub rotated: bool,
}

/// Whether a checksum field read as `stored` can be a tear of one that should read
/// `computed`: its first bytes as written, then zeros (format-spec.md §4.6, A3).
fn torn_checksum(stored: &[u8], computed: [u8; 4]) -> bool {
    stored.len() == 4
        && (0..4).any(|cut| {
            stored.get(..cut) == computed.get(..cut)
                && stored
                    .get(cut..)
                    .is_some_and(|rest| rest.iter().all(|&b| b == 0))
        })
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Scans the records in `bytes`, which are the file's bytes from offset `start` to its end.
/// `next_seq` is the sequence number the first record must carry.
///
/// The end of the file is a torn tail ([`Tail::Torn`]) only where a tear explains it: an
/// incomplete record, or a record whose bytes from some point on are zeros to the end of the
/// file. Any other damage — a whole last record failing its checksum, a damaged record followed
/// by data, a sequence gap, any byte after a `Rotate` record — is [`Error::Corrupt`].
pub fn scan_records(bytes: &[u8], start: u64, next_seq: u64, path: &Path) -> Result<Scan> {
    scan(bytes, start, next_seq, path, false)
}

/// As [`scan_records`], except that a whole last record failing its payload checksum ends the
/// scan as [`Tail::Damaged`] instead of failing it: for a writer asked to repair the log by
/// dropping that record.
pub fn scan_records_repairing(
    bytes: &[u8],
    start: u64,
    next_seq: u64,
    path: &Path,
) -> Result<Scan> {
    scan(bytes, start, next_seq, path, true)
}

fn scan(bytes: &[u8], start: u64, next_seq: u64, path: &Path, repair: bool) -> Result<Scan> {
    let mut scan = Scan {
        records: Vec::new(),
        valid_end: start,
        next_seq,
        tail: Tail::Clean,
        rotated: false,
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        let offset = start + pos as u64;
        if scan.rotated {
            return Err(Error::corrupt(
                path,
                format!(
                    "{} bytes after the rotate record at offset {offset}",
                    bytes.len() - pos
                ),
            ));
        }
        let rest = bytes.get(pos..).unwrap_or_default();
        let torn = |scan: &mut Scan| scan.tail = Tail::Torn { offset };
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            torn(&mut scan);
            break;
        };
        let mut d = Decoder::new(header);
        let (len, seq, header_crc) = match (d.u32(), d.u64(), d.u32()) {
            (Ok(l), Ok(s), Ok(c)) => (l as usize, s, c),
            _ => {
                torn(&mut scan);
                break;
            }
        };
        let computed = crc32fast::hash(header.get(..12).unwrap_or_default());
        if computed != header_crc {
            // A tear leaves the header's first bytes, then zeros to the end of the file.
            let after = rest.get(RECORD_HEADER_LEN..).unwrap_or_default();
            if all_zero(after)
                && torn_checksum(header.get(12..).unwrap_or_default(), computed.to_le_bytes())
            {
                torn(&mut scan);
                break;
            }
            return Err(Error::corrupt(
                path,
                format!("record header checksum mismatch at offset {offset}"),
            ));
        }
        if len > MAX_RECORD_LEN {
            return Err(Error::corrupt(
                path,
                format!("record at offset {offset} claims {len} bytes, over the limit"),
            ));
        }
        if seq != scan.next_seq {
            return Err(Error::corrupt(
                path,
                format!(
                    "record at offset {offset} has sequence {seq}, expected {}",
                    scan.next_seq
                ),
            ));
        }
        let total = RECORD_HEADER_LEN + len + RECORD_TRAILER_LEN;
        let Some(record) = rest.get(..total) else {
            torn(&mut scan);
            break;
        };
        let payload = record
            .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)
            .unwrap_or_default();
        let trailer = record.get(RECORD_HEADER_LEN + len..).unwrap_or_default();
        let stored_crc = Decoder::new(trailer).u32().unwrap_or(0);
        let computed = crc32fast::hash(payload);
        if computed != stored_crc {
            let after = rest.get(total..).unwrap_or_default();
            if !all_zero(after) {
                return Err(Error::corrupt(
                    path,
                    format!("record {seq} at offset {offset}: payload checksum mismatch"),
                ));
            }
            // A tear cuts the record and zeros the rest, so its checksum field reads as its
            // first bytes then zeros. A whole record with any other checksum was damaged
            // after it was written: an acknowledged write, not one being made.
            if torn_checksum(trailer, computed.to_le_bytes()) {
                torn(&mut scan);
                break;
            }
            if repair {
                scan.tail = Tail::Damaged { offset, seq };
                break;
            }
            return Err(Error::corrupt(
                path,
                format!(
                    "record {seq} at offset {offset}: payload checksum mismatch in the last \
                     record, which is whole: damage, not a torn write (a writer opened with \
                     Options::repair, or a command given --repair, drops the record)"
                ),
            ));
        }
        let entry = Entry::decode(payload).map_err(|e| {
            Error::corrupt(path, format!("record {seq} at offset {offset}: entry {e}"))
        })?;
        if matches!(entry, Entry::Rotate { .. }) {
            scan.rotated = true;
        }
        scan.records.push((seq, entry));
        pos += total;
        scan.valid_end = start + pos as u64;
        scan.next_seq = seq.checked_add(1).ok_or_else(|| {
            Error::corrupt(
                path,
                format!("record at offset {offset}: sequence number {seq} has no successor"),
            )
        })?;
    }
    Ok(scan)
}

/// Frames `entry` as record `seq`. Its large key arrays are not copied: the record's pieces
/// refer to them where they are, and [`LogWriter::append_pieces`] writes them in order, so a
/// write of millions of keys holds them once, not again as a record.
pub fn frame_entry(seq: u64, entry: &Entry) -> Result<Gathered<'_>> {
    let mut counter = Encoder::counting();
    entry.encode_into(&mut counter);
    let len = counter.len();
    if len > MAX_RECORD_LEN {
        return Err(Error::BatchTooLarge {
            size: len,
            limit: MAX_RECORD_LEN,
        });
    }
    let mut e = Encoder::gathering();
    e.u32(len as u32);
    e.u64(seq);
    let header_crc = crc32fast::hash(e.bytes_mut());
    e.u32(header_crc);
    entry.encode_into(&mut e);
    let mut framed = e.into_gathered();
    let mut payload_crc = crc32fast::Hasher::new();
    let mut header_left = RECORD_HEADER_LEN;
    for piece in framed.pieces() {
        payload_crc.update(
            piece
                .get(header_left.min(piece.len())..)
                .unwrap_or_default(),
        );
        header_left = header_left.saturating_sub(piece.len());
    }
    framed.extend(&payload_crc.finalize().to_le_bytes());
    Ok(framed)
}

/// Frames one record.
pub fn encode_record(seq: u64, payload: &[u8]) -> Result<Vec<u8>> {
    if payload.len() > MAX_RECORD_LEN {
        return Err(Error::BatchTooLarge {
            size: payload.len(),
            limit: MAX_RECORD_LEN,
        });
    }
    let mut e = Encoder::new();
    e.u32(payload.len() as u32);
    e.u64(seq);
    let header = e.into_bytes();
    let header_crc = crc32fast::hash(&header);
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len() + RECORD_TRAILER_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    Ok(out)
}

/// The writer's handle on the live log file.
#[derive(Debug)]
pub struct LogWriter {
    io: Io,
    file: File,
    path: PathBuf,
    number: u64,
    len: u64,
}

impl LogWriter {
    /// Creates log `number` in `dir` with its header, fsyncs it and the directory.
    pub fn create(io: &Io, dir: &Path, header: &LogHeader) -> Result<LogWriter> {
        let path = dir.join(log_file_name(header.number));
        let file = io.create_new(&path).map_err(|e| Error::io(&path, e))?;
        let bytes = header.encode();
        let written = io
            .write_all_at(&file, &bytes, 0, &path)
            .and_then(|()| io.sync_all(&file, &path));
        if let Err(e) = written {
            // Outside the chain until a Rotate names it: safe to remove.
            let _ = std::fs::remove_file(&path);
            return Err(Error::io(&path, e));
        }
        sync_dir(io, dir)?;
        Ok(LogWriter {
            io: io.clone(),
            file,
            path,
            number: header.number,
            len: bytes.len() as u64,
        })
    }

    /// Opens an existing log for appending at `valid_end`, truncating anything after it (a
    /// torn tail) and fsyncing the truncation.
    pub fn open(io: &Io, path: &Path, number: u64, valid_end: u64) -> Result<LogWriter> {
        let file = crate::io::open_regular(path, OpenOptions::new().write(true))
            .map_err(|e| Error::io(path, e))?;
        let actual = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if actual != valid_end {
            io.set_len(&file, valid_end, path)
                .map_err(|e| Error::io(path, e))?;
            io.sync_all(&file, path).map_err(|e| Error::io(path, e))?;
        }
        Ok(LogWriter {
            io: io.clone(),
            file,
            path: path.to_owned(),
            number,
            len: valid_end,
        })
    }

    /// Appends one framed record; with `sync`, fdatasyncs before returning.
    pub fn append(&mut self, record: &[u8], sync: bool) -> Result<()> {
        self.io
            .write_all_at(&self.file, record, self.len, &self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        if sync {
            self.io
                .sync_data(&self.file, &self.path)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        self.len += record.len() as u64;
        Ok(())
    }

    /// Appends a record framed by [`frame_entry`], piece by piece. A failure part way leaves
    /// an incomplete record at the end of the file: a torn tail (format-spec §4.6).
    pub fn append_pieces(&mut self, record: &Gathered<'_>, sync: bool) -> Result<u64> {
        let mut at = self.len;
        for piece in record.pieces() {
            self.io
                .write_all_at(&self.file, piece, at, &self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            at += piece.len() as u64;
        }
        if sync {
            self.io
                .sync_data(&self.file, &self.path)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        let written = at - self.len;
        debug_assert_eq!(written, record.len() as u64);
        self.len = at;
        Ok(written)
    }

    /// fsyncs the file's data (used at close when writes are not synced one by one).
    pub fn sync(&self) -> Result<()> {
        self.io
            .sync_data(&self.file, &self.path)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// The log's number.
    pub fn number(&self) -> u64 {
        self.number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_bytes(entries: &[Entry], first_seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            out.extend(encode_record(first_seq + i as u64, &entry.encode()).unwrap());
        }
        out
    }

    fn entries() -> Vec<Entry> {
        (0..4)
            .map(|i| Entry::DeleteSegment {
                segment: format!("seg{i}.g1"),
            })
            .collect()
    }

    #[test]
    fn a_record_in_pieces_is_the_framed_payload() {
        use crate::change::{List, SegmentChange};
        let mut change = SegmentChange::new("big.g1");
        change.name = Some("Big".into());
        // 150,000 keys: two blocks of the key array, back to back, each kept by reference.
        change.list_mut(List::Included).add = (0..150_000).map(|i| format!("k{i}")).collect();
        change.list_mut(List::Excluded).remove = ["x"].into_iter().collect();
        let mut small = SegmentChange::new("small.g1");
        small.included.add = ["a", "b"].into_iter().collect();
        let mut all = entries();
        all.push(Entry::Write {
            changes: vec![small.clone(), change, small],
            set_cursor: Some("c2".into()),
            synchronized_on: Some(5),
        });
        all.push(Entry::Rotate { next_log: 9 });
        let mut shared_any = false;
        for (seq, entry) in all.iter().enumerate() {
            let framed = encode_record(seq as u64, &entry.encode()).unwrap();
            let pieces = frame_entry(seq as u64, entry).unwrap();
            let joined: Vec<u8> = pieces.pieces().flatten().copied().collect();
            assert_eq!(framed, joined);
            assert_eq!(pieces.len(), framed.len());
            shared_any |= pieces.pieces().count() >= 4;
        }
        assert!(
            shared_any,
            "the large key array is written from where it is"
        );
        let mut framed = Vec::new();
        for (seq, entry) in all.iter().enumerate() {
            framed.extend(frame_entry(seq as u64, entry).unwrap().pieces().flatten());
        }
        let scan = scan_records(&framed, 0, 0, Path::new("x")).unwrap();
        let read: Vec<Entry> = scan.records.into_iter().map(|(_, e)| e).collect();
        assert_eq!(read, all);
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = LogHeader {
            store_id: [7; 16],
            number: 3,
            first_seq: 99,
        };
        let bytes = h.encode();
        assert_eq!(bytes.len(), LOG_HEADER_LEN);
        let p = Path::new("x");
        assert_eq!(LogHeader::decode(&bytes, p).unwrap(), h);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(LogHeader::decode(&bad, p).is_err(), "flip at {i}");
        }
        assert!(LogHeader::decode(&bytes[..50], p).is_err());
    }

    #[test]
    fn every_truncation_is_a_torn_tail_with_a_whole_prefix() {
        let bytes = record_bytes(&entries(), 10);
        let p = Path::new("x");
        let full = scan_records(&bytes, 0, 10, p).unwrap();
        assert_eq!(full.records.len(), 4);
        assert_eq!(full.tail, Tail::Clean);
        for cut in 0..bytes.len() {
            let scan = scan_records(&bytes[..cut], 0, 10, p).unwrap();
            assert!(scan.valid_end as usize <= cut);
            let whole = full.records.iter().take_while(|_| true).count();
            assert!(scan.records.len() <= whole);
            assert_eq!(scan.records[..], full.records[..scan.records.len()]);
            if cut as u64 != scan.valid_end {
                assert_eq!(
                    scan.tail,
                    Tail::Torn {
                        offset: scan.valid_end
                    }
                );
            }
        }
    }

    #[test]
    fn a_flip_before_the_last_record_is_corruption() {
        let bytes = record_bytes(&entries(), 1);
        let p = Path::new("x");
        let last_start = bytes.len() - encode_record(4, &entries()[3].encode()).unwrap().len();
        for i in 0..last_start {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            match scan_records(&bad, 0, 1, p) {
                Err(Error::Corrupt { .. }) => {}
                other => panic!("flip at {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_flip_in_the_whole_last_record_is_damage_not_a_tear() {
        let bytes = record_bytes(&entries(), 1);
        let p = Path::new("x");
        let last_start = bytes.len() - encode_record(4, &entries()[3].encode()).unwrap().len();
        let end = bytes.len();
        let mut tear_like = 0;
        for i in last_start..end {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                // The one flip a tear explains: it clears the last set bit of the checksum,
                // leaving the same bytes as a tear just before that byte.
                if i >= end - RECORD_TRAILER_LEN && bad[i..].iter().all(|&b| b == 0) {
                    tear_like += 1;
                    let scan = scan_records(&bad, 0, 1, p).unwrap();
                    assert_eq!(
                        scan.tail,
                        Tail::Torn {
                            offset: last_start as u64
                        }
                    );
                    continue;
                }
                match scan_records(&bad, 0, 1, p) {
                    Err(Error::Corrupt { .. }) => {}
                    other => panic!("flip of bit {bit} at {i}: {other:?}"),
                }
                // Asked to repair, a flip in the payload or its checksum ends the scan before
                // the damaged record; a flip in its header cannot be told from damage earlier
                // on, and stays an error.
                let repaired = scan_records_repairing(&bad, 0, 1, p);
                if i >= last_start + RECORD_HEADER_LEN {
                    let scan = repaired.unwrap();
                    assert_eq!(scan.records.len(), 3);
                    assert_eq!(scan.valid_end, last_start as u64);
                    assert_eq!(
                        scan.tail,
                        Tail::Damaged {
                            offset: last_start as u64,
                            seq: 4
                        }
                    );
                } else {
                    assert!(repaired.is_err(), "flip of bit {bit} at {i}");
                }
            }
        }
        assert!(tear_like <= 1, "{tear_like} flips read as tears");
    }

    #[test]
    fn a_last_record_cut_and_zero_filled_anywhere_is_a_torn_tail() {
        let bytes = record_bytes(&entries(), 1);
        let p = Path::new("x");
        let last_start = bytes.len() - encode_record(4, &entries()[3].encode()).unwrap().len();
        for cut in last_start..bytes.len() {
            // The file keeps its length (or grows further) but the bytes from the cut are zeros.
            for extra in [0usize, 1, 4096] {
                let mut torn = bytes[..cut].to_vec();
                torn.resize(bytes.len() + extra, 0);
                let scan = scan_records(&torn, 0, 1, p)
                    .unwrap_or_else(|e| panic!("cut at {cut} + {extra} zeros: {e}"));
                assert_eq!(scan.records.len(), 3, "cut at {cut}");
                assert_eq!(
                    scan.tail,
                    Tail::Torn {
                        offset: last_start as u64
                    }
                );
            }
        }
    }

    #[test]
    fn zero_filled_tail_is_torn_and_sequence_gaps_are_corrupt() {
        let mut bytes = record_bytes(&entries(), 1);
        let good = bytes.len();
        bytes.extend([0u8; 4096]);
        let scan = scan_records(&bytes, 0, 1, Path::new("x")).unwrap();
        assert_eq!(scan.records.len(), 4);
        assert_eq!(
            scan.tail,
            Tail::Torn {
                offset: good as u64
            }
        );
        let bytes = record_bytes(&entries(), 1);
        assert!(scan_records(&bytes, 0, 2, Path::new("x")).is_err());
    }

    #[test]
    fn bytes_after_rotate_are_corrupt() {
        let mut list = entries();
        list.insert(2, Entry::Rotate { next_log: 2 });
        let bytes = record_bytes(&list, 1);
        assert!(scan_records(&bytes, 0, 1, Path::new("x")).is_err());
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_log_file_name(&log_file_name(0x1234)), Some(0x1234));
        assert_eq!(parse_log_file_name("log-12.seglog"), None);
        assert_eq!(parse_log_file_name("MANIFEST"), None);
    }
}
