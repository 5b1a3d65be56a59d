//! The writer: one per store directory, guarded by a lock file.

use crate::change::{Batch, List};
use crate::compact::{
    build_table, compact_list, packs_to_keep, PackWriter, OWN_FILE_MIN_LEN, SMALL_OWN_FILES_MAX,
};
use crate::entry::{Details, Entry, TableRef, MAX_DESCRIPTION_LEN, MAX_TAGS};
use crate::error::{Error, Result};
use crate::extsort::{sort_keys, SortOptions};
use crate::files::{parse_table_file_name, table_file_name, LOCK_FILE};
use crate::fsutil::sync_dir;
use crate::index::{build_index, parse_postings_file_name, postings_file_name};
use crate::io::Io;
use crate::key::{validate_key, validate_kind, validate_ref, MAX_NAME_LEN};
use crate::log::{
    encode_record, frame_entry, log_file_name, parse_log_file_name, LogHeader, LogWriter,
};
use crate::manifest::{Manifest, SegmentRecord, MANIFEST_FILE};
use crate::options::Options;
use crate::recovery::{base_snapshot, load, TableCache};
use crate::snapshot::{LoadedTable, Snapshot, DEFAULT_KIND};
use crate::table::{TableKind, Verification};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// What a bulk replace did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceStats {
    /// Distinct keys now in the list.
    pub keys: u64,
    /// Keys read, duplicates included.
    pub keys_read: u64,
    /// The table kind chosen (`None` for an empty list).
    pub kind: Option<TableKind>,
    /// Sorted runs spilled to disk (0 when the input fit the memory budget).
    pub spilled_runs: usize,
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionStats {
    /// Bytes of the tables the store stood on and of its log records, before.
    pub bytes_before: u64,
    /// Bytes of the tables the new manifest names and of log records written meanwhile.
    pub bytes_after: u64,
    /// Tables written.
    pub tables_written: usize,
    /// Files removed.
    pub files_retired: usize,
}

/// The writer's mutable state, behind one mutex.
#[derive(Debug)]
struct WriterState {
    log: LogWriter,
    next_seq: u64,
    manifest: Manifest,
    /// Record bytes in the log chain since the manifest.
    log_bytes: u64,
    /// Small tables of their own that the log chain names (bulk replaces since the
    /// manifest): compaction packs them (see [`COMPACT_AFTER_LOG_TABLES`]).
    log_tables: u64,
    /// Hashed tables that bulk replaces in the log chain wrote: lists the membership index
    /// does not cover yet (see [`COMPACT_FOR_INDEX_LISTS`]).
    log_hashed_tables: u64,
    /// Set while a compaction runs: the entries written since it rotated the log.
    since_rotation: Option<Vec<(u64, Entry)>>,
    /// Set after a failure that leaves durability unknown.
    poisoned: Option<String>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    io: Io,
    options: Options,
    store_id: [u8; 16],
    lock: HeldLock,
    current: ArcSwap<Snapshot>,
    writer: Mutex<WriterState>,
    compaction: Mutex<()>,
    tables: Mutex<TableCache>,
    next_file_id: AtomicU64,
    compact_signal: Mutex<Option<mpsc::Sender<()>>>,
    last_background_error: Mutex<Option<String>>,
}

/// A store opened for writing. Cheap to share across threads (`&Store` is enough for every
/// call); reads never wait for writes.
///
/// ```
/// use segstore::{Batch, List, Options, Status, Store};
/// let dir = tempfile::tempdir()?;
/// let store = Store::create(dir.path(), Options::default())?;
/// store.write(Batch::new().add("beta.g1", List::Included, "user-1"))?;
/// assert_eq!(store.snapshot().check("beta.g1", b"user-1")?, Status::Included);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    compactor: Option<JoinHandle<()>>,
}

/// The writer's lock: the open `LOCK` file it holds the `flock` on, and that file's identity,
/// to notice when the name `LOCK` no longer leads to it.
#[derive(Debug)]
struct HeldLock {
    path: PathBuf,
    _file: File,
    dev: u64,
    ino: u64,
    /// Set once the lock was found lost; it stays lost.
    lost: AtomicBool,
}

impl HeldLock {
    fn new(path: PathBuf, file: File) -> Result<HeldLock> {
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        Ok(HeldLock {
            path,
            _file: file,
            dev: meta.dev(),
            ino: meta.ino(),
            lost: AtomicBool::new(false),
        })
    }

    /// Fails with [`Error::LockLost`] unless `LOCK` is still the file this writer locked. A
    /// deleted or replaced `LOCK` lets another writer take a lock of its own on a new file,
    /// so from then on this writer must not write anything.
    fn check(&self) -> Result<()> {
        if !self.lost.load(Ordering::SeqCst) {
            match std::fs::metadata(&self.path) {
                Ok(m) if m.dev() == self.dev && m.ino() == self.ino => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&self.path, e)),
            }
            self.lost.store(true, Ordering::SeqCst);
        }
        Err(Error::LockLost {
            path: self.path.clone(),
        })
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = crate::io::open_regular(
        &path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
    .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_owned(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

fn new_store_id(dir: &Path) -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.write(dir.as_os_str().as_encoded_bytes());
    let seed = h.finish();
    xxhash_rust::xxh3::xxh3_128_with_seed(b"segstore store id", seed).to_le_bytes()
}

impl Store {
    /// Creates a new, empty store in `dir` (created if missing). Fails with
    /// [`Error::AlreadyExists`] if a store is there.
    pub fn create(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        if manifest_path
            .try_exists()
            .map_err(|e| Error::io(&manifest_path, e))?
        {
            return Err(Error::AlreadyExists {
                path: dir.to_owned(),
            });
        }
        let store_id = new_store_id(dir);
        let io = options.io();
        // A create that crashed before its manifest may have left the first log.
        let first_log = dir.join(log_file_name(1));
        if first_log
            .try_exists()
            .map_err(|e| Error::io(&first_log, e))?
        {
            io.remove_file(&first_log)
                .map_err(|e| Error::io(&first_log, e))?;
        }
        LogWriter::create(
            &io,
            dir,
            &LogHeader {
                store_id,
                number: 1,
                first_seq: 1,
            },
        )?;
        let manifest = Manifest {
            store_id,
            generation: 1,
            log_number: 1,
            log_first_seq: 1,
            next_file_id: 1,
            synchronized_on: None,
            cursor: String::new(),
            segments: Vec::new(),
            index: None,
        };
        manifest.store(&io, dir)?;
        drop(lock);
        Store::open(dir, options)
    }

    /// Opens an existing store for writing: replays the log, truncates a torn last record,
    /// removes files no manifest or log names (left by a crash), and starts the background
    /// compactor if enabled.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let dir = dir.as_ref().to_owned();
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::NotFound { path: dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound { path: dir })
            }
            Err(e) => return Err(Error::io(&dir, e)),
        }
        let lock = HeldLock::new(dir.join(LOCK_FILE), lock_dir(&dir)?)?;
        let io = options.io();
        let manifest = Manifest::load(&io, &dir)?;
        let mut cache = TableCache::new(options.residency);
        let loaded = load(
            &io,
            &dir,
            manifest,
            &mut cache,
            options.verification,
            options.repair,
        )?;
        let live = &loaded.live_log;
        let log = LogWriter::open(&io, &live.path, live.number, live.valid_end)?;
        let store_id = loaded.manifest.store_id;
        let max_id = remove_orphans(
            &io,
            &dir,
            &loaded.manifest,
            &loaded.log_tables,
            &loaded.log_numbers,
        )?;
        let next_file_id = max_id
            .map_or(1, |m| m.saturating_add(1))
            .max(loaded.manifest.next_file_id);
        let inner = Arc::new(Inner {
            dir,
            io,
            store_id,
            lock,
            current: ArcSwap::from_pointee(loaded.snapshot),
            writer: Mutex::new(WriterState {
                log,
                next_seq: loaded.live_log.next_seq,
                manifest: loaded.manifest,
                log_bytes: loaded.log_bytes,
                log_tables: loaded
                    .log_tables
                    .iter()
                    .filter(|t| is_small_own_file(t))
                    .count() as u64,
                log_hashed_tables: loaded
                    .log_tables
                    .iter()
                    .filter(|t| t.info.kind == TableKind::Hashed)
                    .count() as u64,
                since_rotation: None,
                poisoned: None,
            }),
            compaction: Mutex::new(()),
            tables: Mutex::new(cache),
            next_file_id: AtomicU64::new(next_file_id),
            compact_signal: Mutex::new(None),
            last_background_error: Mutex::new(None),
            options,
        });
        let compactor = if inner.options.auto_compact {
            let (tx, rx) = mpsc::channel::<()>();
            *inner.compact_signal.lock() = Some(tx);
            let worker = Arc::clone(&inner);
            Some(
                std::thread::Builder::new()
                    .name("segstore-compactor".into())
                    .spawn(move || {
                        let mut rest_until: Option<std::time::Instant> = None;
                        // Writes during a compaction do not signal (it takes their state only
                        // in part): after each, look again whether another is due.
                        let mut due = false;
                        loop {
                            if !due && rx.recv().is_err() {
                                break;
                            }
                            // Rest as long as the last compaction took, so that background
                            // compaction takes at most about half of one core however often
                            // writes ask for it; signals meanwhile are merged into one.
                            while let Some(left) = rest_until
                                .and_then(|t| t.checked_duration_since(std::time::Instant::now()))
                            {
                                if let Err(mpsc::RecvTimeoutError::Disconnected) =
                                    rx.recv_timeout(left)
                                {
                                    return;
                                }
                            }
                            while rx.try_recv().is_ok() {}
                            let started = std::time::Instant::now();
                            let compacted = worker.compact(Packing::WhenMany);
                            if let Err(e) = &compacted {
                                *worker.last_background_error.lock() = Some(e.to_string());
                            }
                            let took = started.elapsed().min(COMPACTOR_MAX_REST);
                            rest_until = Some(std::time::Instant::now() + took);
                            // (After a failure, only the next write tries again.)
                            due = compacted.is_ok() && {
                                let w = worker.writer.lock();
                                w.poisoned.is_none() && worker.wants_compaction(&w)
                            };
                        }
                    })
                    .map_err(|e| Error::io(&inner.dir, e))?,
            )
        } else {
            None
        };
        Ok(Store { inner, compactor })
    }

    /// Opens the store in `dir`, creating it if there is none.
    pub fn open_or_create(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        match Store::open(dir.as_ref(), options.clone()) {
            Err(Error::NotFound { .. }) => Store::create(dir, options),
            other => other,
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The current state. Never waits; the snapshot never changes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Applies a batch atomically and durably. With `expect_cursor` set, the batch applies
    /// only if the stored cursor equals it ([`Error::CursorMismatch`] otherwise, and nothing
    /// is written). Returns the record's sequence number.
    pub fn write(&self, batch: Batch) -> Result<u64> {
        validate_batch(&batch)?;
        let mut w = self.inner.writer.lock();
        usable(&w)?;
        if let Some(expected) = &batch.expect_cursor {
            let found = &self.inner.current.load().cursor;
            if expected != found {
                return Err(Error::CursorMismatch {
                    expected: expected.clone(),
                    found: found.clone(),
                });
            }
        }
        let entry = Entry::Write {
            changes: batch.changes,
            set_cursor: batch.set_cursor,
            synchronized_on: batch.synchronized_on,
        };
        self.inner.commit(&mut w, entry)
    }

    /// Sets `synchronized_on` (Unix ms).
    pub fn mark_synced(&self, unix_ms: u64) -> Result<u64> {
        self.write(Batch::new().synchronized_on(unix_ms))
    }

    /// Creates an empty segment. [`Error::SegmentExists`] if the ref is taken.
    pub fn create_segment(&self, segment: &str, kind: &str) -> Result<()> {
        validate_ref(segment)?;
        validate_kind(kind)?;
        let mut w = self.inner.writer.lock();
        usable(&w)?;
        if self.inner.current.load().segments.contains_key(segment) {
            return Err(Error::SegmentExists(segment.to_owned()));
        }
        let entry = Entry::CreateSegment {
            segment: segment.to_owned(),
            kind: kind.to_owned(),
        };
        self.inner.commit(&mut w, entry).map(drop)
    }

    /// Deletes a segment and its lists. [`Error::UnknownSegment`] if there is none.
    pub fn delete_segment(&self, segment: &str) -> Result<()> {
        let mut w = self.inner.writer.lock();
        usable(&w)?;
        if !self.inner.current.load().segments.contains_key(segment) {
            return Err(Error::UnknownSegment(segment.to_owned()));
        }
        let entry = Entry::DeleteSegment {
            segment: segment.to_owned(),
        };
        self.inner.commit(&mut w, entry).map(drop)
    }

    /// Replaces a segment's details (name, description, tags). Membership is untouched, and
    /// no sync write ever changes what this sets.
    pub fn set_details(&self, segment: &str, details: Details) -> Result<()> {
        validate_details(&details)?;
        let mut w = self.inner.writer.lock();
        usable(&w)?;
        if !self.inner.current.load().segments.contains_key(segment) {
            return Err(Error::UnknownSegment(segment.to_owned()));
        }
        let entry = Entry::SetDetails {
            segment: segment.to_owned(),
            details,
        };
        self.inner.commit(&mut w, entry).map(drop)
    }

    /// Makes one list of `segment` exactly the given keys, creating the segment (with `kind`,
    /// default `user`) if needed. Keys may come in any order and any number: they are sorted
    /// within [`Options::sort_memory_budget`], spilling sorted runs to disk beyond it, and
    /// written straight into a table. The list switches to it in one atomic log record.
    pub fn replace_list<I>(
        &self,
        segment: &str,
        kind: Option<&str>,
        list: List,
        keys: I,
    ) -> Result<ReplaceStats>
    where
        I: IntoIterator<Item = Result<Vec<u8>>>,
    {
        validate_ref(segment)?;
        let kind = kind.unwrap_or(DEFAULT_KIND);
        validate_kind(kind)?;
        self.inner.writable(&self.inner.writer.lock())?;
        let inner = &self.inner;
        let checked = keys.into_iter().map(|key| {
            let key = key?;
            validate_key(&key)?;
            Ok(key)
        });
        let sort_options = SortOptions {
            memory_budget: inner.options.sort_memory_budget,
            temp_dir: inner.dir.clone(),
            io: inner.io.clone(),
        };
        // The sorter holds keys of one dense shape as codes: that shape is the table's kind
        // (format-spec §5.6), with no second look at the keys.
        let sorted = sort_keys(checked, &sort_options, |_| true)?;
        let keys_read = sorted.len_upper_bound();
        let spilled_runs = sorted.spilled_runs();
        let file_id = inner.next_file_id.fetch_add(1, Ordering::SeqCst);
        let table = build_table(
            &inner.io,
            &inner.dir,
            &inner.store_id,
            file_id,
            keys_read,
            sorted,
        )?;
        if let Some(t) = &table {
            if let Err(e) = sync_dir(&inner.io, &inner.dir) {
                // Nothing names the table yet: remove it.
                let _ = std::fs::remove_file(inner.dir.join(table_file_name(t.table_ref.file_id)));
                return Err(e);
            }
        }
        let stats = ReplaceStats {
            keys: table.as_ref().map_or(0, |t| t.table.len()),
            keys_read,
            kind: table.as_ref().map(|t| t.table.kind()),
            spilled_runs,
        };
        let table_ref = table.as_ref().map(|t| t.table_ref);
        if let Some(t) = table {
            inner.tables.lock().insert(t);
        }
        let entry = Entry::ReplaceList {
            segment: segment.to_owned(),
            kind: kind.to_owned(),
            list,
            table: table_ref,
        };
        let mut w = inner.writer.lock();
        let committed = inner.commit(&mut w, entry);
        // After a failed append the record may be on disk and name the table: keep it then.
        let may_be_logged = w.poisoned.is_some();
        drop(w);
        if let Err(e) = committed {
            if let (Some(t), false) = (table_ref, may_be_logged) {
                let _ = std::fs::remove_file(inner.dir.join(table_file_name(t.file_id)));
            }
            return Err(e);
        }
        Ok(stats)
    }

    /// Merges the log into new tables and switches the manifest. Writers wait only while the
    /// log is rotated and while the new state is published; readers never wait. Every small
    /// table in a file of its own (a bulk replace's) is copied into a pack (format-spec §5.9);
    /// automatic compaction leaves them where they are while there are fewer than 1,024.
    pub fn compact(&self) -> Result<CompactionStats> {
        self.inner.compact(Packing::All)
    }

    /// The error of the last failed background compaction, if any.
    pub fn background_error(&self) -> Option<String> {
        self.inner.last_background_error.lock().clone()
    }

    /// Bytes in the log chain since the last compaction.
    pub fn log_bytes(&self) -> u64 {
        self.inner.writer.lock().log_bytes
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Dropping the sender ends the compactor's loop after any compaction in progress.
        self.inner.compact_signal.lock().take();
        if let Some(handle) = self.compactor.take() {
            let _ = handle.join();
        }
        // With `sync: false`, closing is the point where writes become durable.
        let w = self.inner.writer.lock();
        if !self.inner.options.sync && w.poisoned.is_none() {
            let _ = w.log.sync();
        }
    }
}

fn usable(w: &WriterState) -> Result<()> {
    match &w.poisoned {
        Some(reason) => Err(Error::PreviousIo(reason.clone())),
        None => Ok(()),
    }
}

fn validate_batch(batch: &Batch) -> Result<()> {
    for change in &batch.changes {
        validate_ref(&change.segment)?;
        if let Some(kind) = &change.kind {
            validate_kind(kind)?;
        }
        if let Some(name) = &change.name {
            validate_text("segment name", name, MAX_NAME_LEN)?;
        }
        for list in List::BOTH {
            let lc = change.list(list);
            for key in lc.add.iter().chain(&lc.remove) {
                validate_key(key)?;
            }
        }
    }
    for cursor in batch.expect_cursor.iter().chain(&batch.set_cursor) {
        validate_text("cursor", cursor, MAX_NAME_LEN)?;
    }
    Ok(())
}

fn validate_text(what: &'static str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::InvalidArgument {
            what,
            detail: format!("{} bytes, the limit is {max}", value.len()),
        });
    }
    Ok(())
}

fn validate_details(details: &Details) -> Result<()> {
    if let Some(name) = &details.name {
        validate_text("segment name", name, MAX_NAME_LEN)?;
    }
    if let Some(description) = &details.description {
        validate_text("description", description, MAX_DESCRIPTION_LEN)?;
    }
    if details.tags.len() > MAX_TAGS {
        return Err(Error::InvalidArgument {
            what: "tags",
            detail: format!("{} tags, the limit is {MAX_TAGS}", details.tags.len()),
        });
    }
    for tag in &details.tags {
        if tag.is_empty() {
            return Err(Error::InvalidArgument {
                what: "tag",
                detail: "must not be empty".into(),
            });
        }
        validate_text("tag", tag, MAX_NAME_LEN)?;
    }
    Ok(())
}

impl Inner {
    /// Fails if the writer may not write: poisoned by an earlier failure, or its lock lost.
    /// Checked before anything is written to the store directory.
    fn writable(&self, w: &WriterState) -> Result<()> {
        usable(w)?;
        self.lock.check()
    }

    /// Appends `entry` to the log (fsynced per the options) and publishes the new state.
    /// A failed append poisons the writer: the record may or may not be on disk.
    fn commit(&self, w: &mut WriterState, entry: Entry) -> Result<u64> {
        self.writable(w)?;
        let seq = w.next_seq;
        // The new state first (its work space is freed before the record exists), then the
        // record: a batch of millions of keys holds its keys, its overlay run and its record
        // at once, never more.
        let mut next = Snapshot::clone(&self.current.load());
        next.apply(seq, &entry, &mut |t| self.resolve(t, "the log"))?;
        let record = frame_entry(seq, &entry)?;
        let written = match w.log.append_pieces(&record, self.options.sync) {
            Ok(written) => written,
            Err(e) => {
                w.poisoned = Some(e.to_string());
                return Err(e);
            }
        };
        drop(record);
        w.next_seq += 1;
        w.log_bytes += written;
        if let Entry::ReplaceList { table: Some(t), .. } = &entry {
            w.log_tables += u64::from(is_small_own_file(t));
            w.log_hashed_tables += u64::from(t.info.kind == TableKind::Hashed);
        }
        if let Some(pending) = w.since_rotation.as_mut() {
            pending.push((seq, entry));
        }
        self.current.store(Arc::new(next));
        if self.wants_compaction(w) {
            if let Some(tx) = self.compact_signal.lock().as_ref() {
                let _ = tx.send(());
            }
        }
        Ok(seq)
    }

    fn resolve(&self, table_ref: &TableRef, referenced_by: &str) -> Result<Arc<LoadedTable>> {
        self.tables.lock().resolve(
            &self.io,
            &self.dir,
            &self.store_id,
            table_ref,
            self.options.verification,
            referenced_by,
        )
    }

    fn wants_compaction(&self, w: &WriterState) -> bool {
        if w.since_rotation.is_some() {
            return false;
        }
        if w.log_tables >= COMPACT_AFTER_LOG_TABLES {
            return true;
        }
        // Lists the membership index does not answer for: `membership` probes each of them.
        let current = self.current.load();
        let unindexed = match current.index {
            Some(_) => current.changed_since_index as u64,
            None if current.segments.len() >= self.options.membership_index_min_lists => {
                w.log_hashed_tables
            }
            None => 0,
        };
        if unindexed >= COMPACT_FOR_INDEX_LISTS {
            return true;
        }
        let table_bytes: u64 = w.manifest.tables().map(|t| t.info.file_len).sum();
        w.log_bytes >= self.options.compact_min_log_bytes
            && w.log_bytes as f64 >= self.options.compact_log_ratio * table_bytes as f64
    }

    fn compact(&self, packing: Packing) -> Result<CompactionStats> {
        let _only_one = self.compaction.lock();
        // 1. Rotate the log: new writes go to the next log while tables are built.
        let (snapshot, old_manifest, new_log_number, new_first_seq, old_log_bytes) = {
            let mut w = self.writer.lock();
            self.writable(&w)?;
            let snapshot = self.current.load_full();
            let number = w.log.number() + 1;
            let first_seq = w.next_seq + 1;
            // A log past the live one is outside the chain: a leftover of a failed rotation.
            let leftover = self.dir.join(log_file_name(number));
            if leftover.try_exists().map_err(|e| Error::io(&leftover, e))? {
                self.io
                    .remove_file(&leftover)
                    .map_err(|e| Error::io(&leftover, e))?;
            }
            let new_log = LogWriter::create(
                &self.io,
                &self.dir,
                &LogHeader {
                    store_id: self.store_id,
                    number,
                    first_seq,
                },
            )?;
            let seq = w.next_seq;
            let record = encode_record(seq, &Entry::Rotate { next_log: number }.encode())?;
            if let Err(e) = w.log.append(&record, true) {
                w.poisoned = Some(e.to_string());
                return Err(e);
            }
            w.next_seq += 1;
            w.log = new_log;
            w.since_rotation = Some(Vec::new());
            let mut rotated = Snapshot::clone(&snapshot);
            rotated.last_seq = seq;
            (
                Arc::new(rotated),
                w.manifest.clone(),
                number,
                first_seq,
                (w.log_bytes, w.log_tables, w.log_hashed_tables),
            )
        };
        let (old_log_bytes, old_log_tables, old_log_hashed_tables) = old_log_bytes;
        let built = self.build_compacted(
            &snapshot,
            &old_manifest,
            new_log_number,
            new_first_seq,
            packing,
        );
        let (manifest, written) = match built {
            Ok(done) => done,
            Err(e) => {
                // The rotated log stays in the chain; the next compaction picks it up.
                self.writer.lock().since_rotation = None;
                return Err(e);
            }
        };
        // 4. Publish: the new tables plus the entries written since the rotation.
        let retired_tables: Vec<u64> = {
            let keep: HashSet<u64> = manifest
                .tables()
                .map(|t| t.file_id)
                .chain(manifest.index_files().0)
                .collect();
            old_manifest
                .tables()
                .map(|t| t.file_id)
                .chain(old_manifest.index_files().0)
                .chain(snapshot_tables(&snapshot).map(|t| t.file_id))
                .filter(|id| !keep.contains(id))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect()
        };
        {
            let mut w = self.writer.lock();
            let pending = w.since_rotation.take().unwrap_or_default();
            let mut cache = self.tables.lock();
            let mut next = base_snapshot(
                &self.io,
                &self.dir,
                &manifest,
                &mut cache,
                self.options.verification,
            )?;
            drop(cache);
            next.last_seq = new_first_seq - 1;
            for (seq, entry) in &pending {
                next.apply(*seq, entry, &mut |t| self.resolve(t, "the log"))?;
            }
            w.log_bytes = w.log_bytes.saturating_sub(old_log_bytes);
            w.log_tables = w.log_tables.saturating_sub(old_log_tables);
            w.log_hashed_tables = w.log_hashed_tables.saturating_sub(old_log_hashed_tables);
            w.manifest = manifest.clone();
            self.current.store(Arc::new(next));
        }
        // 5. Retire what the new manifest no longer names.
        let mut retired = 0;
        let tables_before: std::collections::HashMap<(u64, u64), u64> = old_manifest
            .tables()
            .copied()
            .chain(snapshot_tables(&snapshot))
            .map(|t| ((t.file_id, t.offset), t.info.file_len))
            .collect();
        let bytes_before = old_log_bytes + tables_before.values().sum::<u64>();
        for id in retired_tables {
            let path = self.dir.join(table_file_name(id));
            if self.io.remove_file(&path).is_ok() {
                retired += 1;
            }
        }
        if let Some(id) = old_manifest.index_files().1 {
            if manifest.index_files().1 != Some(id)
                && self
                    .io
                    .remove_file(&self.dir.join(postings_file_name(id)))
                    .is_ok()
            {
                retired += 1;
            }
        }
        for number in old_manifest.log_number..new_log_number {
            if self
                .io
                .remove_file(&self.dir.join(log_file_name(number)))
                .is_ok()
            {
                retired += 1;
            }
        }
        // Best effort: a retired file that reappears after a crash is an orphan, removed at
        // the next open. The compaction itself is complete.
        let _ = sync_dir(&self.io, &self.dir);
        self.tables.lock().prune();
        let bytes_after =
            manifest.tables().map(|t| t.info.file_len).sum::<u64>() + self.writer.lock().log_bytes;
        Ok(CompactionStats {
            bytes_before,
            bytes_after,
            tables_written: written,
            files_retired: retired,
        })
    }

    /// Builds the membership index over the hashed tables of `segments`, recording the files
    /// it writes so a failure can remove them.
    fn build_index_for(
        &self,
        segments: &[SegmentRecord],
        written_postings: &mut Option<u64>,
    ) -> Result<Option<crate::index::IndexRef>> {
        let mut hashed = Vec::new();
        for (ordinal, record) in segments.iter().enumerate() {
            for (list, table) in List::BOTH.into_iter().zip(&record.tables) {
                if let Some(t) = table.filter(|t| t.info.kind == TableKind::Hashed) {
                    // A posting holds the ordinal in its top 31 bits.
                    let ordinal = u32::try_from(ordinal)
                        .ok()
                        .filter(|o| *o < 1 << 31)
                        .ok_or_else(|| Error::InvalidArgument {
                            what: "store",
                            detail: "more than 2^31 segments".into(),
                        })?;
                    hashed.push((ordinal, list, self.resolve(&t, MANIFEST_FILE)?));
                }
            }
        }
        if hashed.is_empty() || hashed.len() < self.options.membership_index_min_lists {
            return Ok(None);
        }
        let postings_id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
        let built = build_index(&self.io, &self.dir, &self.store_id, postings_id, &hashed)?;
        if built.is_some() {
            *written_postings = Some(postings_id);
        }
        Ok(built)
    }

    /// Builds the tables for `snapshot` and writes the manifest that names them.
    fn build_compacted(
        &self,
        snapshot: &Snapshot,
        old: &Manifest,
        log_number: u64,
        log_first_seq: u64,
        packing: Packing,
    ) -> Result<(Manifest, usize)> {
        let mut segments = Vec::with_capacity(snapshot.segments.len());
        let mut written = Vec::new();
        let mut written_postings = None;
        let next_id = || self.next_file_id.fetch_add(1, Ordering::SeqCst);
        let mut packs = PackWriter::new(&self.io, &self.dir, &self.store_id, &next_id);
        let result = (|| {
            // Packs worth keeping as they are; every other table goes into the new pack,
            // rebuilt if its list changed, else copied.
            let keep = packs_to_keep(
                snapshot
                    .segments
                    .values()
                    .flat_map(|s| s.lists.iter())
                    .filter(|l| l.overlay_is_empty())
                    .filter_map(|l| l.table.as_deref()),
            );
            // In the background, small tables in files of their own stay there while they are
            // few: copying them into a pack would rewrite every bulk-loaded byte (most of a
            // compaction after a bulk load, which delays the membership index) to save
            // mappings nobody is short of yet. A compaction asked for packs them all.
            let small_own_files: std::collections::HashSet<u64> = snapshot
                .segments
                .values()
                .flat_map(|s| s.lists.iter())
                .filter(|l| l.overlay_is_empty())
                .filter_map(|l| l.table.as_deref())
                .map(|t| t.table_ref)
                .filter(|r| r.offset == 0 && r.info.file_len < OWN_FILE_MIN_LEN)
                .map(|r| r.file_id)
                .collect();
            let small_own_stay =
                packing == Packing::WhenMany && small_own_files.len() < SMALL_OWN_FILES_MAX;
            let mut moved = 0usize;
            for (segment, state) in snapshot.segments.iter() {
                let mut tables = [None, None];
                for (slot, list) in tables.iter_mut().zip(&state.lists) {
                    *slot = if list.overlay_is_empty() {
                        match list.table.as_deref() {
                            None => None,
                            Some(t) => {
                                let r = t.table_ref;
                                let stays = if r.offset == 0 {
                                    r.info.file_len >= OWN_FILE_MIN_LEN || small_own_stay
                                } else {
                                    keep.contains(&r.file_id)
                                };
                                if stays {
                                    Some(r)
                                } else {
                                    moved += 1;
                                    Some(packs.copy(t)?)
                                }
                            }
                        }
                    } else {
                        moved += 1;
                        compact_list(&mut packs, list)?
                    };
                }
                segments.push(SegmentRecord {
                    segment: segment.clone(),
                    kind: state.kind.clone(),
                    details: state.details.clone(),
                    tables,
                });
            }
            packs.finish()?;
            written.extend_from_slice(packs.created());
            // The new tables, opened once with the structure checks (this process just wrote
            // and fsynced them), so the snapshot and the index below do not read them again.
            if moved > 0 {
                let mut cache = self.tables.lock();
                for r in segments.iter().flat_map(|s| s.tables.iter().flatten()) {
                    if written.contains(&r.file_id) {
                        cache
                            .resolve(
                                &self.io,
                                &self.dir,
                                &self.store_id,
                                r,
                                Verification::Structure,
                                MANIFEST_FILE,
                            )?
                            .table
                            .trust_written();
                    }
                }
            }
            // The membership index over every hashed table of the new manifest: the old one
            // still fits if no segment or table changed.
            // (A table copied into a pack holds the same bytes: its info is unchanged.)
            let infos = |r: &SegmentRecord| r.tables.map(|t| t.map(|t| t.info));
            let unchanged = segments.len() == old.segments.len()
                && segments
                    .iter()
                    .zip(&old.segments)
                    .all(|(a, b)| a.segment == b.segment && infos(a) == infos(b));
            let index = match old.index {
                Some(index) if unchanged => Some(index),
                _ => self.build_index_for(&segments, &mut written_postings)?,
            };
            sync_dir(&self.io, &self.dir)?;
            // The new manifest names this writer's log and tables: never switch it under
            // another writer that took the store after this one lost its lock.
            self.lock.check()?;
            let manifest = Manifest {
                store_id: self.store_id,
                generation: old.generation + 1,
                log_number,
                log_first_seq,
                next_file_id: self.next_file_id.load(Ordering::SeqCst),
                synchronized_on: snapshot.synchronized_on,
                cursor: snapshot.cursor.clone(),
                segments,
                index,
            };
            Ok((manifest, moved + usize::from(written_postings.is_some())))
        })();
        let (manifest, tables_written) = match result {
            Ok(m) => m,
            Err(e) => {
                // Nothing names these tables yet.
                for id in written.into_iter().chain(packs.created().iter().copied()) {
                    let _ = std::fs::remove_file(self.dir.join(table_file_name(id)));
                }
                if let Some(id) = written_postings {
                    let _ = std::fs::remove_file(self.dir.join(postings_file_name(id)));
                }
                return Err(e);
            }
        };
        if let Err(e) = manifest.store(&self.io, &self.dir) {
            // The rename may or may not have happened: either manifest may be the live one,
            // so keep every table both name, and stop writing until a reopen settles it.
            self.writer.lock().poisoned = Some(e.to_string());
            return Err(e);
        }
        Ok((manifest, tables_written))
    }
}

/// Which small tables in files of their own a compaction copies into a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// Every one ([`Store::compact`]).
    All,
    /// None while the new manifest would name fewer than [`SMALL_OWN_FILES_MAX`] such files,
    /// else every one (automatic compaction).
    WhenMany,
}

/// Auto-compaction also runs once bulk replaces have left this many small tables in files of
/// their own, which compaction moves into a pack: each file is one more memory mapping in
/// every process that reads the store (format-spec §5.9).
const COMPACT_AFTER_LOG_TABLES: u64 = 1024;

/// Auto-compaction also runs once this many lists have changed since the membership index
/// was built (or, with no index yet, bulk replaces have written this many hashed tables), so
/// that `membership` is back to one index probe within a compaction's time of any write.
/// The compactor rests as long as its last compaction took before it starts another.
const COMPACT_FOR_INDEX_LISTS: u64 = 16;

/// The longest the compactor rests between two compactions.
const COMPACTOR_MAX_REST: std::time::Duration = std::time::Duration::from_secs(60);

/// A table in a file of its own that compaction would move into a pack.
fn is_small_own_file(t: &TableRef) -> bool {
    t.offset == 0 && t.info.file_len < OWN_FILE_MIN_LEN
}

/// The tables a snapshot's lists stand on.
fn snapshot_tables(snapshot: &Snapshot) -> impl Iterator<Item = TableRef> + '_ {
    snapshot
        .segments
        .values()
        .flat_map(|s| s.lists.iter())
        .filter_map(|l| l.table.as_ref().map(|t| t.table_ref))
}

/// Removes files a crash left behind: tables nothing names, logs outside the chain, temp
/// files. Returns the largest table id seen on disk.
fn remove_orphans(
    io: &Io,
    dir: &Path,
    manifest: &Manifest,
    log_tables: &[TableRef],
    log_numbers: &[u64],
) -> Result<Option<u64>> {
    let (index_keys, index_postings) = manifest.index_files();
    let referenced: HashSet<u64> = manifest
        .tables()
        .chain(log_tables)
        .map(|t| t.file_id)
        .chain(index_keys)
        .collect();
    let chain: HashSet<u64> = log_numbers.iter().copied().collect();
    let mut max_id = None;
    let mut removed = false;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let orphan = if let Some(id) = parse_table_file_name(name) {
            max_id = max_id.max(Some(id));
            !referenced.contains(&id)
        } else if let Some(number) = parse_log_file_name(name) {
            !chain.contains(&number)
        } else if let Some(id) = parse_postings_file_name(name) {
            max_id = max_id.max(Some(id));
            index_postings != Some(id)
        } else {
            name == "MANIFEST.tmp"
                || ((name.starts_with(".tmp") || name.starts_with("segstore-sort-"))
                    && path.is_dir())
        };
        if orphan {
            let result = if path.is_dir() {
                io.remove_dir_all(&path)
            } else {
                io.remove_file(&path)
            };
            result.map_err(|e| Error::io(&path, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(io, dir)?;
    }
    Ok(max_id)
}
