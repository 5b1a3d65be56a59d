//! Block checksums (format-spec §5.3a): a version-2 table carries the xxh3-64 of every
//! 16 KiB block of its header, data and index sections, so that a table opened without a
//! whole-file check ([`Verification::Structure`](super::Verification::Structure)) checks each
//! block the first time a lookup touches it. No answer then comes from bytes nobody checked.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::{read_u64, TableFile};
use crate::error::{Error, Result};

/// log2 of the block size the writer uses: 16 KiB. A cold lookup reads its blocks whole
/// (two, for a dense table: index entry and codes), so smaller blocks are faster cold; the sums
/// cost 8 bytes a block (0.05% of the table), all read at a Structure open.
pub(crate) const WRITE_BLOCK_SHIFT: u32 = 14;
/// The block sizes a reader accepts: 4 KiB to 1 GiB.
pub(crate) const BLOCK_SHIFTS: Range<u32> = 12..31;

/// The number of blocks of `shift` that cover `len` bytes.
pub(crate) fn block_count(len: u64, shift: u32) -> u64 {
    len.div_ceil(1u64 << shift)
}

/// Computes the block sums of a table as its bytes stream past the writer.
pub(crate) struct BlockHasher {
    shift: u32,
    current: Box<Xxh3>,
    /// Bytes of the current block hashed so far.
    filled: u64,
    sums: Vec<u64>,
}

impl BlockHasher {
    pub(crate) fn new(shift: u32) -> BlockHasher {
        BlockHasher {
            shift,
            current: Box::default(),
            filled: 0,
            sums: Vec::new(),
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        let size = 1u64 << self.shift;
        while !bytes.is_empty() {
            let room = usize::try_from(size - self.filled).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.current.update(now);
            self.filled += now.len() as u64;
            if self.filled == size {
                self.sums.push(self.current.digest());
                self.current.reset();
                self.filled = 0;
            }
            bytes = rest;
        }
    }

    /// The sums of every block, the last one possibly short, as little-endian bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.sums.push(self.current.digest());
        }
        self.sums.iter().flat_map(|s| s.to_le_bytes()).collect()
    }
}

/// Which blocks of one table this process has checked against their sums. Shared by every
/// thread that reads the table; a block is checked at most a few times (threads racing on
/// its first touch may each check it).
pub(crate) struct BlockCheck {
    /// The file offset of the table's byte 0.
    base: usize,
    /// How many of the table's bytes the sums cover (header, data and index).
    covered: usize,
    shift: u32,
    /// The file offset of the sums section (already checked by the footer's meta hash).
    sums_at: usize,
    /// Bit `i` set: block `i` matched its sum; blocks 0..64 here (most tables have one block,
    /// and then no allocation)...
    first: AtomicU64,
    /// ...and blocks 64.. here, 64 to a word.
    verified: Box<[AtomicU64]>,
    /// How many bits of `first` and `verified` are set.
    verified_count: AtomicUsize,
    /// The number of blocks.
    blocks: usize,
    /// Every block matched (or the table is trusted whole): lookups skip the checks.
    all: AtomicBool,
}

impl std::fmt::Debug for BlockCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCheck")
            .field("base", &self.base)
            .field("covered", &self.covered)
            .field("shift", &self.shift)
            .finish()
    }
}

impl BlockCheck {
    pub(crate) fn new(base: usize, covered: usize, shift: u32, sums_at: usize) -> BlockCheck {
        let blocks = block_count(covered as u64, shift) as usize;
        BlockCheck {
            base,
            covered,
            shift,
            sums_at,
            first: AtomicU64::new(0),
            verified: (0..blocks.saturating_sub(64).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            verified_count: AtomicUsize::new(0),
            blocks,
            all: AtomicBool::new(false),
        }
    }

    /// Whether every block is checked (lookups then need no check at all).
    #[inline]
    pub(crate) fn all_checked(&self) -> bool {
        self.all.load(Ordering::Acquire)
    }

    /// Trusts every block without reading it: for a table this process has just written and
    /// fsynced, whose sums it computed from the same bytes.
    pub(crate) fn trust_all(&self) {
        self.all.store(true, Ordering::Release);
    }

    /// Checks every block that bytes `range` (file offsets) touch and that no earlier call
    /// checked. An empty range checks nothing. A range beyond the covered bytes is an error.
    #[inline]
    pub(crate) fn ensure(&self, file: &TableFile, range: Range<usize>) -> Result<()> {
        self.ensure_blocks(file, range, true)
    }

    /// As [`ensure`](BlockCheck::ensure); `read_ahead`: ask the kernel for each block before
    /// hashing it (not needed when the caller asked for the whole range already).
    #[inline]
    fn ensure_blocks(&self, file: &TableFile, range: Range<usize>, read_ahead: bool) -> Result<()> {
        if range.start >= range.end || self.all.load(Ordering::Acquire) {
            return Ok(());
        }
        let (Some(start), Some(end)) = (
            range.start.checked_sub(self.base),
            range.end.checked_sub(self.base),
        ) else {
            return Err(self.out_of_range(file.path(), &range));
        };
        if end > self.covered {
            return Err(self.out_of_range(file.path(), &range));
        }
        for block in (start >> self.shift)..=((end - 1) >> self.shift) {
            let (word, bit) = (block / 64, 1u64 << (block % 64));
            let cell = match word.checked_sub(1) {
                None => Some(&self.first),
                Some(w) => self.verified.get(w),
            };
            let Some(cell) = cell else {
                return Err(self.out_of_range(file.path(), &range));
            };
            if cell.load(Ordering::Acquire) & bit == 0 {
                self.check_block(file, block, read_ahead)?;
                let before = cell.fetch_or(bit, Ordering::Release);
                if before & bit == 0
                    && self.verified_count.fetch_add(1, Ordering::AcqRel) + 1 == self.blocks
                {
                    self.all.store(true, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// Checks every block not yet checked (before an iteration, or any use of an fst body).
    pub(crate) fn ensure_all(&self, file: &TableFile) -> Result<()> {
        if self.all.load(Ordering::Acquire) {
            return Ok(());
        }
        let whole = self.base..self.base + self.covered;
        file.will_need(whole.clone());
        self.ensure_blocks(file, whole, false)?;
        self.all.store(true, Ordering::Release);
        Ok(())
    }

    #[cold]
    fn check_block(&self, file: &TableFile, block: usize, read_ahead: bool) -> Result<()> {
        let path = file.path();
        let size = 1usize << self.shift;
        let start = block.saturating_mul(size);
        let end = start.saturating_add(size).min(self.covered);
        let range = self.base + start..self.base + end;
        // One read of the whole block (a mapping with random-access advice would fault its
        // pages in one by one).
        if read_ahead {
            file.will_need(range.clone());
        }
        let bytes = file
            .bytes()
            .get(range.clone())
            .ok_or_else(|| self.out_of_range(path, &range))?;
        let stored = read_u64(file.bytes(), self.sums_at + block * 8)
            .ok_or_else(|| self.out_of_range(path, &range))?;
        let found = xxh3_64(bytes);
        if found != stored {
            return Err(Error::corrupt(
                path,
                format!(
                    "block {block} (bytes {}..{} of the table) does not match its checksum: \
                     stored {stored:#x}, computed {found:#x}",
                    start, end
                ),
            ));
        }
        Ok(())
    }

    #[cold]
    fn out_of_range(&self, path: &Path, range: &Range<usize>) -> Error {
        Error::corrupt(
            path,
            format!(
                "read of bytes {}..{} outside the {} checked bytes of the table at {}",
                range.start, range.end, self.covered, self.base
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_splits_at_block_boundaries_however_bytes_arrive() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expect: Vec<u8> = data
            .chunks(4096)
            .flat_map(|c| xxh3_64(c).to_le_bytes())
            .collect();
        for piece in [1usize, 7, 4096, 5000, 10_000] {
            let mut h = BlockHasher::new(12);
            for chunk in data.chunks(piece) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), expect, "pieces of {piece}");
        }
        assert!(BlockHasher::new(12).finish().is_empty());
        assert_eq!(block_count(0, 12), 0);
        assert_eq!(block_count(4096, 12), 1);
        assert_eq!(block_count(4097, 12), 2);
    }
}
