//! Loading a store's state from disk: the manifest's tables, then the log chain replayed.
//!
//! Used by the writer at open (which then repairs a torn tail and removes orphans) and by
//! read-only handles (which repair nothing).

use crate::change::List;
use crate::entry::{Entry, TableRef};
use crate::error::{Error, Result};
use crate::files::table_file_name;
use crate::index::MembershipIndex;
use crate::io::{Io, IoOp};
use crate::log::{log_file_name, scan_records, scan_records_repairing, LogHeader, LOG_HEADER_LEN};
use crate::manifest::Manifest;
use crate::segment_map::SegmentMap;
use crate::snapshot::{IndexState, ListState, LoadedTable, SegmentState, Snapshot};
use crate::table::{Residency, Table, TableFile, TableKind, Verification};
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Opened tables by file id and offset, so a table is mapped and verified once per process,
/// and every table of a pack shares one open file (one mapping: format-spec §5.9).
#[derive(Debug, Default)]
pub(crate) struct TableCache {
    // Keyed by small integers this process chose: Fx hashing, not SipHash, which a 100,000-
    // table open spent a tenth of its time in.
    tables: FxHashMap<(u64, u64), Arc<LoadedTable>>,
    files: FxHashMap<u64, Arc<TableFile>>,
    residency: Residency,
}

impl TableCache {
    /// An empty cache that keeps the files it opens where `residency` says.
    pub fn new(residency: Residency) -> Self {
        TableCache {
            residency,
            ..TableCache::default()
        }
    }

    /// The table `table_ref` names, opened (and verified) on first use.
    pub fn resolve(
        &mut self,
        io: &Io,
        dir: &Path,
        store_id: &[u8; 16],
        table_ref: &TableRef,
        verification: Verification,
        referenced_by: &str,
    ) -> Result<Arc<LoadedTable>> {
        let key = (table_ref.file_id, table_ref.offset);
        if let Some(found) = self.tables.get(&key) {
            if found.table_ref == *table_ref {
                return Ok(found.clone());
            }
        }
        let file = self.file(io, dir, table_ref.file_id, referenced_by)?;
        let table = Table::open_in(
            &file,
            table_ref.offset,
            store_id,
            &table_ref.info,
            verification,
        )?;
        let loaded = Arc::new(LoadedTable {
            table_ref: *table_ref,
            table,
        });
        self.tables.insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Opens and hashes whole the tables of `refs` that are not open yet on other threads
    /// (largest first, up to [`MAX_OPEN_THREADS`]), while this thread runs `meanwhile`. For
    /// the few large tables of a `Checksum` open, where hashing is most of the open's work,
    /// while this thread opens the many small ones. The error reported is `meanwhile`'s,
    /// else the first in `refs` order, whatever the threads' timing.
    fn open_large_while<F>(
        &mut self,
        io: &Io,
        dir: &Path,
        store_id: &[u8; 16],
        refs: &[&TableRef],
        referenced_by: &str,
        meanwhile: F,
    ) -> Result<()>
    where
        F: FnOnce(&mut Self) -> Result<()>,
    {
        let mut todo: Vec<(TableRef, Arc<TableFile>)> = Vec::with_capacity(refs.len());
        for &table_ref in refs {
            let open = self.tables.get(&(table_ref.file_id, table_ref.offset));
            if open.is_some_and(|t| t.table_ref == *table_ref)
                || todo.iter().any(|(t, _)| t == table_ref)
            {
                continue;
            }
            let file = self.file(io, dir, table_ref.file_id, referenced_by)?;
            todo.push((*table_ref, file));
        }
        let mut order: Vec<usize> = (0..todo.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(todo[i].0.info.file_len));
        // This thread runs `meanwhile`: the others hash.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1)
            .clamp(1, MAX_OPEN_THREADS)
            .min(todo.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let opened: Vec<std::sync::OnceLock<Result<Table>>> =
            todo.iter().map(|_| std::sync::OnceLock::new()).collect();
        let meanwhile = std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = order.get(n) else { break };
                    if let (Some((table_ref, file)), Some(slot)) = (todo.get(i), opened.get(i)) {
                        let _ = slot.set(Table::open_in(
                            file,
                            table_ref.offset,
                            store_id,
                            &table_ref.info,
                            Verification::Checksum,
                        ));
                    }
                });
            }
            meanwhile(self)
        });
        meanwhile?;
        for ((table_ref, _), table) in todo.into_iter().zip(opened) {
            // Every slot was set: the workers took every index of `order` between them.
            let Some(table) = table.into_inner() else {
                continue;
            };
            let loaded = Arc::new(LoadedTable {
                table_ref,
                table: table?,
            });
            self.tables
                .insert((table_ref.file_id, table_ref.offset), loaded);
        }
        Ok(())
    }

    /// The table file `file_id`, opened on first use.
    fn file(
        &mut self,
        io: &Io,
        dir: &Path,
        file_id: u64,
        referenced_by: &str,
    ) -> Result<Arc<TableFile>> {
        if let Some(file) = self.files.get(&file_id) {
            return Ok(file.clone());
        }
        let path = dir.join(table_file_name(file_id));
        // Only a name that leads nowhere is missing: a symbolic link loop or an unreadable
        // directory is an I/O error of its own (ELOOP, EACCES), reported as such.
        if !path.try_exists().map_err(|e| Error::io(&path, e))? {
            return Err(Error::MissingFile {
                path,
                referenced_by: referenced_by.to_owned(),
            });
        }
        io.check(IoOp::Read, &path)
            .map_err(|e| Error::io(&path, e))?;
        let file = TableFile::open_in(&path, self.residency)?;
        self.files.insert(file_id, file.clone());
        Ok(file)
    }

    /// Adds a table the caller opened itself.
    pub fn insert(&mut self, loaded: Arc<LoadedTable>) {
        let t = loaded.table_ref;
        self.files
            .entry(t.file_id)
            .or_insert_with(|| loaded.table.file().clone());
        self.tables.insert((t.file_id, t.offset), loaded);
    }

    /// Forgets tables and files no one else holds.
    pub fn prune(&mut self) {
        self.tables.retain(|_, t| Arc::strong_count(t) > 1);
        self.files.retain(|_, f| Arc::strong_count(f) > 1);
    }
}

/// The most threads [`TableCache::open_large_while`] hashes tables on.
const MAX_OPEN_THREADS: usize = 8;

/// Tables at least this long are opened (and hashed whole) in parallel at a `Checksum` open.
const PARALLEL_OPEN_MIN_BYTES: u64 = 1 << 20;

/// Where replay stopped: the live (last) log of the chain.
#[derive(Debug, Clone)]
pub(crate) struct LiveLog {
    pub number: u64,
    pub path: PathBuf,
    /// Offset just past the last whole record.
    pub valid_end: u64,
    pub next_seq: u64,
}

/// A store's state as loaded from disk.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub manifest: Manifest,
    pub snapshot: Snapshot,
    pub live_log: LiveLog,
    /// Every log number of the chain, in order.
    pub log_numbers: Vec<u64>,
    /// Every table the log chain references (replace entries).
    pub log_tables: Vec<TableRef>,
    /// Bytes of log records in the chain (headers excluded).
    pub log_bytes: u64,
}

/// The base snapshot a manifest describes (no log applied).
pub(crate) fn base_snapshot(
    io: &Io,
    dir: &Path,
    manifest: &Manifest,
    cache: &mut TableCache,
    verification: Verification,
) -> Result<Snapshot> {
    let mut snapshot = Snapshot {
        cursor: manifest.cursor.clone(),
        synchronized_on: manifest.synchronized_on,
        last_seq: manifest.log_first_seq.saturating_sub(1),
        ..Snapshot::default()
    };
    cache.tables.reserve(manifest.segments.len());
    let resolve = |cache: &mut TableCache, table_ref: &TableRef| {
        cache.resolve(
            io,
            dir,
            &manifest.store_id,
            table_ref,
            verification,
            crate::manifest::MANIFEST_FILE,
        )
    };
    if verification == Verification::Checksum {
        // Hash the large tables on other threads while this one opens the small ones; the
        // loop below then finds every table open.
        let (large, small): (Vec<&TableRef>, Vec<&TableRef>) = manifest
            .segments
            .iter()
            .flat_map(|record| record.tables.iter().flatten())
            .chain(
                manifest
                    .index
                    .as_ref()
                    .and_then(|index| index.keys.as_ref()),
            )
            .partition(|t| t.info.file_len >= PARALLEL_OPEN_MIN_BYTES);
        if !large.is_empty() {
            cache.open_large_while(
                io,
                dir,
                &manifest.store_id,
                &large,
                crate::manifest::MANIFEST_FILE,
                |cache| {
                    small
                        .into_iter()
                        .try_for_each(|t| resolve(cache, t).map(drop))
                },
            )?;
        }
    }
    let mut names: Vec<Arc<str>> = Vec::with_capacity(manifest.segments.len());
    let mut entries = Vec::with_capacity(manifest.segments.len());
    // The tables the index was built from, by ordinal: what its candidates are confirmed in.
    let mut indexed = Vec::new();
    for record in &manifest.segments {
        let mut lists: [ListState; 2] = Default::default();
        for (slot, table) in lists.iter_mut().zip(&record.tables) {
            if let Some(table_ref) = table {
                slot.table = Some(resolve(cache, table_ref)?);
            }
        }
        if manifest.index.is_some() {
            indexed.push(lists.each_ref().map(|l| {
                l.table
                    .clone()
                    .filter(|t| t.table.kind() == TableKind::Hashed)
            }));
        }
        // A copy next to the state allocated below, not the record's: a lookup by ref reads
        // both, and adjacent they share cache lines (measured: ~150 ns a `check` at 100,000
        // segments).
        let name: Arc<str> = Arc::from(&*record.segment);
        names.push(name.clone());
        entries.push((
            name,
            Arc::new(SegmentState {
                kind: record.kind.clone(),
                details: record.details.clone(),
                lists,
            }),
        ));
    }
    snapshot.segments = SegmentMap::from_sorted(entries);
    if let Some(index) = &manifest.index {
        let keys = match &index.keys {
            Some(keys) => Some(resolve(cache, keys)?),
            None => None,
        };
        let opened = MembershipIndex::open(io, dir, &manifest.store_id, index, keys, verification)?;
        // The segments' names in manifest order: ordinal i is record i.
        let ordinals = names;
        // Lists in fst tables are not indexed: membership probes them one by one.
        for (record, segment) in manifest.segments.iter().zip(&ordinals) {
            for (list, table) in List::BOTH.into_iter().zip(&record.tables) {
                if table.is_some_and(|t| t.info.kind != TableKind::Hashed) {
                    snapshot.probe.insert((segment.clone(), list));
                }
            }
        }
        snapshot.index = Some(Arc::new(IndexState {
            index: opened,
            ordinals,
            tables: indexed,
        }));
    }
    Ok(snapshot)
}

/// Reads one log file whole and checks its header against what the chain expects.
pub(crate) fn read_log(
    io: &Io,
    dir: &Path,
    number: u64,
    store_id: &[u8; 16],
    first_seq: u64,
) -> Result<(PathBuf, Vec<u8>)> {
    let path = dir.join(log_file_name(number));
    let bytes = match io.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingFile {
                path,
                referenced_by: if number == 0 {
                    crate::manifest::MANIFEST_FILE.to_owned()
                } else {
                    format!(
                        "{} or {}",
                        crate::manifest::MANIFEST_FILE,
                        log_file_name(number.saturating_sub(1))
                    )
                },
            })
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let header = LogHeader::decode(&bytes, &path)?;
    if header.store_id != *store_id {
        return Err(Error::ForeignFile { path });
    }
    if header.number != number || header.first_seq != first_seq {
        return Err(Error::corrupt(
            &path,
            format!(
                "log header says number {} first sequence {}, expected {number} and {first_seq}",
                header.number, header.first_seq
            ),
        ));
    }
    Ok((path, bytes))
}

/// The chain ends at log `number` (no `Rotate` record). A log `number + 1` may exist only as
/// the leftover of a rotation that crashed before its `Rotate` record was durable: then it
/// holds no record. One that holds records means log `number` lost its end (it was cut short
/// after the rotation), and replaying without it would silently drop acknowledged writes.
fn check_no_successor(
    io: &Io,
    dir: &Path,
    number: u64,
    store_id: &[u8; 16],
    live_path: &Path,
) -> Result<()> {
    let Some(successor) = number.checked_add(1) else {
        return Ok(());
    };
    let next = dir.join(log_file_name(successor));
    let bytes = match io.read(&next) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&next, e)),
    };
    let ours = LogHeader::decode(&bytes, &next).is_ok_and(|h| h.store_id == *store_id);
    if ours && bytes.len() > LOG_HEADER_LEN {
        return Err(Error::corrupt(
            live_path,
            format!(
                "ends without a rotate record, but {} holds records: this log was cut short",
                log_file_name(successor)
            ),
        ));
    }
    Ok(())
}

/// Loads the manifest's tables and replays the log chain. With `repair` (a writer opened
/// with [`crate::Options::repair`]), a damaged last record of the live log ends the chain
/// before it, as a torn tail does, instead of failing the load.
pub(crate) fn load(
    io: &Io,
    dir: &Path,
    manifest: Manifest,
    cache: &mut TableCache,
    verification: Verification,
    repair: bool,
) -> Result<Loaded> {
    let mut snapshot = base_snapshot(io, dir, &manifest, cache, verification)?;
    let mut number = manifest.log_number;
    let mut next_seq = manifest.log_first_seq;
    let mut log_numbers = Vec::new();
    let mut log_tables = Vec::new();
    let mut log_bytes = 0u64;
    loop {
        let (path, bytes) = read_log(io, dir, number, &manifest.store_id, next_seq)?;
        log_numbers.push(number);
        let body = bytes.get(LOG_HEADER_LEN..).unwrap_or_default();
        let scan = if repair {
            scan_records_repairing(body, LOG_HEADER_LEN as u64, next_seq, &path)?
        } else {
            scan_records(body, LOG_HEADER_LEN as u64, next_seq, &path)?
        };
        let name = log_file_name(number);
        let mut next_log = None;
        for (seq, entry) in &scan.records {
            if let Entry::ReplaceList { table: Some(t), .. } = entry {
                log_tables.push(*t);
            }
            if let Entry::Rotate { next_log: n } = entry {
                next_log = Some(*n);
            }
            snapshot.apply(*seq, entry, &mut |t| {
                cache.resolve(io, dir, &manifest.store_id, t, verification, &name)
            })?;
        }
        log_bytes += scan.valid_end - LOG_HEADER_LEN as u64;
        match next_log {
            Some(n) if Some(n) == number.checked_add(1) => {
                number = n;
                next_seq = scan.next_seq;
            }
            Some(n) => {
                return Err(Error::corrupt(
                    &path,
                    format!("rotates to log {n}, expected {}", number.wrapping_add(1)),
                ))
            }
            None => {
                check_no_successor(io, dir, number, &manifest.store_id, &path)?;
                let live_log = LiveLog {
                    number,
                    path,
                    valid_end: scan.valid_end,
                    next_seq: scan.next_seq,
                };
                return Ok(Loaded {
                    manifest,
                    snapshot,
                    live_log,
                    log_numbers,
                    log_tables,
                    log_bytes,
                });
            }
        }
    }
}
