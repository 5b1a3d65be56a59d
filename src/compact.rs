//! Building tables: from a sorted key stream (bulk replace) and from a list's table merged
//! with its overlay (compaction), and packing compaction's tables into shared files.

use crate::entry::TableRef;
use crate::error::{Error, Result};
use crate::extsort::SortedKeys;
use crate::files::table_file_name;
use crate::io::{ChunkWriter, Io, CHUNK_LEN};
use crate::overlay::Run;
use crate::snapshot::{ListState, LoadedTable};
use crate::table::{
    encode_pack_header, KindChoice, Table, TableBuilder, TableKind, Verification, PACK_HEADER_LEN,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// An unchanged table of a file of its own stays there at compaction when it is larger than
/// this; a smaller one is copied into a pack (format-spec §5.9).
pub(crate) const OWN_FILE_MIN_LEN: u64 = 64 << 20;
/// Smaller tables in files of their own also stay there while the manifest would name fewer
/// than this many such files; past it, compaction copies them all into a pack (each is one
/// more file to open, and one more memory mapping when over 64 KiB).
pub(crate) const SMALL_OWN_FILES_MAX: usize = 1024;
/// A pack shorter than this, or less than half of it still named, has its named tables
/// copied into the new pack at compaction, and is then retired.
pub(crate) const PACK_KEEP_MIN_LEN: u64 = 64 << 20;
/// A pack takes no more tables once it is this long; the next starts a new pack.
pub(crate) const PACK_MAX_LEN: u64 = 1 << 30;
/// Tables start at multiples of this in a pack, so their codes keep the cache-line
/// alignment they have in a file of their own.
const PACK_ALIGN: u64 = 64;
/// Tables of at least this size start at a 2 MiB boundary in a pack (so a read of the whole
/// table after the page cache was dropped lands in whole 2 MiB folios, as a file of its own
/// does): the padding then wastes under 1/8 of the table. Smaller ones pack at 64 bytes;
/// aligning a 3 MiB table cost it 17% on average, and the pack is written in whole 2 MiB
/// chunks either way.
const PACK_ALIGN_CHUNK_MIN: u64 = 8 * CHUNK_LEN as u64;

/// The pack being written.
struct OpenPack {
    id: u64,
    path: PathBuf,
    /// `None` once a table failed half-way: the pack is then abandoned.
    writer: Option<ChunkWriter>,
    len: u64,
}

/// Writes compaction's tables into packs: files of many tables each (format-spec §5.9), so a
/// store's count of files (and of memory mappings in every process that reads it) does not
/// grow with its count of lists.
pub(crate) struct PackWriter<'a> {
    io: &'a Io,
    dir: &'a Path,
    store_id: [u8; 16],
    next_id: &'a dyn Fn() -> u64,
    current: Option<OpenPack>,
    /// Every pack created, finished or not (for the caller to remove on failure).
    created: Vec<u64>,
}

impl<'a> PackWriter<'a> {
    pub fn new(
        io: &'a Io,
        dir: &'a Path,
        store_id: &[u8; 16],
        next_id: &'a dyn Fn() -> u64,
    ) -> Self {
        PackWriter {
            io,
            dir,
            store_id: *store_id,
            next_id,
            current: None,
            created: Vec::new(),
        }
    }

    /// The ids of the packs this writer created.
    pub fn created(&self) -> &[u64] {
        &self.created
    }

    /// The writer positioned where a table of about `expected_bytes` starts: a new pack when
    /// none is open or the open one is full; past zero padding to [`PACK_ALIGN`] (or to
    /// [`CHUNK_LEN`] for a table of at least [`PACK_ALIGN_CHUNK_MIN`]).
    fn start_table(&mut self, expected_bytes: u64) -> Result<(u64, u64, PathBuf, ChunkWriter)> {
        if self.current.as_ref().is_some_and(|p| p.len >= PACK_MAX_LEN) {
            self.finish_current()?;
        }
        if self.current.is_none() {
            let id = (self.next_id)();
            let path = self.dir.join(table_file_name(id));
            let file = self.io.create_new(&path).map_err(|e| Error::io(&path, e))?;
            self.created.push(id);
            let mut writer = ChunkWriter::new(self.io.writer(file, &path));
            writer
                .write_all(&encode_pack_header(&self.store_id))
                .map_err(|e| Error::io(&path, e))?;
            self.current = Some(OpenPack {
                id,
                path,
                writer: Some(writer),
                len: PACK_HEADER_LEN as u64,
            });
        }
        let pack = self.current.as_mut().ok_or_else(abandoned)?;
        let mut writer = pack.writer.take().ok_or_else(abandoned)?;
        let align = if expected_bytes >= PACK_ALIGN_CHUNK_MIN {
            CHUNK_LEN as u64
        } else {
            PACK_ALIGN
        };
        let pad = pack.len.next_multiple_of(align) - pack.len;
        write_zeros(&mut writer, pad).map_err(|e| Error::io(&pack.path, e))?;
        pack.len += pad;
        Ok((pack.id, pack.len, pack.path.clone(), writer))
    }

    /// Gives the writer back after a table of `len` bytes.
    fn end_table(&mut self, writer: ChunkWriter, len: u64) -> Result<()> {
        let pack = self.current.as_mut().ok_or_else(abandoned)?;
        pack.writer = Some(writer);
        pack.len += len;
        Ok(())
    }

    /// Writes a table of `kind` from strictly increasing keys into the pack. `None` (and
    /// nothing written) when there are no keys.
    pub fn build<I>(
        &mut self,
        kind: TableKind,
        expected_len: u64,
        keys: I,
    ) -> Result<Option<TableRef>>
    where
        I: IntoIterator<Item = Result<Vec<u8>>>,
    {
        let mut keys = keys.into_iter().peekable();
        if keys.peek().is_none() {
            return Ok(None);
        }
        // Only for alignment: a dense table's code width, a rough 8 bytes a key for fst.
        let width = kind.scheme().map_or(8, |s| s.code_len() as u64);
        let (file_id, offset, path, writer) =
            self.start_table(expected_len.saturating_mul(width))?;
        let mut builder =
            TableBuilder::create_member(writer, &path, &self.store_id, kind, expected_len)?;
        for key in keys {
            builder.push(&key?)?;
        }
        let (info, writer) = builder.finish_member()?;
        self.end_table(writer, info.file_len)?;
        Ok(Some(TableRef {
            file_id,
            offset,
            info,
        }))
    }

    /// Copies `table` byte for byte into the pack (its checksum checked on the way: a
    /// damaged table is reported, never copied).
    pub fn copy(&mut self, table: &LoadedTable) -> Result<TableRef> {
        let info = table.table_ref.info;
        let bytes = table.table.bytes();
        let found = xxh3_64(bytes);
        if bytes.len() as u64 != info.file_len || found != info.checksum {
            return Err(Error::ChecksumMismatch {
                path: table.table.path().to_path_buf(),
                expected: info.checksum,
                found,
            });
        }
        let (file_id, offset, path, mut writer) = self.start_table(info.file_len)?;
        writer.write_all(bytes).map_err(|e| Error::io(&path, e))?;
        self.end_table(writer, info.file_len)?;
        Ok(TableRef {
            file_id,
            offset,
            info,
        })
    }

    fn finish_current(&mut self) -> Result<()> {
        if let Some(pack) = self.current.take() {
            let writer = pack.writer.ok_or_else(abandoned)?;
            let io = |e| Error::io(&pack.path, e);
            writer.into_inner().map_err(io)?.sync_all().map_err(io)?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the open pack (not the directory: the caller does that).
    pub fn finish(&mut self) -> Result<()> {
        self.finish_current()
    }
}

fn abandoned() -> Error {
    Error::InvalidArgument {
        what: "pack writer",
        detail: "a table failed half-way; the pack is abandoned".into(),
    }
}

fn write_zeros(writer: &mut ChunkWriter, mut n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let now = n.min(ZEROS.len() as u64) as usize;
        writer.write_all(ZEROS.get(..now).unwrap_or_default())?;
        n -= now as u64;
    }
    Ok(())
}

/// Which packs compaction keeps as they are: those at least [`PACK_KEEP_MIN_LEN`] long of
/// which at least half is still named. `named` lists every table the new state will stand
/// on, with the file it is in.
pub(crate) fn packs_to_keep<'t>(
    named: impl IntoIterator<Item = &'t LoadedTable>,
) -> std::collections::HashSet<u64> {
    let mut live: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for t in named {
        let r = t.table_ref;
        if r.offset == 0 || !seen.insert((r.file_id, r.offset)) {
            continue;
        }
        let entry = live.entry(r.file_id).or_insert((0, t.table.file().len()));
        entry.0 += r.info.file_len;
    }
    live.into_iter()
        .filter(|(_, (named, len))| *len >= PACK_KEEP_MIN_LEN && named.saturating_mul(2) >= *len)
        .map(|(id, _)| id)
        .collect()
}

/// Writes table `file_id` in `dir` from a sorter's keys. The kind is the shape the sorter
/// held every key as (hashed, uuid), else fst; dense keys go in as the sorter's codes.
/// Returns `None` and writes nothing when there are no keys. The file is fsynced; the
/// directory is not.
pub(crate) fn build_table(
    io: &Io,
    dir: &Path,
    store_id: &[u8; 16],
    file_id: u64,
    expected_len: u64,
    mut keys: SortedKeys,
) -> Result<Option<Arc<LoadedTable>>> {
    if keys.len_upper_bound() == 0 {
        return Ok(None);
    }
    // Keys of one dense shape come as their codes, which the table stores as they are.
    let coded = keys.scheme().is_some();
    let kind = TableKind::of_scheme(keys.scheme());
    let path = dir.join(table_file_name(file_id));
    let result = (|| {
        let mut builder = TableBuilder::create(io, &path, store_id, kind, expected_len)?;
        while let Some(stored) = keys.next_stored() {
            let stored = stored?;
            if coded {
                builder.push_code(stored)?;
            } else {
                builder.push(stored)?;
            }
        }
        let info = builder.finish()?;
        // This process just wrote and fsynced the file: the structure checks suffice.
        let table = Table::open(&path, store_id, &info, Verification::Structure)?;
        table.trust_written();
        Ok(Arc::new(LoadedTable {
            table_ref: TableRef {
                file_id,
                offset: 0,
                info,
            },
            table,
        }))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result.map(Some)
}

/// The kind of table a list's merged keys need (format-spec §5.6): its table's kind, or the
/// first added key's, while every key the overlay adds fits it; else fst.
fn merged_kind(list: &ListState, overlay: &Run) -> TableKind {
    let mut choice = KindChoice::starting_with(list.table.as_ref().map(|t| t.table.kind()));
    for (key, present) in overlay.iter() {
        if present && !choice.see(key) {
            break;
        }
    }
    choice.kind()
}

/// Builds, into `packs`, the table that replaces `list`'s table and overlay:
/// `(table ∪ added) \ removed`, streamed in key order. `Ok(None)` when the list is empty.
pub(crate) fn compact_list(
    packs: &mut PackWriter<'_>,
    list: &ListState,
) -> Result<Option<TableRef>> {
    let expected = list.len();
    let overlay = list.overlay.merged();
    packs.build(
        merged_kind(list, &overlay),
        expected,
        list.keys_with(overlay)?.map(Ok),
    )
}
