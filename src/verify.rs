//! `verify` and `stats`: whole-store checks and figures, read-only.

use crate::entry::{Entry, TableRef};
use crate::error::{Error, Result};
use crate::files::{parse_table_file_name, table_file_name};
use crate::index::{parse_postings_file_name, postings_file_name, MembershipIndex};
use crate::io::Io;
use crate::log::{log_file_name, parse_log_file_name, scan_records, Tail, LOG_HEADER_LEN};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::recovery::{load, read_log, TableCache};
use crate::table::Verification;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// One thing `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.detail)
    }
}

impl Problem {
    fn from_error(fallback: &Path, error: &Error) -> Problem {
        let path = match error {
            Error::Io { path, .. }
            | Error::Corrupt { path, .. }
            | Error::ChecksumMismatch { path, .. }
            | Error::MissingFile { path, .. }
            | Error::UnsupportedVersion { path, .. }
            | Error::ForeignFile { path }
            | Error::NotRegularFile { path, .. } => path.clone(),
            _ => fallback.to_owned(),
        };
        Problem {
            path,
            detail: error.to_string(),
        }
    }
}

/// Checks every checksum and every cross-reference of the store in `dir`: the manifest, each
/// table it or the log names (whole-file xxh3 and structure), each log of the chain (header,
/// every record's checksums and sequence, the rotation chain), then replays everything.
/// Returns the problems found, empty when the store is sound. A torn last record (a prefix of
/// a record, possibly followed by zeros) is not a problem: the writer truncates it on open. A
/// whole last record failing its checksum is one (format-spec.md §4.6). Takes no lock; safe
/// beside a running writer: a compaction that retires files while the check reads them
/// switches the manifest first, so a check that found problems under a manifest since
/// replaced runs again (up to 8 times in all) rather than report files that were retired,
/// not lost.
pub fn verify(dir: &Path) -> Result<Vec<Problem>> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut attempt = 1;
    loop {
        let manifest = match Manifest::load(&Io::default(), dir) {
            Ok(m) => m,
            Err(e @ Error::NotFound { .. }) => return Err(e),
            Err(e) => return Ok(vec![Problem::from_error(&manifest_path, &e)]),
        };
        let generation = manifest.generation;
        let mut problems = verify_under(dir, manifest)?;
        if problems.is_empty() {
            return Ok(problems);
        }
        let Some(now) = replaced_since(dir, generation) else {
            return Ok(problems);
        };
        if attempt == CONSISTENT_READ_ATTEMPTS {
            problems.push(Problem {
                path: manifest_path,
                detail: format!(
                    "the manifest changed during each of {attempt} checks (generation \
                     {generation} became {now}): a writer compacted meanwhile, so the \
                     problems above may be files it retired; run verify again"
                ),
            });
            return Ok(problems);
        }
        attempt += 1;
    }
}

/// How many times [`verify`] and [`stats`] read the store when a writer's compaction replaces
/// the manifest while they read it.
pub(crate) const CONSISTENT_READ_ATTEMPTS: u32 = 8;

/// The manifest generation now, if a manifest of another generation than `generation` has
/// replaced the one read.
fn replaced_since(dir: &Path, generation: u64) -> Option<u64> {
    Manifest::load(&Io::default(), dir)
        .ok()
        .map(|m| m.generation)
        .filter(|&now| now != generation)
}

/// [`verify`] under one manifest.
fn verify_under(dir: &Path, manifest: Manifest) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let io = Io::default();
    // One open file per table file, shared by the tables of a pack (format-spec §5.9).
    let mut cache = TableCache::default();
    let mut checked = BTreeSet::new();
    let mut check_table = |table: &TableRef, referenced_by: &str, problems: &mut Vec<Problem>| {
        if !checked.insert((table.file_id, table.offset)) {
            return;
        }
        let path = dir.join(table_file_name(table.file_id));
        let opened = cache.resolve(
            &io,
            dir,
            &manifest.store_id,
            table,
            Verification::Checksum,
            referenced_by,
        );
        if let Err(e) = opened.and_then(|t| t.table.check_contents()) {
            problems.push(Problem::from_error(&path, &e));
        }
    };
    for table in manifest.tables() {
        check_table(table, MANIFEST_FILE, &mut problems);
    }
    if let Some(index) = &manifest.index {
        if let Some(keys) = &index.keys {
            check_table(keys, MANIFEST_FILE, &mut problems);
        }
        // Only over tables whose checksums all passed: the cross-check iterates them.
        if problems.is_empty() {
            let mut cache = TableCache::default();
            let mut open = |t: &TableRef| {
                cache.resolve(
                    &io,
                    dir,
                    &manifest.store_id,
                    t,
                    Verification::Structure,
                    MANIFEST_FILE,
                )
            };
            let opened = index
                .keys
                .as_ref()
                .map(&mut open)
                .transpose()
                .and_then(|keys| {
                    MembershipIndex::open(
                        &io,
                        dir,
                        &manifest.store_id,
                        index,
                        keys,
                        Verification::Checksum,
                    )
                })
                .and_then(|opened| {
                    opened.check_structure(manifest.segments.len())?;
                    // The index must say exactly what the hashed tables hold.
                    let mut lists = Vec::new();
                    for (ordinal, record) in manifest.segments.iter().enumerate() {
                        for (list, table) in crate::List::BOTH.into_iter().zip(&record.tables) {
                            if let Some(t) =
                                table.filter(|t| t.info.kind == crate::TableKind::Hashed)
                            {
                                lists.push((ordinal as u32, list, open(&t)?));
                            }
                        }
                    }
                    opened.check_against(&lists)
                });
            if let Err(e) = opened {
                problems.push(Problem::from_error(
                    &dir.join(postings_file_name(index.postings_id)),
                    &e,
                ));
            }
        }
    }
    let mut number = manifest.log_number;
    let mut next_seq = manifest.log_first_seq;
    loop {
        let (path, bytes) =
            match read_log(&Io::default(), dir, number, &manifest.store_id, next_seq) {
                Ok(found) => found,
                Err(e) => {
                    problems.push(Problem::from_error(&dir.join(log_file_name(number)), &e));
                    break;
                }
            };
        let body = bytes.get(LOG_HEADER_LEN..).unwrap_or_default();
        let scan = match scan_records(body, LOG_HEADER_LEN as u64, next_seq, &path) {
            Ok(scan) => scan,
            Err(e) => {
                problems.push(Problem::from_error(&path, &e));
                break;
            }
        };
        let mut next_log = None;
        for (_, entry) in &scan.records {
            match entry {
                Entry::ReplaceList { table: Some(t), .. } => {
                    check_table(t, &log_file_name(number), &mut problems)
                }
                Entry::Rotate { next_log: n } => next_log = Some(*n),
                _ => {}
            }
        }
        match next_log {
            Some(n) if Some(n) == number.checked_add(1) => {
                number = n;
                next_seq = scan.next_seq;
            }
            Some(n) => {
                problems.push(Problem {
                    path,
                    detail: format!("rotates to log {n}, expected {}", number.wrapping_add(1)),
                });
                break;
            }
            None => break,
        }
    }
    if problems.is_empty() {
        // Everything checks out file by file; replay it all to catch what only the whole shows.
        let mut cache = TableCache::default();
        if let Err(e) = load(
            &Io::default(),
            dir,
            manifest,
            &mut cache,
            Verification::Structure,
            false,
        ) {
            problems.push(Problem::from_error(dir, &e));
        }
    }
    Ok(problems)
}

/// One file of a store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileStats {
    /// File name.
    pub name: String,
    /// `manifest`, `log`, `table`, `index` (membership postings), `lock` or `other`.
    pub kind: &'static str,
    /// Size in bytes.
    pub bytes: u64,
}

/// Figures about a store's files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Every file in the directory, by name.
    pub files: Vec<FileStats>,
    /// Manifest generation.
    pub generation: u64,
    /// Bytes of the tables the manifest or the log names (a table a later replace superseded
    /// still counts until the next compaction retires it).
    pub table_bytes: u64,
    /// Keys in those tables.
    pub table_keys: u64,
    /// Bytes of the log chain (headers included).
    pub log_bytes: u64,
    /// Records in the log chain.
    pub log_records: u64,
    /// Whether the live log ends in an incomplete record (a torn write, or one in progress).
    pub torn_tail: bool,
}

/// Lists the store's files and counts what they hold. Read-only; beside a writer whose
/// compaction retires a file while it is read, it reads the store again, as [`verify`] does.
pub fn stats(dir: &Path) -> Result<StoreStats> {
    let mut attempt = 1;
    loop {
        let manifest = Manifest::load(&Io::default(), dir)?;
        let generation = manifest.generation;
        match stats_under(dir, manifest) {
            Err(_)
                if attempt < CONSISTENT_READ_ATTEMPTS
                    && replaced_since(dir, generation).is_some() =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// [`stats`] under one manifest.
fn stats_under(dir: &Path, manifest: Manifest) -> Result<StoreStats> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let kind = if name == MANIFEST_FILE {
            "manifest"
        } else if name == crate::files::LOCK_FILE {
            "lock"
        } else if parse_log_file_name(&name).is_some() {
            "log"
        } else if parse_table_file_name(&name).is_some() {
            "table"
        } else if parse_postings_file_name(&name).is_some() {
            "index"
        } else {
            "other"
        };
        files.push(FileStats { name, kind, bytes });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut log_bytes = 0;
    let mut log_records = 0;
    let mut live_tables: std::collections::BTreeMap<(u64, u64), TableRef> = manifest
        .tables()
        .map(|t| ((t.file_id, t.offset), *t))
        .collect();
    let mut number = manifest.log_number;
    let mut next_seq = manifest.log_first_seq;
    let torn_tail = loop {
        let (path, bytes) = read_log(&Io::default(), dir, number, &manifest.store_id, next_seq)?;
        let body = bytes.get(LOG_HEADER_LEN..).unwrap_or_default();
        let scan = scan_records(body, LOG_HEADER_LEN as u64, next_seq, &path)?;
        log_bytes += bytes.len() as u64;
        log_records += scan.records.len() as u64;
        for (_, entry) in &scan.records {
            if let Entry::ReplaceList { table: Some(t), .. } = entry {
                live_tables.insert((t.file_id, t.offset), *t);
            }
        }
        if !scan.rotated {
            break matches!(scan.tail, Tail::Torn { .. });
        }
        number = number
            .checked_add(1)
            .ok_or_else(|| Error::corrupt(&path, "rotates past the largest log number"))?;
        next_seq = scan.next_seq;
    };
    Ok(StoreStats {
        files,
        generation: manifest.generation,
        table_bytes: live_tables.values().map(|t| t.info.file_len).sum(),
        table_keys: live_tables.values().map(|t| t.info.key_count).sum(),
        log_bytes,
        log_records,
        torn_tail,
    })
}
