//! The membership index: which segments' lists may hold a key, in one probe.
//!
//! Built at compaction over every hashed table the new manifest names (LaunchDarkly context
//! hashes: what SDKs ask `membership` with). Ordinals index the manifest's segment list. Lists
//! held in general-key (fst) tables, and lists changed since the index was built, are probed
//! one by one beside it (see `Snapshot::membership`).
//!
//! Two kinds, both in a postings file `x-*.ssidx` (format-spec §5.8):
//! * the **filter** index (postings version 3, what compaction writes): per indexed (key,
//!   list) pair a one-byte tag and the posting, in buckets by the key's top bits. It holds no
//!   copy of the keys, so its postings are candidates, each confirmed in its list's table;
//! * the **keyed** index (versions 1 and 2, written by earlier releases): a key table of every
//!   distinct key beside exact postings.

mod filter;
mod keyed;

use crate::change::List;
use crate::error::{Error, Result};
use crate::io::{Io, IoOp};
use crate::snapshot::LoadedTable;
use crate::table::code::Code;
use crate::table::{
    read_u32, read_u64, BlockCheck, TableCodes, TableFile, TableKind, Verification,
};
use filter::FilterIndex;
use keyed::KeyedIndex;
use std::path::Path;
use std::sync::Arc;

#[cfg(test)]
mod tests;

pub(crate) use filter::build_index;
#[cfg(test)]
pub(crate) use keyed::build_keyed_index;

/// The first eight bytes of a postings file.
pub const POSTINGS_MAGIC: [u8; 8] = *b"SEGSIDX\0";
/// The postings format version this build writes: the filter index. It reads versions 1 and 2
/// (the keyed index) too.
pub const POSTINGS_VERSION: u32 = 3;
const HEADER_LEN: usize = 32;

/// The file name of postings file `id`.
pub fn postings_file_name(id: u64) -> String {
    crate::files::numbered_name("x-", id, ".ssidx")
}

/// Parses a postings file name back to its id.
pub fn parse_postings_file_name(name: &str) -> Option<u64> {
    crate::files::parse_numbered_name(name, "x-", ".ssidx")
}

/// What the manifest records about the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRef {
    /// The key table (hashed kind) of a keyed index; `None` for a filter index.
    pub keys: Option<crate::entry::TableRef>,
    /// Id of the postings file.
    pub postings_id: u64,
    /// Postings entries.
    pub entry_count: u64,
    /// Postings file length.
    pub postings_len: u64,
    /// xxh3-64 of the whole postings file.
    pub postings_checksum: u64,
}

/// An opened index of either kind.
#[derive(Debug)]
pub(crate) enum MembershipIndex {
    Filter(FilterIndex),
    Keyed(KeyedIndex),
}

/// Encodes a posting: the segment ordinal and the list.
fn posting(ordinal: u32, list: List) -> u32 {
    (ordinal << 1) | list.index() as u32
}

/// Decodes a posting.
fn unposting(p: u32) -> (u32, List) {
    let list = if p & 1 == 0 {
        List::Included
    } else {
        List::Excluded
    };
    (p >> 1, list)
}

/// A hashed table's codes; any other kind is an error (only hashed tables are indexed).
fn hashed_codes(table: &LoadedTable) -> Result<TableCodes<'_>> {
    match table.table.codes()? {
        Some(codes) if table.table.kind() == TableKind::Hashed => Ok(codes),
        _ => Err(Error::InvalidArgument {
            what: "membership index",
            detail: format!("{:?} is not a hashed table", table.table.path()),
        }),
    }
}

/// A postings file's meta hash (versions 2 and 3): xxh3-64 of its header, its block sums and
/// the trailer's first 24 bytes, all of which `sums_and_trailer` holds after the header.
fn meta_hash(header: &[u8], sums_and_trailer: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(header);
    h.update(sums_and_trailer);
    h.digest()
}

impl MembershipIndex {
    /// Opens the postings file `index` names; `keys` is the opened key table of a keyed index
    /// (`None` for a filter index, which has none).
    pub(crate) fn open(
        io: &Io,
        dir: &Path,
        store_id: &[u8; 16],
        index: &IndexRef,
        keys: Option<Arc<LoadedTable>>,
        verification: Verification,
    ) -> Result<MembershipIndex> {
        let path = dir.join(postings_file_name(index.postings_id));
        io.check(IoOp::Read, &path)
            .map_err(|e| Error::io(&path, e))?;
        let map = TableFile::open(&path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::MissingFile {
                    path: path.clone(),
                    referenced_by: crate::manifest::MANIFEST_FILE.to_owned(),
                }
            }
            other => other,
        })?;
        let version = check_header(&map, &path, store_id, index)?;
        match (version, keys) {
            (1 | 2, Some(keys)) => Ok(MembershipIndex::Keyed(KeyedIndex::open(
                map,
                path,
                version,
                index,
                keys,
                verification,
            )?)),
            (filter::VERSION, None) => Ok(MembershipIndex::Filter(FilterIndex::open(
                map,
                path,
                index,
                verification,
            )?)),
            (found, keys) => Err(Error::corrupt(
                &path,
                format!(
                    "postings version {found}, but the manifest names {}",
                    if keys.is_some() {
                        "a keyed index (versions 1 and 2)"
                    } else {
                        "a filter index (version 3)"
                    }
                ),
            )),
        }
    }

    /// Calls `found` with each (segment ordinal, list) the index names for the key whose code
    /// is `code`. Fails when a lookup opened with [`Verification::Structure`] finds a block it
    /// reads first corrupt, or when `found` fails.
    #[inline]
    pub(crate) fn for_each_candidate(
        &self,
        code: &Code,
        found: impl FnMut(u32, List) -> Result<()>,
    ) -> Result<()> {
        match self {
            MembershipIndex::Filter(f) => f.for_each_candidate(code, found),
            MembershipIndex::Keyed(k) => k.lookup(code)?.try_for_each({
                let mut found = found;
                move |(o, l)| found(o, l)
            }),
        }
    }

    /// Whether each candidate must be confirmed in its list's table: a filter index's tags
    /// can match keys the list lacks; a keyed index's postings are exact.
    #[inline]
    pub(crate) fn needs_confirming(&self) -> bool {
        matches!(self, MembershipIndex::Filter(_))
    }

    /// Checks every offset and entry against the number of segments (for `verify`).
    pub(crate) fn check_structure(&self, segments: usize) -> Result<()> {
        match self {
            MembershipIndex::Filter(f) => f.check_structure(segments),
            MembershipIndex::Keyed(k) => k.check_structure(segments),
        }
    }

    /// Checks that the index says exactly what `lists` — the manifest's hashed tables, as
    /// (segment ordinal, list, table) in manifest order — hold (invariant M4). Used by `verify`.
    pub(crate) fn check_against(&self, lists: &[(u32, List, Arc<LoadedTable>)]) -> Result<()> {
        match self {
            MembershipIndex::Filter(f) => f.check_against(lists),
            MembershipIndex::Keyed(k) => k.check_against(lists),
        }
    }
}

/// The postings file's own checks once its sections add up: with `whole`, the whole-file
/// xxh3-64 against its trailer and the manifest; else the meta hash over the header and bytes
/// `covered ..` (sums and trailer), after which a lookup checks each 2^`shift` block of bytes
/// `0 .. covered` on first touch (the returned [`BlockCheck`]).
fn check_postings(
    bytes: &[u8],
    path: &Path,
    index: &IndexRef,
    whole: bool,
    covered: usize,
    shift: u32,
) -> Result<Option<BlockCheck>> {
    if whole {
        let body = bytes
            .get(..bytes.len().saturating_sub(8))
            .unwrap_or_default();
        let found = xxhash_rust::xxh3::xxh3_64(body);
        let stored = read_u64(bytes, bytes.len().saturating_sub(8)).unwrap_or(0);
        if found != stored || found != index.postings_checksum {
            return Err(Error::ChecksumMismatch {
                path: path.to_owned(),
                expected: index.postings_checksum,
                found,
            });
        }
        return Ok(None);
    }
    let trailer_end = bytes.len().saturating_sub(16);
    let stored = read_u64(bytes, trailer_end).unwrap_or(0);
    let found = meta_hash(
        bytes.get(..HEADER_LEN).unwrap_or_default(),
        bytes.get(covered..trailer_end).unwrap_or_default(),
    );
    if found != stored {
        return Err(Error::corrupt(
            path,
            format!("header/trailer hash mismatch: stored {stored:#x}, computed {found:#x}"),
        ));
    }
    Ok(Some(BlockCheck::new(0, covered, shift, covered)))
}

/// The checks every postings file passes before its version's own: the length the manifest
/// recorded, the magic, a known version, the store id. Returns the version.
fn check_header(
    map: &TableFile,
    path: &Path,
    store_id: &[u8; 16],
    index: &IndexRef,
) -> Result<u32> {
    let bytes = map.bytes();
    let corrupt = |d: String| Error::corrupt(path, d);
    if bytes.len() as u64 != index.postings_len {
        return Err(corrupt(format!(
            "{} bytes, the manifest says {}",
            bytes.len(),
            index.postings_len
        )));
    }
    if bytes.get(..8) != Some(&POSTINGS_MAGIC[..]) {
        return Err(corrupt("not a segstore postings file (bad magic)".into()));
    }
    let version = read_u32(bytes, 8).unwrap_or(0);
    if version == 0 || version > POSTINGS_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: POSTINGS_VERSION,
        });
    }
    if bytes.get(16..32) != Some(&store_id[..]) {
        return Err(Error::ForeignFile {
            path: path.to_owned(),
        });
    }
    Ok(version)
}
