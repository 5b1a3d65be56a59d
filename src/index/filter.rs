//! The filter membership index (postings version 3, format-spec §5.8): for every key of every
//! indexed (hashed) table, one entry of a one-byte tag and the list's posting, grouped in
//! buckets by the top bits of the key's code. It holds no second copy of the keys: a lookup
//! reads its bucket's entries, keeps those whose tag is the key's, and the caller confirms
//! each such list in the list's own table. That costs one table probe per list that holds the
//! key (and one for each tag that matches by chance, about one lookup in twenty), and it
//! keeps the index at 2.2–5.3 bytes per (key, list) pair where a keyed index took ~45.
//!
//! Layout (little endian):
//! `header (32) | entries: (tag u8, posting: width bytes) × E | bucket starts within their
//! group: u16 or u32 × (2^bits + 1) | group starts: u64 × (groups + 1) | block sums | bits u32 |
//! width u8 | delta width u8 | 0 u16 | E u64 | block shift u32 | 0 u32 | meta hash (8) |
//! xxh3_64 (8) of every byte before it`. A group is 256 buckets: the offsets take ~2 bytes a
//! bucket, small enough to stay in cache, where one `u64` a bucket would not.
//!
//! Buckets follow the codes' order, and every table's codes are sorted, so the writer builds
//! the entries one stripe of buckets at a time, taking from each table the run of codes that
//! falls in the stripe: no merge, no sort, and memory bounded by a stripe.

use super::{
    check_postings, hashed_codes, meta_hash, posting, unposting, IndexRef, HEADER_LEN,
    POSTINGS_MAGIC,
};
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
/// Buckets hold 8 to 16 entries on average: 0.13–0.25 byte of bucket starts per entry, and a
/// false tag match in 3–6% of lookups.
const MIN_BUCKET_FILL: u64 = 8;
/// log2 of the buckets the writer fills at once (1–2M entries held in memory).
pub(crate) const STRIPE_BITS: u32 = 17;
/// The most bucket bits a reader accepts (an 8 GiB offsets section).
const MAX_BITS: u32 = 32;
/// log2 of the buckets of a group: each group's start is a `u64`, each bucket's start a
/// 2-byte delta from it (4 bytes when some group holds 65,536 entries or more).
const GROUP_BITS: u32 = 8;

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
    /// Bytes of a posting: 1 to 4.
    pub(crate) width: usize,
    /// Bytes of a bucket's start within its group: 2 or 4.
    pub(crate) delta_width: usize,
}

/// Where a filter index's sections start, and where the bytes the sums cover end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sections {
    deltas: usize,
    groups: usize,
    covered: usize,
}

impl Shape {
    fn record_len(self) -> usize {
        1 + self.width
    }

    /// The number of groups of buckets.
    fn group_count(self) -> u64 {
        1u64 << self.bits.saturating_sub(GROUP_BITS)
    }

    /// The sections' offsets, if the sizes fit in this platform's address space.
    fn sections(self) -> Option<Sections> {
        let entries = usize::try_from(self.entries).ok()?;
        let deltas = HEADER_LEN.checked_add(entries.checked_mul(self.record_len())?)?;
        let buckets = 1usize.checked_shl(self.bits)?.checked_add(1)?;
        let groups = deltas.checked_add(buckets.checked_mul(self.delta_width)?)?;
        let group_count = usize::try_from(self.group_count()).ok()?.checked_add(1)?;
        let covered = groups.checked_add(group_count.checked_mul(8)?)?;
        Some(Sections {
            deltas,
            groups,
            covered,
        })
    }
}

/// An opened filter index.
#[derive(Debug)]
pub(crate) struct FilterIndex {
    postings: Arc<TableFile>,
    path: PathBuf,
    shape: Shape,
    sections: Sections,
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
        let widths = bytes.get(footer + 4..footer + 8).unwrap_or_default();
        let (width, delta_width) = match widths {
            &[w @ 1..=4, d @ (2 | 4), 0, 0] => (usize::from(w), usize::from(d)),
            _ => (0, 0),
        };
        let entries = read_u64(bytes, footer + 8).unwrap_or(u64::MAX);
        let shift = read_u32(bytes, footer + 16).unwrap_or(u32::MAX);
        if bits > MAX_BITS || width == 0 {
            return Err(corrupt(format!(
                "{bits} bucket bits or posting widths {widths:?} out of range"
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
            width,
            delta_width,
        };
        let sections = shape
            .sections()
            .ok_or_else(|| corrupt("too large for this platform".into()))?;
        let covered = sections.covered;
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
        let blocks = check_postings(bytes, &path, index, whole, covered, shift)?;
        // Lookups read a few bytes at random: no read-ahead from here on.
        map.advise_random();
        Ok(FilterIndex {
            postings: map,
            path,
            shape,
            sections,
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
        let Some((start, end)) = self.bucket_range(bucket(code, self.shape.bits))? else {
            return Ok(());
        };
        let bytes = self.postings.bytes();
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

    /// The start of bucket `i` (`i ≤ 2^bits`), from its group's start and its delta; `None`
    /// when out of bounds. Checks the blocks it reads when opened at `Structure`.
    #[inline]
    fn bucket_start(&self, i: u64) -> Result<Option<u64>> {
        let bytes = self.postings.bytes();
        let d = self.shape.delta_width;
        let at = |start: usize, i: u64, width: usize| {
            usize::try_from(i)
                .ok()
                .and_then(|i| i.checked_mul(width))
                .and_then(|o| start.checked_add(o))
        };
        let (Some(delta_at), Some(group_at)) = (
            at(self.sections.deltas, i, d),
            at(self.sections.groups, i >> GROUP_BITS, 8),
        ) else {
            return Ok(None);
        };
        if let Some(blocks) = &self.blocks {
            blocks.ensure(&self.postings, delta_at..delta_at.saturating_add(d))?;
            blocks.ensure(&self.postings, group_at..group_at.saturating_add(8))?;
        }
        let delta = match d {
            2 => bytes
                .get(delta_at..delta_at.saturating_add(2))
                .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]]))),
            _ => read_u32(bytes, delta_at).map(u64::from),
        };
        Ok(delta
            .zip(read_u64(bytes, group_at))
            .and_then(|(delta, group)| group.checked_add(delta)))
    }

    /// The entries of bucket `i`, if its bounds are in order and within the entries (a
    /// damaged offset that passed the structure checks reads nothing rather than beyond).
    #[inline]
    fn bucket_range(&self, i: u64) -> Result<Option<(u64, u64)>> {
        let (Some(start), Some(end)) = (self.bucket_start(i)?, self.bucket_start(i + 1)?) else {
            return Ok(None);
        };
        Ok((start <= end && end <= self.shape.entries).then_some((start, end)))
    }

    /// Checks every bucket offset and every posting against the number of segments (for
    /// `verify`).
    pub(crate) fn check_structure(&self, segments: usize) -> Result<()> {
        let bytes = self.postings.bytes();
        let buckets = 1u64 << self.shape.bits;
        let mut previous = 0u64;
        for b in 0..=buckets {
            let v = self
                .bucket_start(b)?
                .ok_or_else(|| Error::corrupt(&self.path, format!("offset {b} out of bounds")))?;
            // A group's first bucket starts where the group does.
            let first_of_group = b % (1 << GROUP_BITS) == 0;
            if v < previous
                || v > self.shape.entries
                || (first_of_group && Some(v) != self.group_start(b >> GROUP_BITS))
            {
                return Err(Error::corrupt(
                    &self.path,
                    format!("bucket offset {b} is out of order"),
                ));
            }
            previous = v;
        }
        let last_group = self.group_start(self.shape.group_count());
        if self.group_start(0) != Some(0)
            || previous != self.shape.entries
            || last_group != Some(self.shape.entries)
        {
            return Err(Error::corrupt(
                &self.path,
                "the bucket offsets do not run from 0 to the entry count",
            ));
        }
        let entries = bytes
            .get(HEADER_LEN..self.sections.deltas)
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

    /// The start of group `g`, read directly.
    fn group_start(&self, g: u64) -> Option<u64> {
        let at = usize::try_from(g)
            .ok()
            .and_then(|g| g.checked_mul(8))
            .and_then(|o| self.sections.groups.checked_add(o))?;
        read_u64(self.postings.bytes(), at)
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
        let covered = self.sections.covered;
        match differs {
            _ if shape.is_some_and(|s| s != self.shape) || at != covered => Err(Error::corrupt(
                &self.path,
                "the index's shape does not match the tables' keys",
            )),
            Some(byte) if byte < self.sections.deltas => Err(Error::corrupt(
                &self.path,
                format!(
                    "entry {} does not match the tables' keys",
                    (byte.saturating_sub(HEADER_LEN)) / self.shape.record_len()
                ),
            )),
            Some(_) => Err(Error::corrupt(
                &self.path,
                "the bucket offsets do not match the tables' keys",
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
    // The delta width is known once every offset is: 4 bytes is the larger layout.
    let mut shape = Shape {
        entries,
        bits: bucket_bits(entries),
        width: posting_width(max),
        delta_width: 4,
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
    // Group g starts at bucket g·256 (the last "group" at the end of the entries); a bucket's
    // start is its group's start plus a delta.
    let group_start = |g: u64| {
        let i = (g << GROUP_BITS).min(1 << shape.bits);
        offsets.get(i as usize).copied().unwrap_or(written)
    };
    let groups: Vec<u64> = (0..=shape.group_count()).map(group_start).collect();
    let delta = |i: usize| {
        offsets
            .get(i)
            .zip(groups.get(i >> GROUP_BITS))
            .map_or(0, |(o, g)| o.saturating_sub(*g))
    };
    let widest = (0..offsets.len()).map(delta).max().unwrap_or(0);
    shape.delta_width = if widest <= u64::from(u16::MAX) { 2 } else { 4 };
    let mut piece = Vec::with_capacity(64 << 10);
    for first in (0..offsets.len()).step_by(16 << 10) {
        piece.clear();
        for i in first..offsets.len().min(first + (16 << 10)) {
            piece.extend_from_slice(&delta(i).to_le_bytes()[..shape.delta_width]);
        }
        out(&piece)?;
    }
    for chunk in groups.chunks(8 << 10) {
        piece.clear();
        for g in chunk {
            piece.extend_from_slice(&g.to_le_bytes());
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
    trailer.extend_from_slice(&[shape.width as u8, shape.delta_width as u8, 0, 0]);
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

#[cfg(test)]
mod codec_tests {
    use super::*;

    #[test]
    fn postings_round_trip_at_every_width() {
        for (max, width) in [
            (0u32, 1usize),
            (0xff, 1),
            (0x100, 2),
            (0xffff, 2),
            (0x1_0000, 3),
            (0xff_ffff, 3),
            (0x100_0000, 4),
            (u32::MAX, 4),
        ] {
            assert_eq!(posting_width(max), width, "{max:#x}");
            for p in [0, 1, max / 2, max] {
                let bytes = p.to_le_bytes();
                assert_eq!(read_posting(&bytes[..width]), p, "{p:#x} in {width} bytes");
            }
        }
    }
}
