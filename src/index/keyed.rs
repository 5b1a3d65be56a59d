//! The keyed membership index (postings versions 1 and 2), which stores of earlier releases
//! hold and this one reads: a hashed key table (`t-*.sstbl`) of every distinct key, and a
//! postings file (`x-*.ssidx`) that gives, for the key at rank `r`, the (segment ordinal,
//! list) pairs whose table holds it. Compaction now writes the filter index (`filter.rs`),
//! which holds no second copy of the keys.
//!
//! Postings file layout (little endian; see `format-spec.md` §5.8), version 2:
//! `header (32) | entries: u32 × entry_count | offsets: u64 × (key_count + 1) |
//! block sums: u64 × blocks | key_count u64 | entry_count u64 | block shift u32 | 0 u32 |
//! meta hash (8) | xxh3_64 (8) of every byte before it`. Version 1 has no block sums and ends
//! `key_count | entry_count | xxh3_64`.

use super::{check_postings, hashed_codes, posting, IndexRef, HEADER_LEN};
use crate::change::List;
use crate::error::{Error, Result};
use crate::snapshot::LoadedTable;
use crate::table::code::Code;
use crate::table::{
    read_u32, read_u64, BlockCheck, TableCodes, TableFile, Verification, BLOCK_SHIFTS,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Arc;

/// The trailer's length: version 1, version 2.
const FOOTER_LEN_V1: usize = 24;
const FOOTER_LEN: usize = 40;

/// An opened keyed index.
#[derive(Debug)]
pub(crate) struct KeyedIndex {
    keys: Arc<LoadedTable>,
    postings: Arc<TableFile>,
    path: PathBuf,
    key_count: u64,
    entry_count: u64,
    offsets_start: usize,
    /// Set when opened with [`Verification::Structure`] (version 2): the blocks of entries and
    /// offsets are checked on first touch.
    blocks: Option<BlockCheck>,
}

impl KeyedIndex {
    /// Opens postings file `map` (at `path`, of `version` 1 or 2, whose length, magic and store
    /// id [`open_postings`](super::open_postings) checked) beside its opened key table.
    pub(crate) fn open(
        map: Arc<TableFile>,
        path: PathBuf,
        version: u32,
        index: &IndexRef,
        keys: Arc<LoadedTable>,
        verification: Verification,
    ) -> Result<KeyedIndex> {
        let bytes: &[u8] = map.bytes();
        let corrupt = |d: String| Error::corrupt(&path, d);
        let footer_len = if version == 1 {
            FOOTER_LEN_V1
        } else {
            FOOTER_LEN
        };
        let footer = bytes.len().saturating_sub(footer_len);
        let key_count = read_u64(bytes, footer).unwrap_or(u64::MAX);
        let entry_count = read_u64(bytes, footer + 8).unwrap_or(u64::MAX);
        if key_count != keys.table.len() || entry_count != index.entry_count {
            return Err(corrupt(format!(
                "header says {key_count} keys and {entry_count} entries; expected {} and {}",
                keys.table.len(),
                index.entry_count
            )));
        }
        let offsets_start = entry_count
            .checked_mul(4)
            .and_then(|n| n.checked_add(HEADER_LEN as u64));
        let sums_start =
            offsets_start.and_then(|o| key_count.checked_add(1)?.checked_mul(8)?.checked_add(o));
        let shift = read_u32(bytes, footer + 16).unwrap_or(u32::MAX);
        let sums_len = match version {
            1 => Some(0),
            _ if BLOCK_SHIFTS.contains(&shift) && read_u32(bytes, footer + 20) == Some(0) => {
                sums_start.map(|s| s.div_ceil(1 << shift) * 8)
            }
            _ => return Err(corrupt(format!("block size 2^{shift} out of range"))),
        };
        let expected_len = sums_start
            .zip(sums_len)
            .and_then(|(s, l)| s.checked_add(l)?.checked_add(footer_len as u64));
        if expected_len != Some(bytes.len() as u64) {
            return Err(corrupt(
                "section sizes do not add up to the file size".into(),
            ));
        }
        let to_usize = |v: Option<u64>| {
            usize::try_from(v.unwrap_or(0))
                .map_err(|_| corrupt("too large for this platform".into()))
        };
        let offsets_start = to_usize(offsets_start)?;
        let sums_start = to_usize(sums_start)?;
        // Version 1 has no block sums: checked whole at either level.
        let whole = verification == Verification::Checksum || version == 1 || map.in_memory();
        let blocks = check_postings(bytes, &path, index, whole, sums_start, shift)?;
        // Lookups read a few bytes at random: no read-ahead from here on. (The checksum pass
        // above ran with the default advice, like a table's: see `table::ADVICE_SCAN`.)
        map.advise_random();
        Ok(KeyedIndex {
            keys,
            postings: map,
            path,
            key_count,
            entry_count,
            offsets_start,
            blocks,
        })
    }

    /// The (segment ordinal, list) pairs whose indexed table holds `key`. Fails only when
    /// opened with [`Verification::Structure`] and a block this lookup reads first is corrupt.
    pub(crate) fn lookup(&self, code: &Code) -> Result<impl Iterator<Item = (u32, List)> + '_> {
        let range = match self.keys.table.rank_of_code(code)? {
            Some(rank) => {
                if let Some(blocks) = &self.blocks {
                    let at = usize::try_from(rank)
                        .ok()
                        .and_then(|r| r.checked_mul(8))
                        .and_then(|o| self.offsets_start.checked_add(o));
                    if let Some(at) = at {
                        blocks.ensure(&self.postings, at..at.saturating_add(16))?;
                    }
                }
                let range = self.entry_range(rank).unwrap_or(0..0);
                if let Some(blocks) = &self.blocks {
                    let bytes = range.start.checked_mul(4).zip(range.end.checked_mul(4));
                    if let Some((lo, hi)) = bytes {
                        blocks.ensure(
                            &self.postings,
                            HEADER_LEN.saturating_add(lo)..HEADER_LEN.saturating_add(hi),
                        )?;
                    }
                }
                range
            }
            None => 0..0,
        };
        let postings = self.postings.bytes();
        Ok(range.filter_map(move |i| {
            let at = HEADER_LEN.checked_add(i.checked_mul(4)?)?;
            let p = read_u32(postings, at)?;
            let list = if p & 1 == 0 {
                List::Included
            } else {
                List::Excluded
            };
            Some((p >> 1, list))
        }))
    }

    fn entry_range(&self, rank: u64) -> Option<std::ops::Range<usize>> {
        if rank >= self.key_count {
            return None;
        }
        let at = |r: u64| {
            let off = usize::try_from(r).ok()?.checked_mul(8)?;
            read_u64(self.postings.bytes(), self.offsets_start.checked_add(off)?)
        };
        let (start, end) = (at(rank)?, at(rank + 1)?);
        if start > end || end > self.entry_count {
            return None;
        }
        Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    /// Checks every offset and entry against the number of segments (for `verify`).
    pub(crate) fn check_structure(&self, segments: usize) -> Result<()> {
        let mut previous = 0u64;
        for r in 0..=self.key_count {
            let off = usize::try_from(r).ok().and_then(|r| r.checked_mul(8));
            let v = off
                .and_then(|o| read_u64(self.postings.bytes(), self.offsets_start.checked_add(o)?))
                .ok_or_else(|| Error::corrupt(&self.path, format!("offset {r} out of bounds")))?;
            if v < previous || v > self.entry_count || (r == 0 && v != 0) {
                return Err(Error::corrupt(
                    &self.path,
                    format!("offset {r} is out of order"),
                ));
            }
            if r == self.key_count && v != self.entry_count {
                return Err(Error::corrupt(
                    &self.path,
                    "the last offset is not the entry count",
                ));
            }
            if r > 0 && v == previous {
                return Err(Error::corrupt(
                    &self.path,
                    format!("key {} has no postings", r - 1),
                ));
            }
            previous = v;
        }
        for i in 0..self.entry_count {
            let at = usize::try_from(i)
                .ok()
                .and_then(|i| HEADER_LEN.checked_add(i.checked_mul(4)?));
            let p = at
                .and_then(|a| read_u32(self.postings.bytes(), a))
                .ok_or_else(|| Error::corrupt(&self.path, format!("entry {i} out of bounds")))?;
            if (p >> 1) as usize >= segments {
                return Err(Error::corrupt(
                    &self.path,
                    format!("entry {i} names segment {} of {segments}", p >> 1),
                ));
            }
        }
        Ok(())
    }
}

impl KeyedIndex {
    /// Checks that the index says exactly what `lists` — the manifest's hashed tables, as
    /// (segment ordinal, list, table) in manifest order — hold: the same keys, and for each
    /// the same postings. Used by `verify`.
    pub(crate) fn check_against(&self, lists: &[(u32, List, Arc<LoadedTable>)]) -> Result<()> {
        let mut merged = merged_keys(lists)?;
        let mut index_keys = hashed_codes(&self.keys)?;
        let mut rank = 0u64;
        let mut postings = Vec::new();
        loop {
            let expected = merged.next_key(&mut postings);
            let found = index_keys.next();
            match (expected, found) {
                (None, None) => return Ok(()),
                (Some(key), Some(indexed)) if key == indexed => {
                    let range = self.entry_range(rank).unwrap_or(0..0);
                    let stored: Vec<u32> = range
                        .filter_map(|i| {
                            read_u32(
                                self.postings.bytes(),
                                HEADER_LEN.checked_add(i.checked_mul(4)?)?,
                            )
                        })
                        .collect();
                    if stored != postings {
                        return Err(Error::corrupt(
                            &self.path,
                            format!("postings of key {rank} do not match the tables"),
                        ));
                    }
                }
                _ => {
                    return Err(Error::corrupt(
                        &self.path,
                        format!("index key {rank} does not match the tables' keys"),
                    ))
                }
            }
            rank += 1;
        }
    }
}

/// The distinct keys of several hashed tables in order, as codes (which sort as the keys do,
/// so the merge neither decodes nor allocates per key), each with its postings.
struct MergedKeys<'a> {
    heads: BinaryHeap<Reverse<Head<'a>>>,
    iters: Vec<TableCodes<'a>>,
    lists: &'a [(u32, List, Arc<LoadedTable>)],
}

/// A table's next code in the merge: ordered by the code's four big-endian words (which order
/// as its bytes do, and compare without a call to `memcmp`), then by the table's position.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Head<'a> {
    words: [u64; 4],
    table: usize,
    code: &'a [u8],
}

impl<'a> Head<'a> {
    fn new(code: &'a [u8], table: usize) -> Head<'a> {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(code.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes
                .get_mut(..chunk.len())
                .unwrap_or_default()
                .copy_from_slice(chunk);
            *word = u64::from_be_bytes(bytes);
        }
        Head { words, table, code }
    }
}

fn merged_keys(lists: &[(u32, List, Arc<LoadedTable>)]) -> Result<MergedKeys<'_>> {
    let mut iters = lists
        .iter()
        .map(|(_, _, t)| hashed_codes(t))
        .collect::<Result<Vec<_>>>()?;
    let mut heads = BinaryHeap::with_capacity(iters.len());
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(code) = it.next() {
            heads.push(Reverse(Head::new(code, i)));
        }
    }
    Ok(MergedKeys {
        heads,
        iters,
        lists,
    })
}

impl<'a> MergedKeys<'a> {
    /// The next distinct key's code, with its postings (in (ordinal, list) order of `lists`)
    /// in `postings`.
    fn next_key(&mut self, postings: &mut Vec<u32>) -> Option<&'a [u8]> {
        let (words, code) = self.heads.peek().map(|Reverse(h)| (h.words, h.code))?;
        postings.clear();
        // Each table holding the code gives a posting and moves on: the heap's top is
        // replaced in place (one sift) rather than popped and pushed.
        while let Some(mut top) = self.heads.peek_mut() {
            if top.0.words != words {
                break;
            }
            let i = top.0.table;
            if let Some((ordinal, list, _)) = self.lists.get(i) {
                postings.push(posting(*ordinal, *list));
            }
            match self.iters.get_mut(i).and_then(Iterator::next) {
                Some(next) => *top = Reverse(Head::new(next, i)),
                None => {
                    std::collections::binary_heap::PeekMut::pop(top);
                }
            }
        }
        Some(code)
    }
}

/// Builds a keyed index (what earlier releases wrote; kept to test that this one reads it)
/// over `lists` — (segment ordinal, list, hashed table) — into key table
/// `keys_id` and postings file `postings_id`. Both files are fsynced; the directory is not.
/// Returns `None` (and writes nothing) when there are no keys.
#[cfg(test)]
pub(crate) fn build_keyed_index(
    io: &crate::io::Io,
    dir: &std::path::Path,
    store_id: &[u8; 16],
    keys_id: u64,
    postings_id: u64,
    lists: &[(u32, List, Arc<LoadedTable>)],
) -> Result<Option<(IndexRef, Arc<LoadedTable>)>> {
    let expected: u64 = lists.iter().map(|(_, _, t)| t.table.len()).sum();
    if expected == 0 {
        return Ok(None);
    }
    let keys_path = dir.join(crate::files::table_file_name(keys_id));
    let postings_path = dir.join(super::postings_file_name(postings_id));
    let result = write_index(io, &keys_path, &postings_path, store_id, expected, lists).and_then(
        |(info, entry_count, postings_len, postings_checksum)| {
            let table =
                crate::table::Table::open(&keys_path, store_id, &info, Verification::Structure)?;
            table.trust_written();
            let keys = Arc::new(LoadedTable {
                table_ref: crate::entry::TableRef {
                    file_id: keys_id,
                    offset: 0,
                    info,
                },
                table,
            });
            let index = IndexRef {
                keys: Some(keys.table_ref),
                postings_id,
                entry_count,
                postings_len,
                postings_checksum,
            };
            Ok((index, keys))
        },
    );
    if result.is_err() {
        let _ = std::fs::remove_file(&keys_path);
        let _ = std::fs::remove_file(&postings_path);
    }
    result.map(Some)
}

#[cfg(test)]
/// Merges the lists' keys in order, writing distinct keys to the key table and their
/// postings to the postings file.
fn write_index(
    io: &crate::io::Io,
    keys_path: &std::path::Path,
    postings_path: &std::path::Path,
    store_id: &[u8; 16],
    expected: u64,
    lists: &[(u32, List, Arc<LoadedTable>)],
) -> Result<(crate::table::TableInfo, u64, u64, u64)> {
    use crate::table::{HashingWriter, TableBuilder, TableKind, WRITE_BLOCK_SHIFT};
    use std::io::Write;
    let mut builder = TableBuilder::create(io, keys_path, store_id, TableKind::Hashed, expected)?;
    let file = io
        .create_new(postings_path)
        .map_err(|e| Error::io(postings_path, e))?;
    let mut out = HashingWriter::new(io.writer(file, postings_path));
    out.sum_blocks(WRITE_BLOCK_SHIFT);
    let pio = |e: std::io::Error| Error::io(postings_path, e);
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&super::POSTINGS_MAGIC);
    header[8..12].copy_from_slice(&2u32.to_le_bytes());
    header[16..32].copy_from_slice(store_id);
    out.write_all(&header).map_err(pio)?;

    let mut merged = merged_keys(lists)?;
    let mut offsets: Vec<u64> = Vec::new();
    let mut entries = 0u64;
    let mut postings = Vec::new();
    while let Some(code) = merged.next_key(&mut postings) {
        builder.push_code(code)?;
        offsets.push(entries);
        for p in postings.iter().copied() {
            out.write_all(&p.to_le_bytes()).map_err(pio)?;
            entries += 1;
        }
    }
    offsets.push(entries);
    for o in &offsets {
        out.write_all(&o.to_le_bytes()).map_err(pio)?;
    }
    let key_count = offsets.len() as u64 - 1;
    let mut trailer = out.take_block_sums().map_err(pio)?;
    trailer.extend_from_slice(&key_count.to_le_bytes());
    trailer.extend_from_slice(&entries.to_le_bytes());
    trailer.extend_from_slice(&WRITE_BLOCK_SHIFT.to_le_bytes());
    trailer.extend_from_slice(&0u32.to_le_bytes());
    let meta = super::meta_hash(&header, &trailer);
    trailer.extend_from_slice(&meta.to_le_bytes());
    out.write_all(&trailer).map_err(pio)?;
    let len = out.written() + 8;
    let (mut inner, checksum) = out.finish().map_err(pio)?;
    inner.write_all(&checksum.to_le_bytes()).map_err(pio)?;
    let file = inner.into_inner().map_err(pio)?;
    file.sync_all().map_err(pio)?;
    let info = builder.finish()?;
    Ok((info, entries, len, checksum))
}
