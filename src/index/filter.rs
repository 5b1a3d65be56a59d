//! The filter membership index (postings version 3, format-spec §5.8): for every key of every
//! indexed (hashed) table, one entry of a one-byte tag and the list's posting, grouped in
//! buckets by the top bits of the key's code. It holds no second copy of the keys: a lookup
//! reads its bucket's entries, keeps those whose tag is the key's, and the caller confirms
//! each such list in the list's own table. That costs one table probe per list that holds the
//! key (and one for each tag that matches by chance, about one lookup in twenty), and it
//! keeps the index at 4–6 bytes per (key, list) pair where a keyed index took ~45.
//!
//! Layout (little endian):
//! `header (32) | entries: (tag u8, posting: width bytes) × E | bucket offsets: u64 ×
//! (2^bits + 1) | block sums | bits u32 | width u32 | E u64 | block shift u32 | 0 u32 |
//! meta hash (8) | xxh3_64 (8) of every byte before it`.
//!
//! Buckets follow the codes' order, and every table's codes are sorted, so the writer builds
//! the entries one stripe of buckets at a time, taking from each table the run of codes that
//! falls in the stripe: no merge, no sort, and memory bounded by a stripe.

use super::{hashed_codes, meta_hash, posting, unposting, IndexRef, HEADER_LEN, POSTINGS_MAGIC};
use crate::change::List;
use crate::error::{Error, Result};
use crate::io::Io;
use crate::snapshot::LoadedTable;
use crate::table::code::{bucket, Code};
use crate::table::{
    read_u32, read_u64, BlockCheck, HashingWriter, TableFile, Verification, BLOCK_SHIFTS,
    WRITE_BLOCK_SHIFT,
};
use std::io::Write;
use std::iter::Peekable;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The postings version of a filter index.
pub(crate) const VERSION: u32 = 3;
const FOOTER_LEN: usize = 40;
/// Buckets hold 8 to 16 entries on average: 0.5–1 byte of offsets per entry, and a false tag
/// match in 3–6% of lookups.
const MIN_BUCKET_FILL: u64 = 8;
/// log2 of the buckets the writer fills at once (1–2M entries held in memory).
pub(crate) const STRIPE_BITS: u32 = 17;
/// The most bucket bits a reader accepts (a 32 GiB offsets section).
const MAX_BITS: u32 = 32;

/// The bucket bits for `entries` entries: the most that keep at least 8 entries a bucket.
pub(crate) fn bucket_bits(entries: u64) -> u32 {
    match entries / MIN_BUCKET_FILL {
        0 => 0,
        n => (63 - n.leading_zeros()).min(MAX_BITS),
    }
}

/// The bytes a posting takes: the fewest that hold `max` (1 to 4).
fn posting_width(max: u32) -> usize {
    match max {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xff_ffff => 3,
        _ => 4,
    }
}

/// A key's tag: the low byte of the xxh3-64 of its code (independent of the bucket bits,
/// whatever the keys' distribution).
#[inline]
fn tag(code: &[u8]) -> u8 {
    xxhash_rust::xxh3::xxh3_64(code) as u8
}

/// The shape of a filter index's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) entries: u64,
    pub(crate) bits: u32,
    pub(crate) width: usize,
}

impl Shape {
    fn record_len(self) -> usize {
        1 + self.width
    }

    /// Where the bucket offsets start, and where they end (the bytes the sums cover), if the
    /// sizes fit in this platform's address space.
    fn sections(self) -> Option<(usize, usize)> {
        let entries = usize::try_from(self.entries).ok()?;
        let offsets = HEADER_LEN.checked_add(entries.checked_mul(self.record_len())?)?;
        let buckets = 1usize.checked_shl(self.bits)?.checked_add(1)?;
        Some((offsets, offsets.checked_add(buckets.checked_mul(8)?)?))
    }
}

/// An opened filter index.
#[derive(Debug)]
pub(crate) struct FilterIndex {
    postings: Arc<TableFile>,
    path: PathBuf,
    shape: Shape,
    offsets_start: usize,
    /// Set when opened with [`Verification::Structure`]: the blocks of offsets and entries
    /// are checked on first touch.
    blocks: Option<BlockCheck>,
}

impl FilterIndex {
    /// Opens postings file `map` (at `path`; version 3, whose length, magic and store id
    /// [`check_header`](super::check_header) checked).
    pub(crate) fn open(
        map: Arc<TableFile>,
        path: PathBuf,
        index: &IndexRef,
        verification: Verification,
    ) -> Result<FilterIndex> {
        let bytes: &[u8] = map.bytes();
        let corrupt = |d: String| Error::corrupt(&path, d);
        let footer = bytes
            .len()
            .checked_sub(FOOTER_LEN)
            .ok_or_else(|| corrupt("shorter than its trailer".into()))?;
        let bits = read_u32(bytes, footer).unwrap_or(u32::MAX);
        let width = read_u32(bytes, footer + 4).unwrap_or(0);
        let entries = read_u64(bytes, footer + 8).unwrap_or(u64::MAX);
        let shift = read_u32(bytes, footer + 16).unwrap_or(u32::MAX);
        if bits > MAX_BITS || !(1..=4).contains(&width) {
            return Err(corrupt(format!(
                "{bits} bucket bits and {width}-byte postings are out of range"
            )));
        }
        if entries != index.entry_count {
            return Err(corrupt(format!(
                "trailer says {entries} entries; the manifest says {}",
                index.entry_count
            )));
        }
        if !BLOCK_SHIFTS.contains(&shift) || read_u32(bytes, footer + 20) != Some(0) {
            return Err(corrupt(format!("block size 2^{shift} out of range")));
        }
        let shape = Shape {
            entries,
            bits,
            width: width as usize,
        };
        let (offsets_start, covered) = shape
            .sections()
            .ok_or_else(|| corrupt("too large for this platform".into()))?;
        let sums_len = covered.div_ceil(1 << shift).checked_mul(8);
        let expected = sums_len
            .and_then(|s| s.checked_add(covered))
            .and_then(|n| n.checked_add(FOOTER_LEN));
        if expected != Some(bytes.len()) {
            return Err(corrupt(
                "section sizes do not add up to the file size".into(),
            ));
        }
        let whole = verification == Verification::Checksum || map.in_memory();
        if whole {
            let body = bytes.get(..bytes.len() - 8).unwrap_or_default();
            let found = xxhash_rust::xxh3::xxh3_64(body);
            let stored = read_u64(bytes, bytes.len() - 8).unwrap_or(0);
            if found != stored || found != index.postings_checksum {
                return Err(Error::ChecksumMismatch {
                    path,
                    expected: index.postings_checksum,
                    found,
                });
            }
        } else {
            let stored = read_u64(bytes, bytes.len() - 16).unwrap_or(0);
            let found = meta_hash(
                bytes.get(..HEADER_LEN).unwrap_or_default(),
                bytes.get(covered..bytes.len() - 16).unwrap_or_default(),
            );
            if found != stored {
                return Err(corrupt(format!(
                    "header/trailer hash mismatch: stored {stored:#x}, computed {found:#x}"
                )));
            }
        }
        let blocks = (!whole).then(|| BlockCheck::new(0, covered, shift, covered));
        // Lookups read a few bytes at random: no read-ahead from here on.
        map.advise_random();
        Ok(FilterIndex {
            postings: map,
            path,
            shape,
            offsets_start,
            blocks,
        })
    }

    /// Calls `found` with the (ordinal, list) of every entry of `code`'s bucket whose tag is
    /// `code`'s, each posting once.
    #[inline]
    pub(crate) fn for_each_candidate(
        &self,
        code: &Code,
        mut found: impl FnMut(u32, List) -> Result<()>,
    ) -> Result<()> {
        let bytes = self.postings.bytes();
        let b = bucket(code, self.shape.bits);
        let at = usize::try_from(b)
            .ok()
            .and_then(|b| b.checked_mul(8))
            .and_then(|o| self.offsets_start.checked_add(o));
        let Some(at) = at else {
            return Ok(());
        };
        if let Some(blocks) = &self.blocks {
            blocks.ensure(&self.postings, at..at.saturating_add(16))?;
        }
        let (Some(start), Some(end)) = (read_u64(bytes, at), read_u64(bytes, at + 8)) else {
            return Ok(());
        };
        // A damaged offset that passed the structure checks reads nothing rather than beyond
        // the entries.
        if start > end || end > self.shape.entries {
            return Ok(());
        }
        let record = self.shape.record_len();
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| {
                let lo = HEADER_LEN.checked_add(s.checked_mul(record)?)?;
                Some(lo..HEADER_LEN.checked_add(e.checked_mul(record)?)?)
            });
        let Some(range) = range else {
            return Ok(());
        };
        if let Some(blocks) = &self.blocks {
            blocks.ensure(&self.postings, range.clone())?;
        }
        let Some(entries) = bytes.get(range) else {
            return Ok(());
        };
        let want = tag(code);
        let mut last = None;
        for entry in entries.chunks_exact(record) {
            if entry.first() != Some(&want) {
                continue;
            }
            let p = read_posting(entry.get(1..).unwrap_or_default());
            // Entries of one list are adjacent in a bucket: report a list once.
            if last != Some(p) {
                last = Some(p);
                let (ordinal, list) = unposting(p);
                found(ordinal, list)?;
            }
        }
        Ok(())
    }

    /// Checks every bucket offset and every posting against the number of segments (for
    /// `verify`).
    pub(crate) fn check_structure(&self, segments: usize) -> Result<()> {
        let bytes = self.postings.bytes();
        let buckets = 1u64 << self.shape.bits;
        let mut previous = 0u64;
        for b in 0..=buckets {
            let at = usize::try_from(b)
                .ok()
                .and_then(|b| self.offsets_start.checked_add(b.checked_mul(8)?));
            let v = at
                .and_then(|at| read_u64(bytes, at))
                .ok_or_else(|| Error::corrupt(&self.path, format!("offset {b} out of bounds")))?;
            if v < previous || v > self.shape.entries || (b == 0 && v != 0) {
                return Err(Error::corrupt(
                    &self.path,
                    format!("bucket offset {b} is out of order"),
                ));
            }
            previous = v;
        }
        if previous != self.shape.entries {
            return Err(Error::corrupt(
                &self.path,
                "the last bucket offset is not the entry count",
            ));
        }
        let entries = bytes
            .get(HEADER_LEN..self.offsets_start)
            .unwrap_or_default();
        for (i, entry) in entries.chunks_exact(self.shape.record_len()).enumerate() {
            let (ordinal, _) = unposting(read_posting(entry.get(1..).unwrap_or_default()));
            if ordinal as usize >= segments {
                return Err(Error::corrupt(
                    &self.path,
                    format!("entry {i} names segment {ordinal} of {segments}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the index holds exactly the entries `lists` give (invariant M4): the bytes
    /// the writer would write for them, compared as they are produced.
    pub(crate) fn check_against(&self, lists: &[(u32, List, Arc<LoadedTable>)]) -> Result<()> {
        let bytes = self.postings.bytes();
        let mut at = 0usize;
        let mut differs = None;
        let mut store_id = [0u8; 16];
        store_id.copy_from_slice(bytes.get(16..HEADER_LEN).unwrap_or(&[0; 16]));
        let shape = write_sections(&store_id, lists, &mut |chunk: &[u8]| {
            let end = at.saturating_add(chunk.len());
            if differs.is_none() && bytes.get(at..end) != Some(chunk) {
                let i = chunk
                    .iter()
                    .zip(bytes.get(at..).unwrap_or_default())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                differs = Some(at + i);
            }
            at = end;
            Ok(())
        })?;
        let covered = self.shape.sections().map_or(0, |(_, c)| c);
        match differs {
            _ if shape.is_some_and(|s| s != self.shape) || at != covered => Err(Error::corrupt(
                &self.path,
                "the index's shape does not match the tables' keys",
            )),
            Some(byte) if byte < self.offsets_start => Err(Error::corrupt(
                &self.path,
                format!(
                    "entry {} does not match the tables' keys",
                    (byte.saturating_sub(HEADER_LEN)) / self.shape.record_len()
                ),
            )),
            Some(byte) => Err(Error::corrupt(
                &self.path,
                format!(
                    "bucket offset {} does not match the tables' keys",
                    (byte - self.offsets_start) / 8
                ),
            )),
            None => Ok(()),
        }
    }
}

/// A posting of 1–4 little-endian bytes.
#[inline]
fn read_posting(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .rev()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

/// Streams the index's covered bytes (header, entries, bucket offsets) for `lists` into
/// `out`, in order. Returns the shape, or `None` when there is no key (nothing is written).
fn write_sections(
    store_id: &[u8; 16],
    lists: &[(u32, List, Arc<LoadedTable>)],
    out: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Option<Shape>> {
    write_sections_striped(store_id, lists, STRIPE_BITS, out)
}

/// [`write_sections`], filling at most 2^`stripe_bits` buckets at a time (the bytes are the
/// same whatever the stripe).
pub(crate) fn write_sections_striped(
    store_id: &[u8; 16],
    lists: &[(u32, List, Arc<LoadedTable>)],
    stripe_bits: u32,
    out: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Option<Shape>> {
    let entries: u64 = lists.iter().map(|(_, _, t)| t.table.len()).sum();
    if entries == 0 {
        return Ok(None);
    }
    let max = lists
        .iter()
        .map(|(o, l, _)| posting(*o, *l))
        .max()
        .unwrap_or(0);
    let shape = Shape {
        entries,
        bits: bucket_bits(entries),
        width: posting_width(max),
    };
    let too_large = || Error::InvalidArgument {
        what: "membership index",
        detail: format!("{entries} entries are too many for this platform"),
    };
    shape.sections().ok_or_else(too_large)?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&POSTINGS_MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..32].copy_from_slice(store_id);
    out(&header)?;

    let mut codes: Vec<Peekable<_>> = lists
        .iter()
        .map(|(_, _, t)| hashed_codes(t).map(Iterator::peekable))
        .collect::<Result<_>>()?;
    let stripe_bits = shape.bits.min(stripe_bits);
    let stripe_buckets = 1usize << stripe_bits;
    let mut offsets: Vec<u64> = Vec::new();
    offsets
        .try_reserve_exact((1usize << shape.bits) + 1)
        .map_err(|_| too_large())?;
    let mut counts = vec![0u64; stripe_buckets];
    // (bucket within the stripe, tag, posting) of the stripe's entries, in table order.
    let mut gathered: Vec<(u32, u8, u32)> = Vec::new();
    let mut records: Vec<u8> = Vec::new();
    let record = shape.record_len();
    let mut written = 0u64;
    for stripe in 0..1u64 << (shape.bits - stripe_bits) {
        let first = stripe << stripe_bits;
        let end = first + stripe_buckets as u64;
        gathered.clear();
        counts.fill(0);
        for ((ordinal, list, table), codes) in lists.iter().zip(&mut codes) {
            let p = posting(*ordinal, *list);
            while let Some(code) = codes.next_if(|c| bucket(c, shape.bits) < end) {
                let local = bucket(code, shape.bits)
                    .checked_sub(first)
                    .and_then(|l| u32::try_from(l).ok())
                    .ok_or_else(|| {
                        Error::corrupt(table.table.path(), "hashed codes out of order")
                    })?;
                if let Some(c) = counts.get_mut(local as usize) {
                    *c += 1;
                }
                gathered.push((local, tag(code), p));
            }
        }
        // Counting sort by bucket; entries of a bucket keep the tables' order.
        let mut next = Vec::with_capacity(stripe_buckets);
        let mut at = 0u64;
        for c in &counts {
            offsets.push(written + at);
            next.push(at);
            at += c;
        }
        records.clear();
        records.resize(gathered.len() * record, 0);
        for &(local, t, p) in &gathered {
            let Some(slot) = next.get_mut(local as usize) else {
                continue;
            };
            let i = usize::try_from(*slot).unwrap_or(usize::MAX);
            *slot += 1;
            if let Some(r) = i
                .checked_mul(record)
                .and_then(|s| records.get_mut(s..s + record))
            {
                r[0] = t;
                r[1..].copy_from_slice(&p.to_le_bytes()[..shape.width]);
            }
        }
        out(&records)?;
        written += gathered.len() as u64;
    }
    if written != entries || codes.iter_mut().any(|c| c.peek().is_some()) {
        return Err(Error::InvalidArgument {
            what: "membership index",
            detail: format!("the tables yielded {written} keys where they count {entries}"),
        });
    }
    offsets.push(written);
    let mut piece = Vec::with_capacity(64 << 10);
    for chunk in offsets.chunks(8 << 10) {
        piece.clear();
        for o in chunk {
            piece.extend_from_slice(&o.to_le_bytes());
        }
        out(&piece)?;
    }
    Ok(Some(shape))
}

/// Builds the filter index over `lists` — (segment ordinal, list, hashed table) — into
/// postings file `postings_id`, fsynced (the directory is not). Returns `None` (and writes
/// nothing) when there is no key.
pub(crate) fn build_index(
    io: &Io,
    dir: &Path,
    store_id: &[u8; 16],
    postings_id: u64,
    lists: &[(u32, List, Arc<LoadedTable>)],
) -> Result<Option<IndexRef>> {
    if lists.iter().all(|(_, _, t)| t.table.is_empty()) {
        return Ok(None);
    }
    let path = dir.join(super::postings_file_name(postings_id));
    let result = write_index(io, &path, store_id, postings_id, lists);
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result.map(Some)
}

fn write_index(
    io: &Io,
    path: &Path,
    store_id: &[u8; 16],
    postings_id: u64,
    lists: &[(u32, List, Arc<LoadedTable>)],
) -> Result<IndexRef> {
    let file = io.create_new(path).map_err(|e| Error::io(path, e))?;
    let pio = |e: std::io::Error| Error::io(path, e);
    let mut out = HashingWriter::new(io.writer(file, path));
    out.sum_blocks(WRITE_BLOCK_SHIFT);
    let mut header = Vec::new();
    let shape = write_sections(store_id, lists, &mut |chunk: &[u8]| {
        if header.is_empty() {
            header.extend_from_slice(chunk);
        }
        out.write_all(chunk).map_err(pio)
    })?
    .ok_or_else(|| Error::InvalidArgument {
        what: "membership index",
        detail: "no key to index".into(),
    })?;
    let mut trailer = out.take_block_sums().map_err(pio)?;
    trailer.extend_from_slice(&shape.bits.to_le_bytes());
    trailer.extend_from_slice(&(shape.width as u32).to_le_bytes());
    trailer.extend_from_slice(&shape.entries.to_le_bytes());
    trailer.extend_from_slice(&WRITE_BLOCK_SHIFT.to_le_bytes());
    trailer.extend_from_slice(&0u32.to_le_bytes());
    let meta = meta_hash(&header, &trailer);
    trailer.extend_from_slice(&meta.to_le_bytes());
    out.write_all(&trailer).map_err(pio)?;
    let len = out.written() + 8;
    let (mut inner, checksum) = out.finish().map_err(pio)?;
    inner.write_all(&checksum.to_le_bytes()).map_err(pio)?;
    let file = inner.into_inner().map_err(pio)?;
    file.sync_all().map_err(pio)?;
    Ok(IndexRef {
        keys: None,
        postings_id,
        entry_count: shape.entries,
        postings_len: len,
        postings_checksum: checksum,
    })
}
