//! Read-only handles: any number, in any process, beside the writer.
//!
//! A handle loads the manifest's tables and replays the log, then follows the writer: each
//! refresh (run by a background poll, or called directly) tails the live log for whole new
//! records and reloads everything when the manifest changes (after a compaction). It never
//! writes, never takes the lock and never repairs anything.

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::io::{Io, IoOp};
use crate::log::{log_file_name, scan_records, LogHeader, LOG_HEADER_LEN};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::options::Options;
use crate::recovery::{load, TableCache};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

/// Identity of the MANIFEST file as last read: a rename gives a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    dev: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Result<FileStamp> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok(FileStamp {
        ino: m.ino(),
        dev: m.dev(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

#[derive(Debug)]
struct Follow {
    manifest_stamp: FileStamp,
    store_id: [u8; 16],
    log_number: u64,
    log: File,
    log_path: PathBuf,
    offset: u64,
    next_seq: u64,
    tables: TableCache,
    /// Set when tailing failed; the next refresh reloads from the manifest.
    needs_reload: bool,
}

#[derive(Debug)]
struct ReaderInner {
    dir: PathBuf,
    io: Io,
    options: Options,
    current: ArcSwap<Snapshot>,
    follow: Mutex<Follow>,
    last_error: Mutex<Option<String>>,
    stop: AtomicBool,
}

/// A read-only handle on a store that another process (or this one) may be writing.
///
/// ```
/// use segstore::{Batch, List, Options, ReadOnlyStore, Status, Store};
/// let dir = tempfile::tempdir()?;
/// let writer = Store::create(dir.path(), Options::default())?;
/// let reader = ReadOnlyStore::open(dir.path(), Options::default())?;
/// writer.write(Batch::new().add("beta.g1", List::Included, "k"))?;
/// reader.refresh()?; // the background poll would also pick it up within 50 ms
/// assert_eq!(reader.snapshot().check("beta.g1", b"k")?, Status::Included);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReadOnlyStore {
    inner: Arc<ReaderInner>,
    poller: Option<JoinHandle<()>>,
}

/// Attempts at a consistent load while the writer retires files under us.
const LOAD_ATTEMPTS: usize = 5;

fn load_follow(dir: &Path, options: &Options, tables: TableCache) -> Result<(Snapshot, Follow)> {
    let mut tables = tables;
    let mut last = None;
    for _ in 0..LOAD_ATTEMPTS {
        let manifest_path = dir.join(MANIFEST_FILE);
        let before = match stamp(&manifest_path) {
            Ok(s) => s,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    path: dir.to_owned(),
                })
            }
            Err(e) => return Err(e),
        };
        let io = options.io();
        let attempt = Manifest::load(&io, dir).and_then(|m| {
            let store_id = m.store_id;
            let loaded = load(&io, dir, m, &mut tables, options.verification, false)?;
            let path = loaded.live_log.path.clone();
            let log = crate::io::open_read(&path).map_err(|e| Error::io(&path, e))?;
            Ok((loaded, log, store_id))
        });
        match attempt {
            Ok((loaded, log, store_id)) => {
                // A manifest switched during the load may have retired what we read.
                if stamp(&manifest_path).ok() != Some(before) {
                    continue;
                }
                let follow = Follow {
                    manifest_stamp: before,
                    store_id,
                    log_number: loaded.live_log.number,
                    log,
                    log_path: loaded.live_log.path,
                    offset: loaded.live_log.valid_end,
                    next_seq: loaded.live_log.next_seq,
                    tables,
                    needs_reload: false,
                };
                return Ok((loaded.snapshot, follow));
            }
            Err(e @ (Error::MissingFile { .. } | Error::Io { .. })) => {
                // Retired by a compaction between our reads: the manifest has moved on.
                if stamp(&manifest_path).ok() == Some(before) {
                    return Err(e);
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::corrupt(dir, "the manifest kept changing during open")))
}

impl ReadOnlyStore {
    /// Opens the store in `dir` read-only. With [`Options::poll_interval`] set, a background
    /// thread follows the writer.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<ReadOnlyStore> {
        let dir = dir.as_ref().to_owned();
        let (snapshot, follow) = load_follow(&dir, &options, TableCache::new(options.residency))?;
        let inner = Arc::new(ReaderInner {
            io: options.io(),
            dir,
            current: ArcSwap::from_pointee(snapshot),
            follow: Mutex::new(follow),
            last_error: Mutex::new(None),
            stop: AtomicBool::new(false),
            options,
        });
        let poller = match inner.options.poll_interval {
            Some(interval) => {
                let weak: Weak<ReaderInner> = Arc::downgrade(&inner);
                Some(
                    std::thread::Builder::new()
                        .name("segstore-reader-poll".into())
                        .spawn(move || loop {
                            std::thread::park_timeout(interval);
                            let Some(inner) = weak.upgrade() else { return };
                            if inner.stop.load(Ordering::Acquire) {
                                return;
                            }
                            let result = inner.refresh();
                            *inner.last_error.lock() = result.err().map(|e| e.to_string());
                        })
                        .map_err(|e| Error::io(&inner.dir, e))?,
                )
            }
            None => None,
        };
        Ok(ReadOnlyStore { inner, poller })
    }

    /// The latest state this handle has seen. Never waits.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Picks up new writes now. Returns `true` if the state changed.
    pub fn refresh(&self) -> Result<bool> {
        self.inner.refresh()
    }

    /// The error of the last background refresh, if it failed (the handle keeps serving the
    /// last good state).
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error.lock().clone()
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for ReadOnlyStore {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(handle) = self.poller.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl ReaderInner {
    fn refresh(&self) -> Result<bool> {
        let mut follow = self.follow.lock();
        let manifest_path = self.dir.join(MANIFEST_FILE);
        let now = stamp(&manifest_path)?;
        if now != follow.manifest_stamp || follow.needs_reload {
            return self.reload(&mut follow);
        }
        match self.tail(&mut follow) {
            Ok(changed) => Ok(changed),
            Err(e) => {
                follow.needs_reload = true;
                Err(e)
            }
        }
    }

    fn reload(&self, follow: &mut Follow) -> Result<bool> {
        let tables = std::mem::take(&mut follow.tables);
        match load_follow(&self.dir, &self.options, tables) {
            Ok((snapshot, mut fresh)) => {
                fresh.tables.prune();
                *follow = fresh;
                self.current.store(Arc::new(snapshot));
                Ok(true)
            }
            Err(e) => {
                follow.needs_reload = true;
                Err(e)
            }
        }
    }

    /// Applies whole records appended to the live log since the last look.
    fn tail(&self, follow: &mut Follow) -> Result<bool> {
        let mut changed = false;
        let mut next: Option<Snapshot> = None;
        loop {
            let len = follow
                .log
                .metadata()
                .map_err(|e| Error::io(&follow.log_path, e))?
                .len();
            if len <= follow.offset {
                break;
            }
            self.io
                .check(IoOp::Read, &follow.log_path)
                .map_err(|e| Error::io(&follow.log_path, e))?;
            let mut bytes = vec![0u8; (len - follow.offset) as usize];
            follow
                .log
                .read_exact_at(&mut bytes, follow.offset)
                .map_err(|e| Error::io(&follow.log_path, e))?;
            let scan = scan_records(&bytes, follow.offset, follow.next_seq, &follow.log_path)?;
            if scan.records.is_empty() {
                break;
            }
            let state = next.get_or_insert_with(|| Snapshot::clone(&self.current.load()));
            let mut rotate_to = None;
            let name = log_file_name(follow.log_number);
            for (seq, entry) in &scan.records {
                let store_id = follow.store_id;
                let tables = &mut follow.tables;
                state.apply(*seq, entry, &mut |t| {
                    tables.resolve(
                        &self.io,
                        &self.dir,
                        &store_id,
                        t,
                        self.options.verification,
                        &name,
                    )
                })?;
                if let Entry::Rotate { next_log } = entry {
                    rotate_to = Some(*next_log);
                }
            }
            changed = true;
            follow.offset = scan.valid_end;
            follow.next_seq = scan.next_seq;
            match rotate_to {
                Some(number) => {
                    if Some(number) != follow.log_number.checked_add(1) {
                        return Err(Error::corrupt(
                            &follow.log_path,
                            format!(
                                "rotates to log {number}, expected {}",
                                follow.log_number.wrapping_add(1)
                            ),
                        ));
                    }
                    let path = self.dir.join(log_file_name(number));
                    let log = crate::io::open_read(&path).map_err(|e| Error::io(&path, e))?;
                    let mut head = vec![0u8; LOG_HEADER_LEN];
                    log.read_exact_at(&mut head, 0)
                        .map_err(|e| Error::io(&path, e))?;
                    let header = LogHeader::decode(&head, &path)?;
                    if header.store_id != follow.store_id {
                        return Err(Error::ForeignFile { path });
                    }
                    if header.first_seq != follow.next_seq || header.number != number {
                        return Err(Error::corrupt(
                            &path,
                            "log header does not continue the chain",
                        ));
                    }
                    follow.log = log;
                    follow.log_path = path;
                    follow.log_number = number;
                    follow.offset = LOG_HEADER_LEN as u64;
                }
                None => break,
            }
        }
        if let Some(state) = next {
            self.current.store(Arc::new(state));
        }
        Ok(changed)
    }
}
