//! Immutable key tables: one file holding a sorted set of byte-string keys.
//!
//! Three kinds share one header and one footer (see `format-spec.md` §5):
//!
//! * [`TableKind::Fst`] stores the keys as an [`fst::Set`]: compact for keys that share
//!   structure (prefixes, sequential ids), any keys of 1..=4096 bytes.
//! * [`TableKind::Hashed`] stores LaunchDarkly context hashes (44-character base64 of a SHA-256,
//!   see [`is_hash_key`]) as 32-byte order-preserving codes in sorted order behind a small
//!   bucket index: about 33-34 bytes per key and one or two cache lines per lookup.
//! * [`TableKind::Uuid`] stores canonical UUID strings (see [`is_uuid_key`]) the same way as
//!   16-byte codes: about 17-18 bytes per key. Random keys are where fst is weakest, and both
//!   LaunchDarkly hashes and v4 UUIDs are random.
//!
//! A table is written once by a [`TableBuilder`], fsynced, and never modified afterwards. The
//! manifest records its [`TableInfo`] (kind, key count, length and the xxh3-64 of the whole
//! file), which [`Table::open`] checks the file against.
//!
//! # Corrupt files
//!
//! Opening never panics: every offset and length read from the file is bounds-checked and
//! reported as a typed [`Error`] naming the file. No lookup answers from bytes nobody checked:
//! [`Verification::Checksum`] hashes the whole table at open, and [`Verification::Structure`]
//! checks each 16 KiB block against the sums the table carries (format-spec §5.3a) before a
//! lookup first reads it, failing the lookup if it is corrupt. A dense table cannot make a
//! lookup or an iteration panic whatever its bytes.

mod blocks;
pub(crate) mod code;

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fst::{IntoStreamer, Streamer};
use memmap2::Mmap;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{Error, Result};
use crate::io::{ChunkWriter, Io, IoWriter};

pub(crate) use blocks::{BlockCheck, BlockHasher, BLOCK_SHIFTS, WRITE_BLOCK_SHIFT};
use code::Code;
pub(crate) use code::Scheme;
pub use code::{is_hash_key, is_uuid_key};

/// The magic number at offset 0 of every table file.
pub const TABLE_MAGIC: [u8; 8] = *b"SEGSTBL\0";
/// The magic number at offset 48 of the footer.
const FOOTER_MAGIC: [u8; 8] = *b"SEGSTEND";
/// The table format version this build writes; it reads this one and version 1 (no block
/// sums, format-spec §5.3a).
pub const TABLE_FORMAT_VERSION: u32 = 2;
/// The pack header's format version (format-spec §5.9).
pub const PACK_FORMAT_VERSION: u32 = 1;
/// Size of the header at the start of every table file.
const HEADER_LEN: usize = 64;
/// Size of the footer at the end of every table file.
const FOOTER_LEN: usize = 64;
/// Largest bucket-index size the builder chooses (2^28 buckets, a 2 GiB index, held in
/// memory while building): 2.5 to 5 keys a bucket up to 1.34 billion keys.
const MAX_BUILD_BUCKET_BITS: u32 = 28;
/// Bytes per bucket index entry: the bucket's first key position (`u32`) and its filter
/// (`u32`: bit `code[31] & 31` set for each key of the bucket).
const INDEX_ENTRY_LEN: usize = 8;
/// The builder writes the bucket index in pieces of this many bytes.
const INDEX_WRITE_PIECE: usize = 64 << 10;
/// Largest bucket-index size the reader accepts.
const MAX_READ_BUCKET_BITS: u32 = 32;
/// The largest number of keys a hashed table may hold (its index holds u32 key positions).
pub const MAX_HASHED_KEYS: u64 = u32::MAX as u64;
/// The fst format version written by fst 0.4.
const FST_VERSION: u64 = 3;
/// Shortest fst a valid table can hold (an empty set).
const FST_MIN_LEN: usize = 36;
/// Longest key accepted.
const MAX_KEY_LEN: usize = 4096;

/// The layout of a table file.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// An `fst::Set` of arbitrary keys.
    Fst = 1,
    /// Sorted 32-byte order-preserving codes of hash keys (see [`is_hash_key`]) behind a bucket
    /// index.
    Hashed = 2,
    /// Sorted 16-byte codes of canonical UUID strings (see [`is_uuid_key`]) behind the same
    /// bucket index as [`TableKind::Hashed`].
    Uuid = 3,
}

impl TableKind {
    /// The kind with this on-disk tag, if any.
    pub fn from_u8(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(TableKind::Fst),
            2 => Some(TableKind::Hashed),
            3 => Some(TableKind::Uuid),
            _ => None,
        }
    }

    /// The on-disk tag of this kind.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code scheme of a dense kind (`None` for fst).
    pub(crate) fn scheme(self) -> Option<Scheme> {
        match self {
            TableKind::Fst => None,
            TableKind::Hashed => Some(Scheme::LdHash),
            TableKind::Uuid => Some(Scheme::Uuid),
        }
    }

    /// The kind whose tables hold codes of `scheme` (fst for none).
    pub(crate) fn of_scheme(scheme: Option<Scheme>) -> TableKind {
        match scheme {
            None => TableKind::Fst,
            Some(Scheme::LdHash) => TableKind::Hashed,
            Some(Scheme::Uuid) => TableKind::Uuid,
        }
    }

    /// The dense kind that can hold `key`, if any (else only [`TableKind::Fst`] can).
    pub fn dense_for(key: &[u8]) -> Option<TableKind> {
        if is_hash_key(key) {
            Some(TableKind::Hashed)
        } else if is_uuid_key(key) {
            Some(TableKind::Uuid)
        } else {
            None
        }
    }

    /// Whether a table of this kind can hold `key`.
    pub fn accepts(self, key: &[u8]) -> bool {
        match self {
            TableKind::Fst => true,
            TableKind::Hashed => is_hash_key(key),
            TableKind::Uuid => is_uuid_key(key),
        }
    }
}

/// The kind a list's table gets, decided as its keys go by (format-spec §5.6): the dense kind
/// that every key fits — set by the first key, or by the table a compaction starts from — else
/// fst. Bulk replace and compaction both choose through this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KindChoice {
    /// No key seen and no table to start from.
    Undecided,
    /// Every key so far fits this dense kind.
    Dense(TableKind),
    /// Only an fst can hold the keys seen (or the list's table is already an fst).
    Fst,
}

impl KindChoice {
    /// The choice for a list whose current table has `kind` (`None`: no table).
    pub(crate) fn starting_with(kind: Option<TableKind>) -> Self {
        match kind {
            None => KindChoice::Undecided,
            Some(TableKind::Fst) => KindChoice::Fst,
            Some(dense) => KindChoice::Dense(dense),
        }
    }

    /// Takes `key` into account. Returns `false` once only an fst can hold the keys.
    pub(crate) fn see(&mut self, key: &[u8]) -> bool {
        *self = match *self {
            KindChoice::Undecided => {
                TableKind::dense_for(key).map_or(KindChoice::Fst, KindChoice::Dense)
            }
            KindChoice::Dense(kind) if kind.accepts(key) => KindChoice::Dense(kind),
            _ => KindChoice::Fst,
        };
        *self != KindChoice::Fst
    }

    /// The kind to write (fst when no key was seen: such a list gets no table anyway).
    pub(crate) fn kind(self) -> TableKind {
        match self {
            KindChoice::Dense(kind) => kind,
            KindChoice::Undecided | KindChoice::Fst => TableKind::Fst,
        }
    }
}

/// What the manifest records about a table file, and what [`Table::open`] checks it against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's layout.
    pub kind: TableKind,
    /// The number of keys.
    pub key_count: u64,
    /// The table's length in bytes: the whole file for a table of its own, its part of the
    /// file for a table inside a pack (format-spec §5.9).
    pub file_len: u64,
    /// The xxh3-64 (seed 0) of the table's bytes (the whole file for a table of its own).
    pub checksum: u64,
}

/// How much [`Table::open`] checks before serving a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Hash the whole file (xxh3-64) and compare with [`TableInfo::checksum`], then run the
    /// [`Structure`](Verification::Structure) checks, plus (hashed tables) a scan of the bucket
    /// index for monotonicity. Reads the whole file once: O(file length).
    Checksum,
    /// Cheap checks at open: header (magic, version, kind, store id), block sums and footer
    /// (magic, metadata hash over both, key count), file length, and that every section's
    /// offset and length are consistent and in bounds: 8 bytes read per 16 KiB of table.
    ///
    /// The body is checked as it is used: a lookup first checks each 16 KiB block it reads
    /// against its sum (once per process), and fails with [`Error::Corrupt`] if one differs;
    /// an fst body, whose reads the `fst` crate decides, is checked whole on its first lookup;
    /// an iteration checks every block first. So no answer comes from unchecked bytes, at the
    /// price of fallible lookups. A version-1 table (no block sums), or one in memory already
    /// (a file of at most 64 KiB is read whole) is checked whole at open, as with `Checksum`.
    Structure,
}

/// The fixed header, decoded.
struct Header {
    kind: TableKind,
    version: u32,
}

/// The fixed footer, decoded.
struct Footer {
    key_count: u64,
    data: Range<usize>,
    index: Range<usize>,
    bucket_bits: u32,
    /// Version 2: log2 of the block size and where the block sums lie (table offsets).
    sums: Option<(u32, Range<usize>)>,
}

/// Where a process keeps the bytes of its table files (see [`crate::Options::residency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residency {
    /// Mapped from the page cache (the default): shared by every process on the host, no
    /// anonymous memory. Lookups get 2 MiB TLB entries while the page cache holds the file in
    /// 2 MiB folios. Reclaim takes those folios over time, and the lookups that read the
    /// pages back bring them in as 4 KiB folios (BENCHMARKS.md, "Why the folios go").
    #[default]
    PageCache,
    /// Mapped from the page cache, as `PageCache`, with the mapping advised for transparent
    /// huge pages (`MADV_HUGEPAGE`). A lookup that faults a page the page cache does not
    /// hold then reads the whole 2 MiB-aligned range around it, as one 2 MiB folio mapped by
    /// one TLB entry. So a table comes back in 2 MiB pages however often reclaim takes it,
    /// with no anonymous memory. The price is on a cold page cache: each first touch of a
    /// 2 MiB range reads 2 MiB from disk instead of 4 KiB (a disk-bound lookup is then one
    /// 2 MiB read). Linux only; elsewhere the same as `PageCache`.
    PageCacheHugeFolios,
    /// Copied at open into anonymous memory advised for transparent huge pages
    /// (`MADV_HUGEPAGE`): the process's resident anonymous memory grows by the size of every
    /// table file over 64 KiB it opens, in exchange for huge-page TLB entries that do not
    /// depend on the page cache. A table a bulk replace writes in this process is mapped from
    /// the page cache until the next open (compaction's tables are copied). Linux only;
    /// elsewhere the same as `PageCache`.
    AnonymousHugePages,
}

/// A table file's bytes, as this process reads them.
enum FileBytes {
    /// Mapped read-only: a large file, shared with the page cache.
    Mapped(Mmap),
    /// Copied into anonymous memory advised for huge pages ([`Residency::AnonymousHugePages`]):
    /// the file's bytes are `map[start..start + len]`, `start` putting them on a 2 MiB
    /// boundary.
    Anonymous { map: Mmap, start: usize, len: usize },
    /// Read into memory: a file of at most [`READ_MAX`] bytes, which then takes no mapping
    /// (a process may hold only so many, `vm.max_map_count`; format-spec §5.7).
    Read(Box<[u8]>),
}

/// Table files up to this length are read into memory rather than mapped.
pub const READ_MAX: u64 = 64 << 10;

/// One open table file: a file of its own table or a pack of several (format-spec §5.9).
/// Every table in it shares this one mapping.
pub struct TableFile {
    path: PathBuf,
    bytes: FileBytes,
    /// Mapped with huge-page advice ([`Residency::PageCacheHugeFolios`], Linux): a fault
    /// reads the whole 2 MiB range around it, so the page cache holds it as one folio.
    huge_folios: bool,
}

impl fmt::Debug for TableFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableFile")
            .field("path", &self.path)
            .field("len", &self.bytes().len())
            .field("mapped", &matches!(self.bytes, FileBytes::Mapped(_)))
            .finish()
    }
}

impl TableFile {
    /// Opens `path`: mapped read-only, or read whole when it is at most [`READ_MAX`] bytes.
    ///
    /// Table files are immutable: the contract is that nothing truncates or rewrites a table
    /// file while it is open (segstore never does; another program doing so may crash the
    /// process with `SIGBUS`, as with any memory-mapped file).
    pub fn open(path: &Path) -> Result<Arc<TableFile>> {
        TableFile::open_in(path, Residency::PageCache)
    }

    /// As [`open`](TableFile::open), keeping a file over [`READ_MAX`] bytes where
    /// `residency` says.
    pub fn open_in(path: &Path, residency: Residency) -> Result<Arc<TableFile>> {
        let corrupt = |d: String| Error::corrupt(path, d);
        let mut file = crate::io::open_read(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let len_usize = usize::try_from(len)
            .map_err(|_| corrupt(format!("{len} bytes: too large to map on this platform")))?;
        let bytes = if len <= READ_MAX {
            let mut buf = Vec::with_capacity(len_usize);
            std::io::Read::read_to_end(&mut file, &mut buf).map_err(|e| Error::io(path, e))?;
            if buf.len() != len_usize {
                return Err(corrupt(format!(
                    "file changed while opening ({} bytes read, {len} expected)",
                    buf.len()
                )));
            }
            FileBytes::Read(buf.into_boxed_slice())
        } else if residency == Residency::AnonymousHugePages && cfg!(target_os = "linux") {
            copy_to_huge_pages(path, &mut file, len_usize)?
        } else {
            // SAFETY: the map is read-only, and table files are immutable once finished: a
            // TableBuilder or PackWriter writes a file once, fsyncs it, and segstore never
            // modifies, truncates or rewrites it afterwards (it only deletes it once no
            // snapshot uses it; unlinking leaves the mapping valid). A program outside
            // segstore truncating or writing the file while it is mapped is outside the
            // documented contract.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            if map.len() != len_usize {
                return Err(corrupt(format!(
                    "file changed while opening ({} bytes mapped, {len} expected)",
                    map.len()
                )));
            }
            #[cfg(target_os = "linux")]
            if residency == Residency::PageCacheHugeFolios {
                advise(&map, memmap2::Advice::HugePage);
            }
            FileBytes::Mapped(map)
        };
        Ok(Arc::new(TableFile {
            path: path.to_path_buf(),
            huge_folios: cfg!(target_os = "linux")
                && residency == Residency::PageCacheHugeFolios
                && matches!(bytes, FileBytes::Mapped(_)),
            bytes,
        }))
    }

    /// The whole file.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            FileBytes::Mapped(map) => map,
            FileBytes::Read(buf) => buf,
            FileBytes::Anonymous { map, start, len } => map
                .get(*start..start.saturating_add(*len))
                .unwrap_or_default(),
        }
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// Whether the file is empty (no table file is).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn advise(&self, advice: Advice) {
        if let FileBytes::Mapped(map) = &self.bytes {
            advise(map, advice);
        }
    }

    /// Asks the kernel to read bytes `range` of a mapped file in now, as one request (a hint:
    /// failure changes performance only).
    fn will_need(&self, range: Range<usize>) {
        #[cfg(unix)]
        if let FileBytes::Mapped(map) = &self.bytes {
            // With huge-folio advice the first fault reads the whole 2 MiB range around it as
            // one folio; an explicit read ahead (any range) brings pages in as small folios,
            // which stay small.
            if self.huge_folios {
                return;
            }
            let _ = map.advise_range(memmap2::Advice::WillNeed, range.start, range.len());
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Random-access advice for a mapped file (lookups read a few bytes at random).
    pub(crate) fn advise_random(&self) {
        self.advise(ADVICE_RANDOM);
    }

    /// Whether the file's bytes are in this process's memory already (read whole, or copied
    /// into anonymous memory) rather than mapped from the page cache.
    pub(crate) fn in_memory(&self) -> bool {
        !matches!(self.bytes, FileBytes::Mapped(_))
    }
}

/// Copies the `len`-byte file into a fresh anonymous mapping advised for transparent huge
/// pages, starting on a 2 MiB boundary so that whole huge pages back it.
fn copy_to_huge_pages(path: &Path, file: &mut std::fs::File, len: usize) -> Result<FileBytes> {
    const HUGE: usize = 2 << 20;
    let io = |e| Error::io(path, e);
    let total = len
        .checked_add(HUGE)
        .ok_or_else(|| Error::corrupt(path, "too large to copy into memory"))?;
    let mut map = memmap2::MmapMut::map_anon(total).map_err(io)?;
    #[cfg(unix)]
    {
        // A hint: without huge pages the copy still works, with 4 KiB pages.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    let start = (HUGE - (map.as_ptr() as usize % HUGE)) % HUGE;
    let dest = map
        .get_mut(start..start + len)
        .ok_or_else(|| Error::corrupt(path, "copy out of bounds"))?;
    std::io::Read::read_exact(file, dest).map_err(io)?;
    let map = map.make_read_only().map_err(io)?;
    Ok(FileBytes::Anonymous { map, start, len })
}

/// A byte range of a shared table file: the fst's backing bytes.
#[derive(Clone)]
struct MapSlice {
    file: Arc<TableFile>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        // The range was checked against the file's length when the table was opened.
        self.file.bytes().get(self.range.clone()).unwrap_or(&[])
    }
}

/// A hashed table's sections.
struct HashedBody {
    file: Arc<TableFile>,
    /// Byte offset of the first code.
    codes_start: usize,
    /// Number of codes (== key count).
    len: usize,
    /// Byte offset of the bucket index (2^bits + 1 little-endian u32).
    index_start: usize,
    bucket_bits: u32,
    /// How keys become codes (and their width).
    scheme: Scheme,
}

enum Body {
    Fst(fst::Set<MapSlice>),
    Hashed(HashedBody),
}

/// An open, memory-mapped table. Immutable; cheap lookups from any number of threads.
pub struct Table {
    /// Where the table starts in its file (0 for a file of its own).
    offset: u64,
    info: TableInfo,
    body: Body,
    /// Version 2: log2 of the block size and where the block sums lie (file offsets).
    sums: Option<(u32, Range<usize>)>,
    /// The blocks still to be checked on first touch: set when the table was opened with
    /// [`Verification::Structure`] and not checked whole.
    blocks: Option<BlockCheck>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path())
            .field("offset", &self.offset)
            .field("info", &self.info)
            .finish()
    }
}

/// An fst lookup in a function of its own: inlined into a larger caller, LLVM kept the fst's
/// per-node `find_input` out of line (~350 more instructions a lookup); alone it compiles as
/// tightly as a bare `fst::Set::contains`.
#[inline(never)]
fn fst_contains(set: &fst::Set<MapSlice>, key: &[u8]) -> bool {
    set.contains(key)
}

/// Buckets up to this many codes are searched by interpolation, larger ones (which only a
/// corrupt index produces) by bisection.
const INTERPOLATION_MAX: usize = 64;

/// The filter bit of a code in its bucket's filter word.
#[inline]
fn filter_bit(code: &[u8]) -> u32 {
    1u32 << (code.last().copied().unwrap_or(0) & 31)
}

/// The little-endian `u32` at `at`, if in bounds.
pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// The little-endian `u64` at `at`, if in bounds.
pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// The xxh3-64 stored in the footer: of the 64 header bytes, the block sums (version 2;
/// empty for version 1) and footer bytes 0..56.
fn meta_hash(header: &[u8; HEADER_LEN], sums: &[u8], footer_head: &[u8; FOOTER_LEN - 8]) -> u64 {
    // Most tables are small (one block, one sum): one-shot hashing from the stack, where a
    // streaming hasher's setup would cost more than the hash (it shows at 200,000 tables).
    const SMALL: usize = 512;
    let len = HEADER_LEN + sums.len() + FOOTER_LEN - 8;
    if len <= SMALL {
        let mut buf = [0u8; SMALL];
        let mut at = 0;
        for part in [&header[..], sums, &footer_head[..]] {
            if let Some(dest) = buf.get_mut(at..at + part.len()) {
                dest.copy_from_slice(part);
            }
            at += part.len();
        }
        return xxh3_64(buf.get(..len).unwrap_or_default());
    }
    let mut h = Xxh3::new();
    h.update(header);
    h.update(sums);
    h.update(footer_head);
    h.digest()
}

fn encode_header(kind: TableKind, store_id: &[u8; 16]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&TABLE_MAGIC);
    h[8..12].copy_from_slice(&TABLE_FORMAT_VERSION.to_le_bytes());
    h[12] = kind.as_u8();
    h[16..32].copy_from_slice(store_id);
    h
}

fn encode_footer(header: &[u8; HEADER_LEN], sums: &[u8], f: &Footer) -> [u8; FOOTER_LEN] {
    let mut head = [0u8; FOOTER_LEN - 8];
    head[0..8].copy_from_slice(&f.key_count.to_le_bytes());
    head[8..16].copy_from_slice(&(f.data.start as u64).to_le_bytes());
    head[16..24].copy_from_slice(&(f.data.len() as u64).to_le_bytes());
    head[24..32].copy_from_slice(&(f.index.start as u64).to_le_bytes());
    head[32..40].copy_from_slice(&(f.index.len() as u64).to_le_bytes());
    head[40] = f.bucket_bits as u8;
    head[41] = f.sums.as_ref().map_or(0, |(shift, _)| *shift as u8);
    head[48..56].copy_from_slice(&FOOTER_MAGIC);
    let mut out = [0u8; FOOTER_LEN];
    out[..FOOTER_LEN - 8].copy_from_slice(&head);
    out[FOOTER_LEN - 8..].copy_from_slice(&meta_hash(header, sums, &head).to_le_bytes());
    out
}

/// Checks magic, version, kind and store id.
fn parse_header(path: &Path, bytes: &[u8], store_id: &[u8; 16]) -> Result<Header> {
    let corrupt = |d: String| Error::corrupt(path, d);
    let h = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| corrupt("shorter than the 64-byte header".into()))?;
    if h.get(0..8) != Some(&TABLE_MAGIC[..]) {
        return Err(corrupt(
            "not a segstore table (bad magic at offset 0)".into(),
        ));
    }
    let version = read_u32(h, 8).ok_or_else(|| corrupt("header truncated".into()))?;
    if version > TABLE_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: TABLE_FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(corrupt("format version 0 at offset 8".into()));
    }
    let tag = h.get(12).copied().unwrap_or(0);
    let kind = TableKind::from_u8(tag)
        .ok_or_else(|| corrupt(format!("unknown table kind {tag} at offset 12")))?;
    if h.get(13..16).is_none_or(|r| r.iter().any(|&b| b != 0))
        || h.get(32..64).is_none_or(|r| r.iter().any(|&b| b != 0))
    {
        return Err(corrupt("non-zero reserved bytes in the header".into()));
    }
    if h.get(16..32) != Some(&store_id[..]) {
        return Err(Error::ForeignFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Header { kind, version })
}

/// Checks the footer's magic and metadata hash and that the sections tile the file exactly.
fn parse_footer(path: &Path, bytes: &[u8], header: &Header) -> Result<Footer> {
    let kind = header.kind;
    let corrupt = |d: String| Error::corrupt(path, d);
    let file_len = bytes.len();
    let at = file_len
        .checked_sub(FOOTER_LEN)
        .filter(|&at| at >= HEADER_LEN)
        .ok_or_else(|| corrupt(format!("{file_len} bytes: too short for header and footer")))?;
    let header_bytes: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| corrupt("header truncated".into()))?;
    let head: &[u8; FOOTER_LEN - 8] = bytes
        .get(at..at + FOOTER_LEN - 8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| corrupt("footer truncated".into()))?;
    if head.get(48..56) != Some(&FOOTER_MAGIC[..]) {
        return Err(corrupt(format!("bad footer magic at offset {}", at + 48)));
    }
    let field = |off: usize| read_u64(head, off).unwrap_or(u64::MAX);
    let (key_count, data_off, data_len, index_off, index_len) =
        (field(0), field(8), field(16), field(24), field(32));
    let bucket_bits = u32::from(head.get(40).copied().unwrap_or(u8::MAX));
    let block_shift = u32::from(head.get(41).copied().unwrap_or(u8::MAX));
    let reserved_from = if header.version >= 2 { 42 } else { 41 };
    if head
        .get(reserved_from..48)
        .is_none_or(|r| r.iter().any(|&b| b != 0))
    {
        return Err(corrupt("non-zero reserved bytes in the footer".into()));
    }
    // The sections must tile [HEADER_LEN, file_len - FOOTER_LEN) exactly: data, index, and
    // (version 2) the block sums of every byte before them.
    let data_end = data_off.checked_add(data_len);
    let index_end = index_off.checked_add(index_len);
    let sums_len = if header.version >= 2 {
        if !blocks::BLOCK_SHIFTS.contains(&block_shift) {
            return Err(corrupt(format!("block size 2^{block_shift} out of range")));
        }
        index_end.map(|end| blocks::block_count(end, block_shift) * 8)
    } else {
        Some(0)
    };
    let sums_end = index_end.zip(sums_len).and_then(|(e, l)| e.checked_add(l));
    if data_off != HEADER_LEN as u64 || data_end != Some(index_off) || sums_end != Some(at as u64) {
        return Err(corrupt(format!(
            "section bounds out of place: data {data_off}+{data_len}, index {index_off}+{index_len}, \
             footer at {at}"
        )));
    }
    // Every value is now <= at < file_len, so they fit in usize.
    let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let index_end = to_usize(index_off + index_len);
    let sums_bytes = bytes
        .get(index_end..at)
        .ok_or_else(|| corrupt("block sums out of bounds".into()))?;
    let stored =
        read_u64(bytes, at + FOOTER_LEN - 8).ok_or_else(|| corrupt("footer truncated".into()))?;
    let computed = meta_hash(header_bytes, sums_bytes, head);
    if stored != computed {
        return Err(corrupt(format!(
            "header/footer hash mismatch at offset {}: stored {stored:#x}, computed {computed:#x}",
            at + 56
        )));
    }
    let footer = Footer {
        key_count,
        data: to_usize(data_off)..to_usize(index_off),
        index: to_usize(index_off)..index_end,
        bucket_bits,
        sums: (header.version >= 2).then_some((block_shift, index_end..at)),
    };
    match kind {
        TableKind::Fst => {
            if index_len != 0 || bucket_bits != 0 {
                return Err(corrupt("fst table with a bucket index".into()));
            }
        }
        TableKind::Hashed | TableKind::Uuid => {
            let code_len = kind.scheme().map_or(0, Scheme::code_len) as u64;
            if bucket_bits > MAX_READ_BUCKET_BITS {
                return Err(corrupt(format!("bucket bits {bucket_bits} > 32")));
            }
            if key_count > MAX_HASHED_KEYS {
                return Err(corrupt(format!("hashed table claims {key_count} keys")));
            }
            let want_data = key_count.checked_mul(code_len);
            if want_data != Some(data_len) {
                return Err(corrupt(format!(
                    "code area is {data_len} bytes, {key_count} keys need {}",
                    key_count.saturating_mul(code_len)
                )));
            }
            let want_index = ((1u64 << bucket_bits) + 1) * INDEX_ENTRY_LEN as u64;
            if index_len != want_index {
                return Err(corrupt(format!(
                    "bucket index is {index_len} bytes, {bucket_bits} bucket bits need {want_index}"
                )));
            }
        }
    }
    Ok(footer)
}

#[cfg(unix)]
type Advice = memmap2::Advice;
#[cfg(not(unix))]
type Advice = ();

#[cfg(unix)]
fn advise(map: &Mmap, advice: Advice) {
    // Advice is a hint: failure changes performance only.
    let _ = map.advise(advice);
}

#[cfg(not(unix))]
fn advise(_map: &Mmap, _advice: Advice) {}

#[cfg(unix)]
const ADVICE_RANDOM: memmap2::Advice = memmap2::Advice::Random;
/// For the checksum pass over the whole file. Not `Sequential`: Linux reads a sequential-advice
/// mapping in 4 KiB folios, while default read-around on a filesystem with large folios reads
/// 2 MiB folios, which later lookups (from any process) map with huge-page TLB entries; it is
/// also faster (a 337 MB table from disk: 0.26 s against 0.40 s).
#[cfg(unix)]
const ADVICE_SCAN: memmap2::Advice = memmap2::Advice::Normal;
#[cfg(not(unix))]
const ADVICE_RANDOM: () = ();
#[cfg(not(unix))]
const ADVICE_SCAN: () = ();

impl Table {
    /// Opens the table at `path`, a file of its own, checking it against what the manifest
    /// recorded.
    ///
    /// Errors (each naming the file): [`Error::Io`]; [`Error::Corrupt`] for a wrong magic,
    /// kind, key count or file length, or any offset or length out of place;
    /// [`Error::UnsupportedVersion`] for a format version above
    /// [`TABLE_FORMAT_VERSION`]; [`Error::ForeignFile`] when the store id differs;
    /// [`Error::ChecksumMismatch`] (with [`Verification::Checksum`]) when the file's xxh3-64
    /// differs from `expected.checksum`.
    ///
    /// The file is mapped read-only with random-access advice (or read, when small: see
    /// [`TableFile::open`]), so opening reads only the pages it checks (plus the whole file
    /// once with [`Verification::Checksum`]).
    pub fn open(
        path: &Path,
        store_id: &[u8; 16],
        expected: &TableInfo,
        verification: Verification,
    ) -> Result<Table> {
        Table::open_in(&TableFile::open(path)?, 0, store_id, expected, verification)
    }

    /// Opens the table that starts at byte `offset` of `file` (a pack, format-spec §5.9, or
    /// at 0 a file of its own, which must then be exactly `expected.file_len` bytes) and is
    /// `expected.file_len` bytes long, with the checks of [`Table::open`] applied to those
    /// bytes. Errors name the file and, for a table inside a pack, its offset.
    pub fn open_in(
        file: &Arc<TableFile>,
        offset: u64,
        store_id: &[u8; 16],
        expected: &TableInfo,
        verification: Verification,
    ) -> Result<Table> {
        let path = file.path();
        let placed = |e: Error| place_error(e, offset);
        let corrupt = |d: String| placed(Error::corrupt(path, d));
        let len = expected.file_len;
        if offset == 0 && file.len() != len {
            return Err(corrupt(format!(
                "file is {} bytes, the manifest says {len}",
                file.len()
            )));
        }
        if len < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(corrupt(format!("{len} bytes: too short for a table")));
        }
        let region = offset
            .checked_add(len)
            .filter(|end| *end <= file.len())
            .and_then(|end| Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?))
            .ok_or_else(|| {
                corrupt(format!(
                    "{len} bytes from offset {offset} do not fit the {}-byte file",
                    file.len()
                ))
            })?;
        let base = region.start;
        let own_file = base == 0;
        if base != 0 {
            if base < PACK_HEADER_LEN {
                return Err(corrupt(format!(
                    "offset {offset} is inside the pack header"
                )));
            }
            check_pack_header(path, file.bytes(), store_id)?;
        }
        let bytes = file
            .bytes()
            .get(region.clone())
            .ok_or_else(|| corrupt("table out of bounds".into()))?;
        // Advice applies to a whole mapping: changing it for part of a pack would split the
        // mapping in the kernel (one more map area per table), so a pack keeps the default.
        if own_file {
            file.advise(ADVICE_RANDOM);
        }

        let header = parse_header(path, bytes, store_id).map_err(placed)?;
        if header.kind != expected.kind {
            return Err(corrupt(format!(
                "table kind is {:?}, the manifest says {:?}",
                header.kind, expected.kind
            )));
        }
        // A table with no block sums (version 1), or in memory already (a file of at most
        // 64 KiB, read whole; or a copy in anonymous memory) is checked whole even at the
        // Structure level: no answer may come from unchecked bytes. Small tables in a mapped
        // pack are checked block by block, so that opening 100,000 of them reads none.
        let whole =
            verification == Verification::Checksum || header.version < 2 || file.in_memory();
        if whole {
            if own_file {
                file.advise(ADVICE_SCAN);
            }
            let found = xxh3_64(bytes);
            if own_file {
                file.advise(ADVICE_RANDOM);
            }
            if found != expected.checksum {
                return Err(placed(Error::ChecksumMismatch {
                    path: path.to_path_buf(),
                    expected: expected.checksum,
                    found,
                }));
            }
        }
        let footer = parse_footer(path, bytes, &header).map_err(placed)?;
        if footer.key_count != expected.key_count {
            return Err(corrupt(format!(
                "table holds {} keys, the manifest says {}",
                footer.key_count, expected.key_count
            )));
        }
        let shift = |r: &Range<usize>| r.start + base..r.end + base;
        let body = match header.kind {
            TableKind::Fst => Body::Fst(
                open_fst(path, file, shift(&footer.data), footer.key_count).map_err(placed)?,
            ),
            TableKind::Hashed | TableKind::Uuid => {
                let scheme = header.kind.scheme().unwrap_or(Scheme::LdHash);
                let body = HashedBody {
                    scheme,
                    file: Arc::clone(file),
                    codes_start: footer.data.start + base,
                    len: usize::try_from(footer.key_count)
                        .map_err(|_| corrupt("key count too large for this platform".into()))?,
                    index_start: footer.index.start + base,
                    bucket_bits: footer.bucket_bits,
                };
                body.check_index_ends(path).map_err(placed)?;
                if whole {
                    body.check_index_monotonic(path).map_err(placed)?;
                }
                Body::Hashed(body)
            }
        };
        let sums = footer.sums.map(|(block_shift, r)| (block_shift, shift(&r)));
        let blocks = match &sums {
            Some((block_shift, at)) if !whole => Some(BlockCheck::new(
                base,
                footer.index.end,
                *block_shift,
                at.start,
            )),
            _ => None,
        };
        Ok(Table {
            offset,
            info: *expected,
            body,
            sums,
            blocks,
        })
    }

    /// Trusts the table's blocks without reading them: for a table this process has just
    /// written and fsynced (opened at the Structure level so as not to read it again), whose
    /// block sums it computed from the same bytes.
    pub(crate) fn trust_written(&self) {
        if let Some(blocks) = &self.blocks {
            blocks.trust_all();
        }
    }

    /// The block checks a lookup must make, if any block is unchecked.
    #[inline]
    fn unchecked(&self) -> Option<&BlockCheck> {
        self.blocks.as_ref().filter(|b| !b.all_checked())
    }

    /// Checks, before an iteration or any use of an fst body, every block not yet checked.
    fn ensure_all(&self) -> Result<()> {
        match &self.blocks {
            Some(blocks) => blocks.ensure_all(self.file()),
            None => Ok(()),
        }
    }

    /// Whether `key` is in the table. Does not allocate.
    ///
    /// Fails only for a table opened with [`Verification::Structure`] whose bytes this
    /// lookup reads for the first time and finds corrupt ([`Error::Corrupt`]): an fst table
    /// checks its whole body on its first lookup, a dense table each 16 KiB block on first
    /// touch (format-spec §5.3a). A table checked whole at open never fails here.
    #[inline]
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        match &self.body {
            Body::Fst(set) => {
                self.ensure_all()?;
                Ok(fst_contains(set, key))
            }
            Body::Hashed(h) => {
                // Start the bucket's index entry on its way from memory (usually a cache
                // miss) while the key is encoded and checked.
                h.prefetch_index(h.scheme.bucket_of_key(key, h.bucket_bits));
                match h.scheme.encode(key) {
                    Some(code) => Ok(h.rank_code(&code, self.unchecked())?.is_some()),
                    None => Ok(false),
                }
            }
        }
    }

    /// The position of `key` in the table's key order, if the table holds it. Only hashed
    /// tables answer (the membership index uses it to find a key's postings); an fst table
    /// returns `None`. Fails as [`contains`](Table::contains) does.
    pub fn rank(&self, key: &[u8]) -> Result<Option<u64>> {
        match &self.body {
            Body::Fst(_) => Ok(None),
            Body::Hashed(h) => {
                h.prefetch_index(h.scheme.bucket_of_key(key, h.bucket_bits));
                match h.scheme.encode(key) {
                    Some(code) => Ok(h.rank_code(&code, self.unchecked())?.map(|r| r as u64)),
                    None => Ok(None),
                }
            }
        }
    }

    /// The position of the key whose LaunchDarkly-hash code is `code`, if a hashed table holds
    /// it (what the keyed membership index asks its key table); `None` for any other kind.
    /// Fails as [`contains`](Table::contains) does.
    pub(crate) fn rank_of_code(&self, code: &Code) -> Result<Option<u64>> {
        match &self.body {
            Body::Hashed(h) if h.scheme == Scheme::LdHash => {
                Ok(h.rank_code(code, self.unchecked())?.map(|r| r as u64))
            }
            _ => Ok(None),
        }
    }

    /// Whether the table holds the key whose LaunchDarkly-hash code is `code` (what the
    /// membership index's candidates are confirmed with: no re-encoding per list). Fails as
    /// [`contains`](Table::contains) does.
    #[inline]
    pub(crate) fn contains_code(&self, code: &Code) -> Result<bool> {
        match &self.body {
            Body::Hashed(h) if h.scheme == Scheme::LdHash => {
                h.prefetch_index(code::bucket(code, h.bucket_bits));
                Ok(h.rank_code(code, self.unchecked())?.is_some())
            }
            _ => self.contains(Scheme::LdHash.decode(code).as_slice()),
        }
    }

    /// The number of keys.
    pub fn len(&self) -> u64 {
        self.info.key_count
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.info.key_count == 0
    }

    /// The table's layout.
    pub fn kind(&self) -> TableKind {
        self.info.kind
    }

    /// What the manifest recorded about this table (checked at open).
    pub fn info(&self) -> TableInfo {
        self.info
    }

    /// The file this table was opened from (its path is kept once per file, not per table:
    /// 200,000 tables of a pack share it).
    pub fn path(&self) -> &Path {
        self.file().path()
    }

    /// Where the table starts in its file (0 for a file of its own; format-spec §5.9).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file the table is in (shared by every table of a pack).
    pub fn file(&self) -> &Arc<TableFile> {
        match &self.body {
            Body::Fst(set) => &set.as_fst().as_inner().file,
            Body::Hashed(h) => &h.file,
        }
    }

    /// The table's bytes, header to footer.
    pub(crate) fn bytes(&self) -> &[u8] {
        let file = self.file();
        let start = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let end = usize::try_from(self.info.file_len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .unwrap_or(usize::MAX);
        file.bytes().get(start..end).unwrap_or_default()
    }

    /// All keys, in ascending byte order. A table opened with [`Verification::Structure`]
    /// first checks every block it has not checked yet, and fails if one is corrupt.
    pub fn keys(&self) -> Result<TableKeys<'_>> {
        self.ensure_all()?;
        Ok(match &self.body {
            Body::Fst(set) => TableKeys(KeysInner::Fst(set.stream())),
            Body::Hashed(h) => TableKeys(KeysInner::Hashed { body: h, pos: 0 }),
        })
    }

    /// A dense table's codes in ascending order, borrowed from the table (what merges of
    /// hashed tables compare: codes sort as their keys do); `None` for an fst table. Checks
    /// every block not yet checked first, as [`keys`](Table::keys) does.
    pub(crate) fn codes(&self) -> Result<Option<TableCodes<'_>>> {
        self.ensure_all()?;
        Ok(match &self.body {
            Body::Fst(_) => None,
            Body::Hashed(h) => Some(TableCodes { body: h, pos: 0 }),
        })
    }

    /// The keys `>= start`, in ascending byte order. `start` need not be a key, nor (for a
    /// hashed table) a hash key. Fails as [`keys`](Table::keys) does.
    pub fn keys_from(&self, start: &[u8]) -> Result<TableKeys<'_>> {
        self.ensure_all()?;
        Ok(match &self.body {
            Body::Fst(set) => TableKeys(KeysInner::Fst(set.range().ge(start).into_stream())),
            Body::Hashed(h) => TableKeys(KeysInner::Hashed {
                body: h,
                pos: h.lower_bound(start),
            }),
        })
    }

    /// The deep checks of [`verify_table`] that go beyond [`Verification::Checksum`]: for
    /// fst, its own CRC and a full iteration; for the dense kinds, codes strictly increasing,
    /// each in its bucket and its bucket's filter.
    pub(crate) fn check_contents(&self) -> Result<()> {
        let corrupt = |d: String| place_error(Error::corrupt(self.path(), d), self.offset);
        if let Some((block_shift, at)) = &self.sums {
            // Every block against its sum, whatever this table checked before.
            let base = usize::try_from(self.offset).unwrap_or(usize::MAX);
            BlockCheck::new(base, at.start.saturating_sub(base), *block_shift, at.start)
                .ensure_all(self.file())?;
        }
        match &self.body {
            Body::Fst(set) => {
                set.as_fst()
                    .verify()
                    .map_err(|e| corrupt(format!("fst body: {e}")))?;
                let mut stream = set.stream();
                let mut count = 0u64;
                while let Some(key) = stream.next() {
                    if key.is_empty() || key.len() > MAX_KEY_LEN {
                        return Err(corrupt(format!("key {count} is {} bytes", key.len())));
                    }
                    count += 1;
                }
                if count != self.info.key_count {
                    return Err(corrupt(format!(
                        "fst yields {count} keys, the footer says {}",
                        self.info.key_count
                    )));
                }
                Ok(())
            }
            Body::Hashed(h) => h
                .check_codes(self.path())
                .map_err(|e| place_error(e, self.offset)),
        }
    }
}

/// The magic that begins a pack (format-spec §5.9).
pub const PACK_MAGIC: [u8; 8] = *b"SEGSPAK\0";
/// The pack header's length; the first table of a pack starts at or after it.
pub const PACK_HEADER_LEN: usize = 64;

/// A pack's header: magic, version 1, the store id; the rest zero.
pub(crate) fn encode_pack_header(store_id: &[u8; 16]) -> [u8; PACK_HEADER_LEN] {
    let mut h = [0u8; PACK_HEADER_LEN];
    h[..8].copy_from_slice(&PACK_MAGIC);
    h[8..12].copy_from_slice(&PACK_FORMAT_VERSION.to_le_bytes());
    h[16..32].copy_from_slice(store_id);
    h
}

/// Checks the header of a pack (a file whose tables start past offset 0).
fn check_pack_header(path: &Path, bytes: &[u8], store_id: &[u8; 16]) -> Result<()> {
    let corrupt = |d: &str| Error::corrupt(path, format!("pack header: {d}"));
    let header = bytes
        .get(..PACK_HEADER_LEN)
        .ok_or_else(|| corrupt("file too short"))?;
    if header.get(..8) != Some(&PACK_MAGIC[..]) {
        return Err(corrupt("not a segstore pack (bad magic)"));
    }
    let version = read_u32(header, 8).unwrap_or(0);
    if version > PACK_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: PACK_FORMAT_VERSION,
        });
    }
    if version != PACK_FORMAT_VERSION {
        return Err(corrupt(&format!("version {version}")));
    }
    if header.get(16..32) != Some(&store_id[..]) {
        return Err(Error::ForeignFile {
            path: path.to_path_buf(),
        });
    }
    if header
        .get(12..16)
        .is_some_and(|r| r.iter().any(|b| *b != 0))
        || header.get(32..).is_some_and(|r| r.iter().any(|b| *b != 0))
    {
        return Err(corrupt("reserved bytes are not zero"));
    }
    Ok(())
}

/// For a table inside a pack, says where in its file an error was found.
fn place_error(e: Error, offset: u64) -> Error {
    if offset == 0 {
        return e;
    }
    match e {
        Error::Corrupt { path, detail } => Error::Corrupt {
            path,
            detail: format!("table at offset {offset}: {detail}"),
        },
        other => other,
    }
}

fn open_fst(
    path: &Path,
    file: &Arc<TableFile>,
    data: Range<usize>,
    key_count: u64,
) -> Result<fst::Set<MapSlice>> {
    let corrupt = |d: String| Error::corrupt(path, d);
    let bytes = file
        .bytes()
        .get(data.clone())
        .ok_or_else(|| corrupt("fst body out of bounds".into()))?;
    // fst 0.4 checks little of its trailer; check what can be checked in O(1) so that the
    // obvious corruptions are reported rather than trusted.
    let n = bytes.len();
    if n < FST_MIN_LEN {
        return Err(corrupt(format!(
            "fst body is {n} bytes, at least 36 needed"
        )));
    }
    let version = read_u64(bytes, 0).unwrap_or(0);
    let ty = read_u64(bytes, 8).unwrap_or(u64::MAX);
    let fst_len = read_u64(bytes, n - 20).unwrap_or(u64::MAX);
    let root = read_u64(bytes, n - 12).unwrap_or(u64::MAX);
    if version != FST_VERSION || ty != 0 {
        return Err(corrupt(format!(
            "fst body: version {version}, type {ty} (expected version 3, type 0)"
        )));
    }
    let root_ok = if root == 0 {
        n == FST_MIN_LEN
    } else {
        root.checked_add(21) == Some(n as u64)
    };
    if !root_ok {
        return Err(corrupt(format!(
            "fst body: root address {root} does not fit a {n}-byte fst"
        )));
    }
    if fst_len != key_count {
        return Err(corrupt(format!(
            "fst holds {fst_len} keys, the footer says {key_count}"
        )));
    }
    let slice = MapSlice {
        file: Arc::clone(file),
        range: data,
    };
    fst::Set::new(slice).map_err(|e| corrupt(format!("fst body: {e}")))
}

/// The position of `code` among the `width`-byte codes of one bucket, `slice`, if present;
/// `fraction` is the code's 32 bits after the bucket bits (where it lies within the bucket).
#[inline]
fn search_bucket(slice: &[u8], width: usize, code: &[u8], fraction: u32) -> Option<usize> {
    let count = slice.len() / width;
    let at = |i: usize| slice.get(i * width..(i + 1) * width);
    if count > INTERPOLATION_MAX {
        // Only a corrupt index makes buckets this large: a binary search stays cheap.
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match at(mid)?.cmp(code) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        return None;
    }
    // Codes are uniform within a bucket: start where the code's next bits put it (usually
    // the right slot or its neighbour, one cache line) and step towards it.
    let mut i = ((u64::from(fraction) * count as u64) >> 32) as usize;
    match at(i)?.cmp(code) {
        std::cmp::Ordering::Equal => Some(i),
        std::cmp::Ordering::Less => loop {
            i += 1;
            match at(i)?.cmp(code) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Some(i),
                std::cmp::Ordering::Greater => return None,
            }
        },
        std::cmp::Ordering::Greater => loop {
            i = i.checked_sub(1)?;
            match at(i)?.cmp(code) {
                std::cmp::Ordering::Greater => continue,
                std::cmp::Ordering::Equal => return Some(i),
                std::cmp::Ordering::Less => return None,
            }
        },
    }
}

impl HashedBody {
    /// The whole file (offsets below are the file's). Every access below goes through `get`.
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.file.bytes()
    }

    /// Index entry `i`: the position of the first key of bucket `i`.
    #[inline]
    fn index_entry(&self, i: u64) -> Option<usize> {
        self.index_word(i).map(|(start, _)| start as usize)
    }

    /// Index entry `i` whole: the position of bucket `i`'s first key and its filter.
    #[inline]
    fn index_word(&self, i: u64) -> Option<(u32, u32)> {
        let off = usize::try_from(i).ok()?.checked_mul(INDEX_ENTRY_LEN)?;
        let at = self.index_start.checked_add(off)?;
        Some((
            read_u32(self.bytes(), at)?,
            read_u32(self.bytes(), at.checked_add(4)?)?,
        ))
    }

    /// Asks the CPU to start loading index entry `i` into cache. A hint: an out-of-range `i`
    /// does nothing, and nothing is read.
    #[inline]
    fn prefetch_index(&self, i: u64) {
        let Some(at) = usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(INDEX_ENTRY_LEN))
            .and_then(|off| self.index_start.checked_add(off))
        else {
            return;
        };
        let Some(entry) = self.bytes().get(at..) else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has; a prefetch never
        // faults or reads into the program, and the pointer is in the mapped table anyway.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(entry.as_ptr().cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = entry;
    }

    /// Code `i` (`i < len`).
    #[inline]
    fn code_at(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len {
            return None;
        }
        let at = self
            .codes_start
            .checked_add(i.checked_mul(self.scheme.code_len())?)?;
        self.bytes()
            .get(at..at.checked_add(self.scheme.code_len())?)
    }

    /// The byte range of the codes at positions `lo..hi`, if in bounds.
    #[inline]
    fn code_range(&self, lo: usize, hi: usize) -> Option<Range<usize>> {
        if lo > hi || hi > self.len {
            return None;
        }
        let width = self.scheme.code_len();
        let start = self.codes_start.checked_add(lo.checked_mul(width)?)?;
        let end = self.codes_start.checked_add(hi.checked_mul(width)?)?;
        Some(start..end)
    }

    /// The position of `code` among the table's codes, if present. With `blocks`, each read
    /// is checked first: the bucket's two index entries, then (if the filter lets the code
    /// through) the bucket's codes.
    #[inline]
    fn rank_code(&self, code: &Code, blocks: Option<&BlockCheck>) -> Result<Option<usize>> {
        let width = self.scheme.code_len();
        let Some(code) = code.get(..width) else {
            return Ok(None);
        };
        let b = code::bucket(code, self.bucket_bits);
        if let Some(blocks) = blocks {
            let at = usize::try_from(b)
                .ok()
                .and_then(|b| b.checked_mul(INDEX_ENTRY_LEN))
                .and_then(|off| self.index_start.checked_add(off));
            if let Some(at) = at {
                blocks.ensure(&self.file, at..at.saturating_add(INDEX_ENTRY_LEN + 4))?;
            }
        }
        let Some((first, filter)) = self.index_word(b) else {
            return Ok(None);
        };
        // Most absent keys stop here, after one read of the index.
        if filter & filter_bit(code) == 0 {
            return Ok(None);
        }
        let first = first as usize;
        let Some(range) = self
            .index_entry(b + 1)
            .and_then(|end| self.code_range(first, end))
        else {
            return Ok(None);
        };
        if let Some(blocks) = blocks {
            blocks.ensure(&self.file, range.clone())?;
        }
        let Some(slice) = self.bytes().get(range) else {
            return Ok(None);
        };
        let fraction = code::fraction_after(code, self.bucket_bits);
        Ok(search_bucket(slice, width, code, fraction).and_then(|i| first.checked_add(i)))
    }

    /// The position of the first key `>= start` (`len` if none).
    fn lower_bound(&self, start: &[u8]) -> usize {
        let (mut lo, mut hi) = (0usize, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(c) = self.code_at(mid) else {
                return self.len;
            };
            if self.scheme.decode(c).as_slice() < start {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// O(1): the index starts at 0 and ends at the key count.
    fn check_index_ends(&self, path: &Path) -> Result<()> {
        let last = 1u64 << self.bucket_bits;
        if self.index_entry(0) != Some(0) || self.index_entry(last) != Some(self.len) {
            return Err(Error::corrupt(
                path,
                format!(
                    "bucket index must run from 0 to {} (offset {})",
                    self.len, self.index_start
                ),
            ));
        }
        Ok(())
    }

    /// O(buckets): the index never decreases.
    fn check_index_monotonic(&self, path: &Path) -> Result<()> {
        let entries = (1u64 << self.bucket_bits) + 1;
        let index = self
            .bytes()
            .get(self.index_start..)
            .ok_or_else(|| Error::corrupt(path, "bucket index out of bounds"))?;
        let mut prev = 0u32;
        for (i, chunk) in index
            .chunks_exact(INDEX_ENTRY_LEN)
            .take(entries as usize)
            .enumerate()
        {
            let v = read_u32(chunk, 0).unwrap_or(0);
            if v < prev {
                return Err(Error::corrupt(
                    path,
                    format!("bucket index decreases at entry {i} ({prev} then {v})"),
                ));
            }
            prev = v;
        }
        Ok(())
    }

    /// O(keys): codes strictly increase and each lies in the bucket the index assigns it.
    fn check_codes(&self, path: &Path) -> Result<()> {
        let buckets = 1u64 << self.bucket_bits;
        let mut prev: Option<&[u8]> = None;
        let mut bucket = 0u64;
        let mut bucket_end = self.index_entry(1).unwrap_or(0);
        for i in 0..self.len {
            let code = self
                .code_at(i)
                .ok_or_else(|| Error::corrupt(path, format!("code {i} out of bounds")))?;
            if prev.is_some_and(|p| p >= code) {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "codes not strictly increasing at key {i} (offset {})",
                        self.codes_start + i * self.scheme.code_len()
                    ),
                ));
            }
            prev = Some(code);
            while i >= bucket_end && bucket < buckets {
                bucket += 1;
                bucket_end = self.index_entry(bucket + 1).unwrap_or(0);
            }
            if code::bucket(code, self.bucket_bits) != bucket {
                return Err(Error::corrupt(
                    path,
                    format!("key {i} is not in the bucket the index assigns it ({bucket})"),
                ));
            }
            let filter = self.index_word(bucket).map_or(0, |(_, f)| f);
            if filter & filter_bit(code) == 0 {
                return Err(Error::corrupt(
                    path,
                    format!("key {i} is missing from its bucket's filter ({bucket})"),
                ));
            }
        }
        Ok(())
    }
}

/// A dense table's codes in ascending order (see [`Table::codes`]).
pub(crate) struct TableCodes<'a> {
    body: &'a HashedBody,
    pos: usize,
}

impl<'a> Iterator for TableCodes<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let code = self.body.code_at(self.pos)?;
        self.pos += 1;
        Some(code)
    }
}

/// An iterator over a table's keys in ascending byte order (see [`Table::keys`]).
pub struct TableKeys<'a>(KeysInner<'a>);

enum KeysInner<'a> {
    Fst(fst::set::Stream<'a>),
    Hashed { body: &'a HashedBody, pos: usize },
}

impl fmt::Debug for TableKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TableKeys")
    }
}

impl Iterator for TableKeys<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        match &mut self.0 {
            KeysInner::Fst(stream) => stream.next().map(<[u8]>::to_vec),
            KeysInner::Hashed { body, pos } => {
                let code = body.code_at(*pos)?;
                *pos += 1;
                Some(body.scheme.decode(code).as_slice().to_vec())
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            KeysInner::Fst(_) => (0, None),
            KeysInner::Hashed { body, pos } => {
                let n = body.len.saturating_sub(*pos);
                (n, Some(n))
            }
        }
    }
}

/// Opens the table with [`Verification::Checksum`] and checks its whole contents: for a hashed
/// table that the codes strictly increase and each lies in its index bucket; for an fst table
/// the fst's own CRC, and that iterating it yields `key_count` keys of 1..=4096 bytes.
pub fn verify_table(path: &Path, store_id: &[u8; 16], expected: &TableInfo) -> Result<()> {
    Table::open(path, store_id, expected, Verification::Checksum)?.check_contents()
}

/// A writer that hashes (xxh3-64), optionally sums 16 KiB blocks (format-spec §5.3a), and
/// counts what passes through (also used for the membership index's postings file).
///
/// Small writes (a 32-byte code, a 4-byte posting) are gathered into 64 KiB before they are
/// hashed and handed on, so the hashers see large pieces; every write is accepted whole, so a
/// writer above it (fst's) never sees a short write.
pub(crate) struct HashingWriter {
    inner: ChunkWriter,
    hasher: Box<Xxh3>,
    /// Bytes accepted, gathered ones included.
    written: u64,
    blocks: Option<BlockHasher>,
    gathered: Vec<u8>,
}

/// How much [`HashingWriter`] gathers before hashing and writing.
const GATHER: usize = 64 << 10;

impl HashingWriter {
    /// A buffered (in aligned 2 MiB chunks), hashing writer over `file`.
    pub(crate) fn new(file: IoWriter) -> Self {
        HashingWriter::over(ChunkWriter::new(file))
    }

    /// A hashing writer over `inner` (a pack's writer, at a table's start).
    pub(crate) fn over(inner: ChunkWriter) -> Self {
        HashingWriter {
            inner,
            hasher: Box::default(),
            written: 0,
            blocks: None,
            gathered: Vec::new(),
        }
    }

    /// Starts summing blocks of 2^`shift` bytes from the next byte (the first, in practice).
    pub(crate) fn sum_blocks(&mut self, shift: u32) {
        self.blocks = Some(BlockHasher::new(shift));
    }

    /// Bytes accepted so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    fn pass_on(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.hasher.update(bytes);
        if let Some(blocks) = &mut self.blocks {
            blocks.update(bytes);
        }
        Ok(())
    }

    fn drain(&mut self) -> std::io::Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let gathered = std::mem::take(&mut self.gathered);
        let result = self.pass_on(&gathered);
        self.gathered = gathered;
        self.gathered.clear();
        result
    }

    /// The block sums of every byte accepted so far, little endian (empty unless
    /// [`sum_blocks`](HashingWriter::sum_blocks) was called); stops summing.
    pub(crate) fn take_block_sums(&mut self) -> std::io::Result<Vec<u8>> {
        self.drain()?;
        Ok(self
            .blocks
            .take()
            .map(BlockHasher::finish)
            .unwrap_or_default())
    }

    /// Hands on what is gathered; gives back the writer below and the xxh3-64 of every byte.
    pub(crate) fn finish(mut self) -> std::io::Result<(ChunkWriter, u64)> {
        self.drain()?;
        let digest = self.hasher.digest();
        Ok((self.inner, digest))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.gathered.len() + buf.len() > GATHER {
            self.drain()?;
        }
        if buf.len() >= GATHER {
            self.pass_on(buf)?;
        } else {
            if self.gathered.capacity() == 0 {
                self.gathered.reserve_exact(GATHER);
            }
            self.gathered.extend_from_slice(buf);
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

enum BuildState {
    Fst {
        builder: fst::SetBuilder<HashingWriter>,
        last: Vec<u8>,
    },
    Hashed {
        writer: HashingWriter,
        bucket_bits: u32,
        /// Entry b: the number of keys in buckets < b; filled lazily as keys arrive.
        index: Vec<u32>,
        /// Entry b: the filter of bucket b (see `filter_bit`).
        filters: Vec<u32>,
        last: Option<Code>,
        scheme: Scheme,
    },
    Done,
}

/// Writes a new table file, keys in strictly increasing order.
///
/// If the builder is dropped without [`finish`](TableBuilder::finish) succeeding, it removes
/// the partial file (best effort).
pub struct TableBuilder {
    path: PathBuf,
    /// A file of its own (removed if the builder is dropped unfinished), or a table inside
    /// a pack that a [`crate::compact::PackWriter`] owns.
    own_file: bool,
    kind: TableKind,
    header: [u8; HEADER_LEN],
    key_count: u64,
    state: BuildState,
    /// Set once the file is complete; until then, drop removes it.
    finished: bool,
}

impl fmt::Debug for TableBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableBuilder")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("key_count", &self.key_count)
            .finish()
    }
}

/// The bucket bits for `n` keys: 2.5 to 5 keys per bucket, so the index (8 bytes a bucket)
/// stays within 3.2 bytes a key.
fn bucket_bits_for(n: u64) -> u32 {
    let n = n.min(MAX_HASHED_KEYS);
    if n < 5 {
        0
    } else {
        (n * 2 / 5).ilog2().min(MAX_BUILD_BUCKET_BITS)
    }
}

impl TableBuilder {
    /// Creates `path` (which must not exist) and starts writing a table of `kind` there.
    ///
    /// `expected_len` is an upper-bound hint of the number of keys: it sizes a hashed table's
    /// bucket index (up to 4 bytes per 2 expected keys of memory while building). A smaller
    /// real count is fine (the index is shrunk at finish); a larger one only makes lookups
    /// search larger buckets.
    pub fn create(
        io: &Io,
        path: &Path,
        store_id: &[u8; 16],
        kind: TableKind,
        expected_len: u64,
    ) -> Result<TableBuilder> {
        let file = io.create_new(path).map_err(|e| Error::io(path, e))?;
        let file = io.writer(file, path);
        TableBuilder::start(
            path,
            true,
            HashingWriter::new(file),
            store_id,
            kind,
            expected_len,
        )
    }

    /// Starts a table inside a pack (format-spec §5.9) at `writer`'s position; `path` is the
    /// pack's, for errors. [`finish_member`](TableBuilder::finish_member) gives the writer
    /// back. Dropping the builder unfinished loses the writer: the pack is then abandoned.
    pub(crate) fn create_member(
        writer: ChunkWriter,
        path: &Path,
        store_id: &[u8; 16],
        kind: TableKind,
        expected_len: u64,
    ) -> Result<TableBuilder> {
        let writer = HashingWriter::over(writer);
        TableBuilder::start(path, false, writer, store_id, kind, expected_len)
    }

    fn start(
        path: &Path,
        own_file: bool,
        mut writer: HashingWriter,
        store_id: &[u8; 16],
        kind: TableKind,
        expected_len: u64,
    ) -> Result<TableBuilder> {
        let header = encode_header(kind, store_id);
        let mut builder = TableBuilder {
            path: path.to_path_buf(),
            own_file,
            kind,
            header,
            key_count: 0,
            state: BuildState::Done,
            finished: false,
        };
        // From here on, dropping `builder` removes the file.
        writer.sum_blocks(blocks::WRITE_BLOCK_SHIFT);
        writer.write_all(&header).map_err(|e| Error::io(path, e))?;
        builder.state = match kind {
            TableKind::Fst => BuildState::Fst {
                builder: fst::SetBuilder::new(writer).map_err(|e| fst_error(path, e))?,
                last: Vec::new(),
            },
            TableKind::Hashed | TableKind::Uuid => {
                let bucket_bits = bucket_bits_for(expected_len);
                BuildState::Hashed {
                    scheme: kind.scheme().unwrap_or(Scheme::LdHash),
                    writer,
                    bucket_bits,
                    index: Vec::with_capacity((1usize << bucket_bits) + 1),
                    filters: Vec::with_capacity((1usize << bucket_bits) + 1),
                    last: None,
                }
            }
        };
        Ok(builder)
    }

    /// Adds `key`, which must be greater than the previous key ([`Error::InvalidArgument`]
    /// otherwise), 1..=4096 bytes ([`Error::InvalidKey`]), and for a hashed table a hash key
    /// ([`is_hash_key`], else [`Error::InvalidArgument`]). A rejected key leaves the builder
    /// usable; an I/O error does not.
    pub fn push(&mut self, key: &[u8]) -> Result<()> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey { len: key.len() });
        }
        self.push_checked(key, None)
    }

    /// Adds the key whose code (in a dense table of the same kind) is `code`, without decoding
    /// it: what a merge of dense tables writes. The same order rules as [`push`].
    ///
    /// [`push`]: TableBuilder::push
    pub(crate) fn push_code(&mut self, code: &[u8]) -> Result<()> {
        self.push_checked(&[], Some(code))
    }

    /// `push` of `key`, or (dense tables) of the key whose code is `code`.
    fn push_checked(&mut self, key: &[u8], code: Option<&[u8]>) -> Result<()> {
        let out_of_order = || Error::InvalidArgument {
            what: "table key",
            detail: format!(
                "keys must be strictly increasing: {:?} is not greater than the previous key",
                String::from_utf8_lossy(key)
            ),
        };
        match &mut self.state {
            BuildState::Fst { .. } if code.is_some() => {
                return Err(Error::InvalidArgument {
                    what: "table builder",
                    detail: "codes go only into dense tables".into(),
                })
            }
            BuildState::Fst { builder, last } => {
                if self.key_count > 0 && key <= last.as_slice() {
                    return Err(out_of_order());
                }
                builder.insert(key).map_err(|e| fst_error(&self.path, e))?;
                last.clear();
                last.extend_from_slice(key);
            }
            BuildState::Hashed {
                writer,
                bucket_bits,
                index,
                filters,
                last,
                scheme,
            } => {
                let code = match code {
                    // A code from a table of the same kind: its bytes, zero-padded.
                    Some(given) => {
                        let mut full: Code = [0u8; code::MAX_CODE_LEN];
                        match full.get_mut(..given.len()) {
                            Some(dest) if given.len() == scheme.code_len() => {
                                dest.copy_from_slice(given)
                            }
                            _ => {
                                return Err(Error::InvalidArgument {
                                    what: "dense table code",
                                    detail: format!("a code of {} bytes", given.len()),
                                })
                            }
                        }
                        full
                    }
                    None => scheme.encode(key).ok_or_else(|| Error::InvalidArgument {
                        what: "dense table key",
                        detail: match scheme {
                            Scheme::LdHash => format!(
                                "{:?} is not a canonical 44-character base64 SHA-256 hash",
                                String::from_utf8_lossy(key)
                            ),
                            Scheme::Uuid => format!(
                                "{:?} is not a canonical lowercase UUID",
                                String::from_utf8_lossy(key)
                            ),
                        },
                    })?,
                };
                let code_len = scheme.code_len();
                if last.is_some_and(|l| code <= l) {
                    return Err(out_of_order());
                }
                if self.key_count >= MAX_HASHED_KEYS {
                    return Err(Error::InvalidArgument {
                        what: "hashed table",
                        detail: format!("more than {MAX_HASHED_KEYS} keys"),
                    });
                }
                let b = code::bucket(&code, *bucket_bits);
                let count = self.key_count as u32; // <= MAX_HASHED_KEYS, checked above
                while (index.len() as u64) <= b {
                    index.push(count);
                    filters.push(0);
                }
                let stored = code.get(..code_len).unwrap_or_default();
                if let Some(f) = filters.last_mut() {
                    *f |= filter_bit(stored);
                }
                writer
                    .write_all(stored)
                    .map_err(|e| Error::io(&self.path, e))?;
                *last = Some(code);
            }
            BuildState::Done => {
                return Err(Error::InvalidArgument {
                    what: "table builder",
                    detail: "the builder failed earlier".into(),
                })
            }
        }
        self.key_count += 1;
        Ok(())
    }

    /// Writes the footer, flushes and fsyncs the file (not its directory: the caller does
    /// that), and returns what the manifest should record.
    pub fn finish(mut self) -> Result<TableInfo> {
        let path = self.path.clone();
        let io = |e| Error::io(&path, e);
        let (writer, info) = self.finish_table()?;
        let file = writer.into_inner().map_err(io)?;
        let file = file.sync_all().map_err(io)?;
        drop(file);
        self.finished = true;
        Ok(info)
    }

    /// Writes the footer of a table inside a pack and gives the pack's writer back, with what
    /// the manifest should record (the table's length and checksum, not the pack's).
    pub(crate) fn finish_member(mut self) -> Result<(TableInfo, ChunkWriter)> {
        let (writer, info) = self.finish_table()?;
        self.finished = true;
        Ok((info, writer))
    }

    fn finish_table(&mut self) -> Result<(ChunkWriter, TableInfo)> {
        let path = self.path.clone();
        let io = |e| Error::io(&path, e);
        let state = std::mem::replace(&mut self.state, BuildState::Done);
        let (mut writer, footer) = match state {
            BuildState::Fst { builder, .. } => {
                let writer = builder.into_inner().map_err(|e| fst_error(&path, e))?;
                let end = usize::try_from(writer.written())
                    .map_err(|_| Error::corrupt(&path, "table too large for this platform"))?;
                let footer = Footer {
                    key_count: self.key_count,
                    data: HEADER_LEN..end,
                    index: end..end,
                    bucket_bits: 0,
                    sums: None,
                };
                (writer, footer)
            }
            BuildState::Hashed {
                mut writer,
                bucket_bits,
                mut index,
                mut filters,
                ..
            } => {
                let n = self.key_count as u32; // <= MAX_HASHED_KEYS, checked by push
                let full = (1usize << bucket_bits) + 1;
                index.resize(full, n);
                filters.resize(full, 0);
                // Fewer keys than announced: a coarser index of every 2^shift-th entry, each
                // filter the union of the fine buckets it covers.
                let bits = bucket_bits.min(bucket_bits_for(self.key_count));
                let step = 1usize << (bucket_bits - bits);
                let data_end = writer.written();
                // Written in pieces: a whole copy of a 2 GiB index beside the builder's own
                // would double the memory a 1B-key import peaks at.
                let mut buf = Vec::with_capacity(INDEX_WRITE_PIECE);
                for (j, start) in index.iter().step_by(step).enumerate() {
                    let covered = filters
                        .get(j * step..((j + 1) * step).min(full - 1))
                        .unwrap_or_default();
                    let filter = covered.iter().fold(0u32, |acc, f| acc | f);
                    buf.extend_from_slice(&start.to_le_bytes());
                    buf.extend_from_slice(&filter.to_le_bytes());
                    if buf.len() + INDEX_ENTRY_LEN > INDEX_WRITE_PIECE {
                        writer.write_all(&buf).map_err(io)?;
                        buf.clear();
                    }
                }
                drop(index);
                drop(filters);
                writer.write_all(&buf).map_err(io)?;
                let to_usize = |v: u64| {
                    usize::try_from(v)
                        .map_err(|_| Error::corrupt(&path, "table too large for this platform"))
                };
                let footer = Footer {
                    key_count: self.key_count,
                    data: HEADER_LEN..to_usize(data_end)?,
                    index: to_usize(data_end)?..to_usize(writer.written())?,
                    bucket_bits: bits,
                    sums: None,
                };
                (writer, footer)
            }
            BuildState::Done => {
                return Err(Error::InvalidArgument {
                    what: "table builder",
                    detail: "the builder failed earlier".into(),
                })
            }
        };
        // The block sums of every byte so far, then the footer, whose meta hash covers them.
        let sums = writer.take_block_sums().map_err(io)?;
        writer.write_all(&sums).map_err(io)?;
        let index_end = footer.index.end;
        let footer = Footer {
            sums: Some((blocks::WRITE_BLOCK_SHIFT, index_end..index_end + sums.len())),
            ..footer
        };
        writer
            .write_all(&encode_footer(&self.header, &sums, &footer))
            .map_err(io)?;
        let file_len = writer.written();
        let (writer, checksum) = writer.finish().map_err(io)?;
        let info = TableInfo {
            kind: self.kind,
            key_count: self.key_count,
            file_len,
            checksum,
        };
        Ok((writer, info))
    }
}

impl Drop for TableBuilder {
    fn drop(&mut self) {
        if !self.finished && self.own_file {
            self.state = BuildState::Done; // close the file first
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn fst_error(path: &Path, e: fst::Error) -> Error {
    match e {
        fst::Error::Io(e) => Error::io(path, e),
        other => Error::InvalidArgument {
            what: "table key",
            detail: format!("fst builder: {other}"),
        },
    }
}

#[cfg(test)]
mod tests;
