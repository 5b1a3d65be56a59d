//! External sort and deduplication of byte-string keys under a memory budget.
//!
//! [`sort_keys`] reads keys in any order (duplicates allowed) and yields them sorted ascending
//! by bytes, each exactly once. Keys are collected in memory until the budget
//! ([`SortOptions::memory_budget`]) is reached; each full chunk is sorted, deduplicated and
//! written as a *run file* into a private temporary directory created inside
//! [`SortOptions::temp_dir`]. The runs (and the last chunk, which stays in memory) are then
//! k-way merged, deduplicating across runs. When there are more runs than the merge fan-in
//! (256: a 1B-key import under the default budget writes ~210 runs), runs are first merged in
//! passes so that the number of open files stays bounded.
//!
//! # Keys held as codes
//!
//! When the first key is a LaunchDarkly context hash (44 bytes) or a canonical UUID (36
//! bytes), the sorter holds each key as its order-preserving code (32 or 16 bytes, the same
//! codes dense tables store; format-spec §5.5, §5.5a) for as long as every key has that shape.
//! Codes compare like their keys, so nothing else changes, but a chunk holds 20% (hashes) to
//! 30% (UUIDs) more keys and a run takes 27% or 56% less disk. At the first key of another
//! shape, the chunk in memory is decoded back into keys, and the runs already written stay
//! coded: every source yields keys.
//!
//! # Disk space
//!
//! A run is read once, front to back. As it is read, the blocks of the bytes already consumed
//! are released (`fallocate` punching a hole) every [`RELEASE_STEP`] bytes, so the runs' disk
//! space shrinks while the merge's output grows: a bulk import's peak disk use is about the
//! larger of the two, not their sum. Where the file system cannot punch holes, runs keep their
//! space until the sort ends.
//!
//! # Run file layout
//!
//! Run files are transient: they live only in the sorter's temporary directory, are deleted
//! when the sort ends (normally, on error, or when [`SortedKeys`] is dropped) and are never
//! part of a store. A run file is a sequence of records, one per key, in strictly increasing
//! byte order with no duplicates; each record is the key's length as a `u32` little-endian
//! followed by the key's bytes, or in a coded run (the sorter remembers which runs are) the
//! key's code alone, all of the same length. After the last record comes a trailer of 16 bytes: the end
//! marker `0xFFFF_FFFF` (`u32` LE; never a valid length), the number of records (`u64` LE)
//! and the CRC-32 (IEEE, as computed by `crc32fast`) of every byte of the file before it
//! (`u32` LE). The reader checks each length against the longest key written, the strict
//! order of the keys, the marker, the record count, the checksum, the file's size and that
//! nothing follows the trailer; any mismatch is reported as [`Error::Corrupt`]. A damage
//! caught only by the checksum is reported when the run's last key has been read, so a
//! consumer must treat an `Err` anywhere in the stream as the failure of the whole sort.

use std::cmp::Reverse;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::punch_hole;
use crate::io::{Io, IoWriter};
use crate::table::Scheme;

/// The default [`SortOptions::memory_budget`]: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// Bytes charged against the budget for each key held in memory, on top of its own bytes.
const KEY_OVERHEAD: usize = 24;
/// The most runs merged at once (files open at once while merging).
const MERGE_FAN_IN: usize = 256;
/// Size of a run writer's buffer.
const WRITE_BUF: usize = 1 << 20;
/// Largest and smallest read buffer per run while merging.
const MAX_READ_BUF: usize = 1 << 20;
const MIN_READ_BUF: usize = 16 << 10;
/// The length value that marks the end of the records in a run file.
const END_MARKER: u32 = u32::MAX;
/// End marker (4) + record count (8) + CRC-32 (4).
const TRAILER_LEN: usize = 16;
/// Consumed bytes of a run between two releases of their disk blocks.
const RELEASE_STEP: u64 = 8 << 20;
/// Releases cover whole blocks of this size.
const RELEASE_ALIGN: u64 = 4096;

/// How [`sort_keys`] may use memory and disk.
#[derive(Debug, Clone)]
pub struct SortOptions {
    /// Bytes of keys held in RAM before a sorted run is spilled to disk. Each key is charged
    /// its length (its code's, for a key held as a code) plus a fixed overhead of 24 bytes.
    /// When the keys stop being held as codes, the chunk's decoded copy may exceed the budget
    /// once, until the next key spills it. Default: 256 MiB
    /// ([`DEFAULT_MEMORY_BUDGET`]). A chunk is also cut when 4 GiB of its keys share a first byte,
    /// whatever the budget. Merging needs up to 1 MiB of read buffer per run on top of it.
    pub memory_budget: usize,
    /// The directory in which a private temporary directory for spilled runs is created.
    /// Default: [`std::env::temp_dir`].
    pub temp_dir: PathBuf,
    /// The file-operation layer spills go through (fault-injection tests install a hook).
    pub io: Io,
}

impl Default for SortOptions {
    fn default() -> Self {
        SortOptions {
            memory_budget: DEFAULT_MEMORY_BUDGET,
            temp_dir: std::env::temp_dir(),
            io: Io::default(),
        }
    }
}

/// Internal knobs; tests lower the fan-in and tamper with runs.
struct Tuning {
    fan_in: usize,
    release_step: u64,
    #[cfg(test)]
    on_run_written: Option<fn(&Path)>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            fan_in: MERGE_FAN_IN,
            release_step: RELEASE_STEP,
            #[cfg(test)]
            on_run_written: None,
        }
    }
}

/// Reads every key from `input` (any order, duplicates allowed) and returns them sorted
/// ascending by bytes, deduplicated.
///
/// While reading, calls `classify(&key)` once on each key read (duplicates included) and ANDs
/// the results, exposed as [`SortedKeys::all_matched`], so a caller learns e.g. "every key is
/// a hash key" in the same pass.
///
/// # Errors
///
/// The first `Err` from `input` is returned as is. A key of `u32::MAX` bytes or more gives
/// [`Error::InvalidKey`]. Failing to create or write a spill file gives [`Error::Io`] with
/// the file's path; a damaged spill file read back gives [`Error::Corrupt`]. Errors found
/// while merging after this function has returned are yielded by the iterator. On every
/// error the temporary directory and its files are removed.
pub fn sort_keys<I, F>(input: I, options: &SortOptions, classify: F) -> Result<SortedKeys>
where
    I: IntoIterator<Item = Result<Vec<u8>>>,
    F: FnMut(&[u8]) -> bool,
{
    sort_keys_with(input, options, classify, &Tuning::default())
}

fn sort_keys_with<I, F>(
    input: I,
    options: &SortOptions,
    mut classify: F,
    tuning: &Tuning,
) -> Result<SortedKeys>
where
    I: IntoIterator<Item = Result<Vec<u8>>>,
    F: FnMut(&[u8]) -> bool,
{
    let budget = options.memory_budget;
    let mut chunk = Chunk::default();
    let mut spill = Spill {
        temp_dir: &options.temp_dir,
        io: &options.io,
        dir: None,
        runs: VecDeque::new(),
        next_id: 0,
    };
    let mut count = 0u64;
    let mut all_matched = true;

    for item in input {
        let key = item?;
        key_len_u32(key.len())?;
        all_matched &= classify(&key);
        if count == 0 {
            chunk.scheme = scheme_of(&key);
        }
        count += 1;
        let code = chunk.scheme.and_then(|scheme| scheme.encode(&key));
        let stored: &[u8] = match (chunk.scheme, &code) {
            (Some(scheme), Some(code)) => code.get(..scheme.code_len()).unwrap_or(code),
            (Some(_), None) => {
                chunk.decode_codes(budget);
                &key
            }
            (None, _) => &key,
        };
        if !chunk.has_room(stored, budget) {
            chunk.sort_dedup();
            spill.write_chunk(&chunk, tuning)?;
            chunk.clear();
        }
        chunk.push(stored, budget);
    }
    chunk.sort_dedup();
    let spilled_runs = spill.runs.len();

    // Every key held as a code of one scheme: the sorted stream stays in codes.
    let coded = chunk
        .scheme
        .filter(|&s| spill.runs.iter().all(|m| m.scheme == Some(s)));

    if spilled_runs == 0 {
        return Ok(SortedKeys {
            state: State::Memory(MemRun::new(chunk)),
            coded,
            count,
            all_matched,
            spilled_runs,
            dir: None,
        });
    }

    let fan_in = tuning.fan_in.max(2);
    let read_buf = (budget / 4 / fan_in).clamp(MIN_READ_BUF, MAX_READ_BUF);
    // Merge passes: merge the oldest runs first; the first group is sized so that the last
    // pass leaves exactly `fan_in` runs (no pass merges more than needed).
    while spill.runs.len() > fan_in {
        let group = (spill.runs.len() - fan_in + 1).min(fan_in);
        let inputs: Vec<RunMeta> = spill.runs.drain(..group).collect();
        let path = spill.new_run_path()?;
        let meta = merge_to_run(&options.io, inputs, path, read_buf, tuning.release_step)?;
        #[cfg(test)]
        if let Some(hook) = tuning.on_run_written {
            hook(&meta.path);
        }
        spill.runs.push_back(meta);
    }

    let mut sources = Vec::with_capacity(spill.runs.len() + 1);
    for meta in spill.runs.drain(..) {
        sources.push(Source::File(RunReader::open(
            meta,
            read_buf,
            tuning.release_step,
        )?));
    }
    if chunk.len > 0 {
        sources.push(Source::Mem(MemRun::new(chunk)));
    }
    if coded.is_some() {
        sources.iter_mut().for_each(Source::keep_codes);
    }
    let merger = Merger::new(sources)?;
    Ok(SortedKeys {
        state: State::Merge(Box::new(merger)),
        coded,
        count,
        all_matched,
        spilled_runs,
        dir: spill.dir,
    })
}

/// The sorted, deduplicated keys produced by [`sort_keys`]: an iterator of strictly
/// increasing keys.
///
/// Spilled run files are deleted once the iterator is exhausted, fails or is dropped. After
/// yielding an `Err` the iterator yields nothing more.
pub struct SortedKeys {
    state: State,
    /// Set when the state yields codes of this scheme (every key had that shape).
    coded: Option<Scheme>,
    count: u64,
    all_matched: bool,
    spilled_runs: usize,
    // Declared after `state` so that open run files are closed before the directory goes.
    dir: Option<tempfile::TempDir>,
}

enum State {
    Memory(MemRun),
    Merge(Box<Merger>),
    Done,
}

impl SortedKeys {
    /// The number of keys read, before deduplication: an upper bound of the number of keys
    /// this iterator yields.
    pub fn len_upper_bound(&self) -> u64 {
        self.count
    }

    /// Whether `classify` returned `true` for every key read (`true` for no keys).
    pub fn all_matched(&self) -> bool {
        self.all_matched
    }

    /// The number of sorted runs spilled to disk while reading the input; 0 when every key
    /// fit in memory. Runs written by intermediate merge passes are not counted.
    pub fn spilled_runs(&self) -> usize {
        self.spilled_runs
    }

    /// The scheme every key had, when there were keys and all had the shape of one:
    /// [`next_stored`](Self::next_stored) then yields their codes. Decides a bulk replace's
    /// table kind (format-spec §5.6) with no second look at the keys.
    pub(crate) fn scheme(&self) -> Option<Scheme> {
        self.coded.filter(|_| self.count > 0)
    }

    /// The next key as the sorter holds it: its code when [`scheme`](Self::scheme) is set,
    /// else the key itself. Spares a table builder decoding keys only to encode them again.
    pub(crate) fn next_stored(&mut self) -> Option<Result<&[u8]>> {
        let more = match &mut self.state {
            State::Memory(mem) => Ok(mem.step()),
            State::Merge(merger) => merger.advance(),
            State::Done => Ok(false),
        };
        match more {
            Ok(true) => match &self.state {
                State::Memory(mem) => Some(Ok(mem.current())),
                State::Merge(merger) => Some(Ok(merger.last.as_slice())),
                State::Done => None,
            },
            Ok(false) => {
                self.finish();
                None
            }
            Err(e) => {
                self.finish();
                Some(Err(e))
            }
        }
    }

    fn finish(&mut self) {
        self.state = State::Done;
        self.dir = None;
    }
}

impl fmt::Debug for SortedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SortedKeys")
            .field("len_upper_bound", &self.count)
            .field("all_matched", &self.all_matched)
            .field("spilled_runs", &self.spilled_runs)
            .field("done", &matches!(self.state, State::Done))
            .finish()
    }
}

impl Iterator for SortedKeys {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let coded = self.coded;
        let stored = self.next_stored()?;
        Some(stored.map(|stored| match coded {
            Some(scheme) => scheme.decode(stored).as_slice().to_vec(),
            None => stored.to_vec(),
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.state {
            State::Memory(mem) => {
                let left = mem.chunk.len - mem.taken;
                (left, Some(left))
            }
            State::Merge(_) => (0, usize::try_from(self.count).ok()),
            State::Done => (0, Some(0)),
        }
    }
}

impl FusedIterator for SortedKeys {}

/// Checks that a key's length fits a run record (and is not the end marker).
fn key_len_u32(len: usize) -> Result<u32> {
    match u32::try_from(len) {
        Ok(l) if l != END_MARKER => Ok(l),
        _ => Err(Error::InvalidKey { len }),
    }
}

// ---------------------------------------------------------------------------------------------
// In-memory chunk

/// A key held in a chunk: its first 8 bytes (big-endian, zero padded) for fast comparisons,
/// and its place in the chunk's arena.
#[derive(Clone, Copy)]
struct Entry {
    prefix: u64,
    off: u32,
    len: u32,
}

fn prefix_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

fn key_of<'a>(arena: &'a [u8], e: &Entry) -> &'a [u8] {
    let off = e.off as usize;
    &arena[off..off + e.len as usize]
}

/// Keys collected in memory whose first byte is the same (bucket 0 also holds the empty key):
/// their bytes back to back in one arena, plus an index.
#[derive(Default)]
struct Bucket {
    arena: Vec<u8>,
    entries: Vec<Entry>,
}

/// Grows `v` to hold `additional` more elements: geometrically, but not past `cap` elements
/// unless needed.
fn grow<T>(v: &mut Vec<T>, additional: usize, min: usize, cap: usize) {
    if v.capacity() - v.len() < additional {
        let need = v.len() + additional;
        let target = (v.capacity() * 2).max(min).min(cap).max(need);
        v.reserve_exact(target - v.len());
    }
}

/// Keys collected in memory, bucketed by first byte. Sorting and reading each bucket on its
/// own keeps the random accesses of a sort within a small part of memory (for random or
/// base64 keys): far fewer cache and TLB misses than one big arena.
struct Chunk {
    buckets: Vec<Bucket>,
    /// When set, the chunk holds codes of this scheme, not keys.
    scheme: Option<Scheme>,
    /// Bytes charged against the budget.
    used: usize,
    /// Keys held.
    len: usize,
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk {
            buckets: (0..256).map(|_| Bucket::default()).collect(),
            scheme: None,
            used: 0,
            len: 0,
        }
    }
}

/// How the sorter holds keys shaped like `first`: as codes of a dense scheme, or as they are.
fn scheme_of(first: &[u8]) -> Option<Scheme> {
    [Scheme::LdHash, Scheme::Uuid]
        .into_iter()
        .find(|scheme| scheme.encode(first).is_some())
}

fn bucket_of(key: &[u8]) -> usize {
    key.first().copied().unwrap_or(0) as usize
}

impl Chunk {
    /// Whether a key of `len` bytes may join the chunk. An empty chunk always takes a key.
    fn has_room(&self, key: &[u8], budget: usize) -> bool {
        if self.len == 0 {
            return true;
        }
        self.used.saturating_add(key.len() + KEY_OVERHEAD) <= budget
            && self.buckets[bucket_of(key)].arena.len() + key.len() <= u32::MAX as usize
    }

    fn push(&mut self, key: &[u8], budget: usize) {
        let bucket = &mut self.buckets[bucket_of(key)];
        grow(&mut bucket.arena, key.len(), 4 << 10, budget);
        grow(&mut bucket.entries, 1, 256, budget / KEY_OVERHEAD + 1);
        // `has_room` and `key_len_u32` keep both within u32.
        let off = bucket.arena.len() as u32;
        bucket.arena.extend_from_slice(key);
        bucket.entries.push(Entry {
            prefix: prefix_of(key),
            off,
            len: key.len() as u32,
        });
        self.used += key.len() + KEY_OVERHEAD;
        self.len += 1;
    }

    /// Turns a chunk of codes into a chunk of their keys (unsorted, as it was), bucket by
    /// bucket so that each bucket of codes is freed once decoded; from then on the chunk
    /// holds keys. Memory may end above the budget: the next key then spills the chunk.
    fn decode_codes(&mut self, budget: usize) {
        let Some(scheme) = self.scheme.take() else {
            return;
        };
        let coded = std::mem::replace(
            &mut self.buckets,
            (0..256).map(|_| Bucket::default()).collect(),
        );
        self.used = 0;
        self.len = 0;
        for bucket in coded {
            for e in &bucket.entries {
                let key = scheme.decode(key_of(&bucket.arena, e));
                self.push(key.as_slice(), budget);
            }
        }
    }

    fn sort_dedup(&mut self) {
        self.len = 0;
        for bucket in &mut self.buckets {
            let arena = &bucket.arena;
            bucket.entries.sort_unstable_by(|a, b| {
                a.prefix
                    .cmp(&b.prefix)
                    .then_with(|| key_of(arena, a).cmp(key_of(arena, b)))
            });
            bucket
                .entries
                .dedup_by(|a, b| a.prefix == b.prefix && key_of(arena, a) == key_of(arena, b));
            self.len += bucket.entries.len();
        }
    }

    /// The keys (or codes) in bucket order (sorted once `sort_dedup` ran).
    fn stored(&self) -> impl Iterator<Item = &[u8]> {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| key_of(&b.arena, e)))
    }

    fn clear(&mut self) {
        for bucket in &mut self.buckets {
            bucket.arena.clear();
            bucket.entries.clear();
        }
        self.used = 0;
        self.len = 0;
    }
}

/// A sorted, deduplicated chunk being read in order.
struct MemRun {
    chunk: Chunk,
    /// Bucket and entry of the next key.
    bucket: usize,
    pos: usize,
    /// Bucket and entry of the key `step` moved to.
    current: (usize, usize),
    /// Keys returned so far.
    taken: usize,
    /// Whether `next_into` decodes codes (else it yields them as they are held).
    decode: bool,
}

impl MemRun {
    fn new(chunk: Chunk) -> Self {
        MemRun {
            chunk,
            bucket: 0,
            pos: 0,
            current: (0, 0),
            taken: 0,
            decode: true,
        }
    }

    /// The next key into `out` (decoded if the chunk holds codes, unless `decode` is off);
    /// `false` at the end.
    fn next_into(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.step() {
            return false;
        }
        out.clear();
        match self.chunk.scheme.filter(|_| self.decode) {
            Some(scheme) => out.extend_from_slice(scheme.decode(self.current()).as_slice()),
            None => out.extend_from_slice(self.current()),
        }
        true
    }

    /// Moves to the next key; `false` at the end.
    fn step(&mut self) -> bool {
        while let Some(b) = self.chunk.buckets.get(self.bucket) {
            if self.pos < b.entries.len() {
                self.current = (self.bucket, self.pos);
                self.pos += 1;
                self.taken += 1;
                return true;
            }
            self.bucket += 1;
            self.pos = 0;
        }
        false
    }

    /// The key (or code) `step` moved to.
    fn current(&self) -> &[u8] {
        let (bucket, pos) = self.current;
        self.chunk
            .buckets
            .get(bucket)
            .and_then(|b| b.entries.get(pos).map(|e| key_of(&b.arena, e)))
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Run files

/// What the sorter remembers of a run file it wrote.
#[derive(Debug, Clone)]
struct RunMeta {
    path: PathBuf,
    /// Set for a coded run: its records are codes of this scheme.
    scheme: Option<Scheme>,
    count: u64,
    max_len: u32,
    total_len: u64,
}

/// The temporary directory and the runs written so far.
struct Spill<'a> {
    temp_dir: &'a Path,
    io: &'a Io,
    dir: Option<tempfile::TempDir>,
    runs: VecDeque<RunMeta>,
    next_id: u64,
}

impl Spill<'_> {
    fn new_run_path(&mut self) -> Result<PathBuf> {
        if self.dir.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("segstore-sort-")
                .tempdir_in(self.temp_dir)
                .map_err(|e| Error::io(self.temp_dir, e))?;
            self.dir = Some(dir);
        }
        let Some(dir) = self.dir.as_ref() else {
            return Err(Error::io(
                self.temp_dir,
                std::io::ErrorKind::NotFound.into(),
            ));
        };
        let path = dir.path().join(format!("run-{:06}", self.next_id));
        self.next_id += 1;
        Ok(path)
    }

    /// Writes a sorted, deduplicated chunk as a new run.
    fn write_chunk(&mut self, chunk: &Chunk, tuning: &Tuning) -> Result<()> {
        let path = self.new_run_path()?;
        let size = chunk.used + TRAILER_LEN;
        let mut w = RunWriter::create(self.io, path, size.min(WRITE_BUF), chunk.scheme)?;
        for stored in chunk.stored() {
            w.push(stored)?;
        }
        let meta = w.finish()?;
        #[cfg(test)]
        if let Some(hook) = tuning.on_run_written {
            hook(&meta.path);
        }
        #[cfg(not(test))]
        let _ = tuning;
        self.runs.push_back(meta);
        Ok(())
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
    u32::from_le_bytes(a)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
    u64::from_le_bytes(a)
}

/// Writes one run file. Buffers itself so that the CRC is computed over large blocks.
struct RunWriter {
    path: PathBuf,
    scheme: Option<Scheme>,
    file: IoWriter,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    count: u64,
    max_len: u32,
    written: u64,
}

impl RunWriter {
    fn create(io: &Io, path: PathBuf, buf_size: usize, scheme: Option<Scheme>) -> Result<Self> {
        let file = io.create_new(&path).map_err(|e| Error::io(&path, e))?;
        let file = io.writer(file, &path);
        Ok(RunWriter {
            path,
            scheme,
            file,
            buf: Vec::with_capacity(buf_size.max(TRAILER_LEN)),
            crc: crc32fast::Hasher::new(),
            count: 0,
            max_len: 0,
            written: 0,
        })
    }

    /// Appends a record: a key, or in a coded run its code. Records must come in strictly
    /// increasing order.
    fn push(&mut self, stored: &[u8]) -> Result<()> {
        let len = key_len_u32(stored.len())?;
        let prefix = match self.scheme {
            Some(scheme) if stored.len() != scheme.code_len() => {
                return Err(Error::InvalidArgument {
                    what: "sort run record",
                    detail: format!(
                        "a code of {} bytes in a run of {}-byte codes",
                        stored.len(),
                        scheme.code_len()
                    ),
                })
            }
            Some(_) => 0,
            None => 4,
        };
        if !self.buf.is_empty() && self.buf.len() + prefix + stored.len() > WRITE_BUF {
            self.flush_buf()?;
        }
        if prefix > 0 {
            self.buf.extend_from_slice(&len.to_le_bytes());
        }
        self.buf.extend_from_slice(stored);
        self.count += 1;
        self.max_len = self.max_len.max(len);
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<()> {
        self.crc.update(&self.buf);
        self.file
            .write_all(&self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the trailer. The file is not fsynced: runs are transient, and the checksum
    /// catches what did not make it back.
    fn finish(mut self) -> Result<RunMeta> {
        self.buf.extend_from_slice(&END_MARKER.to_le_bytes());
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.flush_buf()?;
        let crc = self.crc.clone().finalize();
        self.file
            .write_all(&crc.to_le_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        self.written += 4;
        Ok(RunMeta {
            path: self.path,
            scheme: self.scheme,
            count: self.count,
            max_len: self.max_len,
            total_len: self.written,
        })
    }
}

/// Reads one run file back, verifying it as it goes.
struct RunReader {
    meta: RunMeta,
    file: File,
    /// Raw storage; valid bytes are `buf[pos..end]`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Bytes read from the file so far.
    read_total: u64,
    crc: crc32fast::Hasher,
    /// Records not yet read.
    remaining: u64,
    finished: bool,
    /// The file's bytes before this offset have had their disk blocks released.
    released: u64,
    /// Consumed bytes between two releases; 0 once the file system refused one.
    release_step: u64,
    /// Whether a coded run's records are decoded (else yielded as codes).
    decode: bool,
}

impl RunReader {
    fn open(meta: RunMeta, buf_size: usize, release_step: u64) -> Result<Self> {
        // Writable only so that consumed bytes can be released (`fallocate` needs it).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&meta.path)
            .map_err(|e| Error::io(&meta.path, e))?;
        let size = (buf_size as u64)
            .min(meta.total_len)
            .max(TRAILER_LEN as u64) as usize;
        Ok(RunReader {
            remaining: meta.count,
            meta,
            file,
            buf: vec![0; size],
            pos: 0,
            end: 0,
            read_total: 0,
            crc: crc32fast::Hasher::new(),
            finished: false,
            released: 0,
            release_step,
            decode: true,
        })
    }

    /// Releases the disk blocks under the bytes before `consumed`, once a step's worth has
    /// been consumed. Best effort: the first refusal turns releasing off for this run.
    fn release_consumed(&mut self, consumed: u64) {
        if self.release_step == 0 || consumed < self.released + self.release_step {
            return;
        }
        let upto = consumed - consumed % RELEASE_ALIGN;
        if punch_hole(&self.file, self.released, upto - self.released).is_ok() {
            self.released = upto;
        } else {
            self.release_step = 0;
        }
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::corrupt(&self.meta.path, detail)
    }

    /// The file offset of `buf[pos]`.
    fn offset(&self) -> u64 {
        self.read_total - (self.end - self.pos) as u64
    }

    /// Makes at least `need` bytes available at `buf[pos..]`.
    fn fill(&mut self, need: usize) -> Result<()> {
        if self.end - self.pos >= need {
            return Ok(());
        }
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        // Everything before what the buffer still holds has been consumed.
        self.release_consumed(self.read_total - self.end as u64);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let crc_end = self.meta.total_len.saturating_sub(4);
        while self.end < need {
            let n = match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(self.corrupt(format!(
                        "truncated: the file ends at byte {} but {} bytes were written",
                        self.read_total, self.meta.total_len
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.meta.path, e)),
            };
            if self.read_total < crc_end {
                let take = (n as u64).min(crc_end - self.read_total) as usize;
                self.crc.update(&self.buf[self.end..self.end + take]);
            }
            self.read_total += n as u64;
            self.end += n;
        }
        Ok(())
    }

    /// `len` buffered bytes starting `skip` bytes past the read position (which `fill` made
    /// available).
    fn buffered(&self, skip: usize, len: usize) -> Result<&[u8]> {
        let start = self.pos + skip;
        self.buf
            .get(start..start + len)
            .ok_or_else(|| self.corrupt(format!("{len} bytes expected at buffer offset {start}")))
    }

    /// Reads the next key into `out`; `false` at the end, after the trailer was verified.
    fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        if self.remaining == 0 {
            if !self.finished {
                self.check_trailer()?;
                self.finished = true;
            }
            return Ok(false);
        }
        if let Some(scheme) = self.meta.scheme {
            let len = scheme.code_len();
            self.fill(len)?;
            let stored = self.buffered(0, len)?;
            out.clear();
            if self.decode {
                out.extend_from_slice(scheme.decode(stored).as_slice());
            } else {
                out.extend_from_slice(stored);
            }
            self.pos += len;
            self.remaining -= 1;
            return Ok(true);
        }
        self.fill(4)?;
        let len = le_u32(self.buffered(0, 4)?);
        if len > self.meta.max_len {
            return Err(self.corrupt(format!(
                "record {} at byte {} has length {len}, but no key longer than {} was written",
                self.meta.count - self.remaining,
                self.offset(),
                self.meta.max_len
            )));
        }
        let len = len as usize;
        self.fill(4 + len)?;
        out.clear();
        out.extend_from_slice(self.buffered(4, len)?);
        self.pos += 4 + len;
        self.remaining -= 1;
        Ok(true)
    }

    fn check_trailer(&mut self) -> Result<()> {
        self.fill(TRAILER_LEN)?;
        let marker = le_u32(self.buffered(0, 4)?);
        let count = le_u64(self.buffered(4, 8)?);
        let stored = le_u32(self.buffered(12, 4)?);
        if marker != END_MARKER {
            return Err(self.corrupt(format!(
                "expected the end marker after {} records at byte {}, found {marker:#x}",
                self.meta.count,
                self.offset()
            )));
        }
        if count != self.meta.count {
            return Err(self.corrupt(format!(
                "the trailer counts {count} records, {} were written",
                self.meta.count
            )));
        }
        self.pos += TRAILER_LEN;
        let end = self.offset();
        if end != self.meta.total_len {
            return Err(self.corrupt(format!(
                "the trailer ends at byte {end}, {} bytes were written",
                self.meta.total_len
            )));
        }
        let found = self.crc.clone().finalize();
        if found != stored {
            return Err(self.corrupt(format!(
                "CRC-32 mismatch: the trailer says {stored:#010x}, the bytes give {found:#010x}"
            )));
        }
        let extra = loop {
            match self.file.read(&mut [0u8; 1]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.meta.path, e)),
            }
        };
        if self.pos != self.end || extra != 0 {
            return Err(self.corrupt(format!(
                "bytes follow the trailer, which ends at byte {end}"
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Merging

enum Source {
    File(RunReader),
    Mem(MemRun),
}

impl Source {
    fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        match self {
            Source::File(r) => r.next_into(out),
            Source::Mem(m) => Ok(m.next_into(out)),
        }
    }

    /// Makes the source yield its codes as they are held, not decoded. Only for a merge
    /// whose every source is coded with one scheme: codes then compare like their keys.
    fn keep_codes(&mut self) {
        match self {
            Source::File(r) => r.decode = false,
            Source::Mem(m) => m.decode = false,
        }
    }
}

/// The current key of one source. Ordered by key, then source index.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct HeapItem {
    key: Vec<u8>,
    src: usize,
}

/// A k-way merge of sorted, deduplicated sources that drops duplicates across sources.
/// Key buffers are recycled: advancing allocates nothing once buffers have grown.
struct Merger {
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<HeapItem>>,
    /// The key most recently produced by `advance`.
    last: Vec<u8>,
    have_last: bool,
    spare: Vec<u8>,
}

impl Merger {
    fn new(mut sources: Vec<Source>) -> Result<Self> {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (src, source) in sources.iter_mut().enumerate() {
            let mut key = Vec::new();
            if source.next_into(&mut key)? {
                heap.push(Reverse(HeapItem { key, src }));
            }
        }
        Ok(Merger {
            sources,
            heap,
            last: Vec::new(),
            have_last: false,
            spare: Vec::new(),
        })
    }

    /// Moves to the next distinct key, left in `self.last`. `false` when all sources are done.
    fn advance(&mut self) -> Result<bool> {
        loop {
            let Some(mut top) = self.heap.peek_mut() else {
                return Ok(false);
            };
            let src = top.0.src;
            // `spare` takes the smallest key; its old buffer receives the source's next key.
            std::mem::swap(&mut top.0.key, &mut self.spare);
            let source = &mut self.sources[src];
            if source.next_into(&mut top.0.key)? {
                if top.0.key <= self.spare {
                    if let Source::File(r) = source {
                        return Err(r.corrupt(format!(
                            "keys out of order at record {}",
                            r.meta.count - r.remaining - 1
                        )));
                    }
                }
                drop(top);
            } else {
                // The source is done; its item holds only a stale buffer.
                PeekMut::pop(top);
            }
            if self.have_last && self.spare == self.last {
                continue;
            }
            std::mem::swap(&mut self.last, &mut self.spare);
            self.have_last = true;
            return Ok(true);
        }
    }
}

/// Merges `inputs` into a new run at `path`, then deletes the inputs. The new run is coded
/// when every input is coded with the same scheme.
fn merge_to_run(
    io: &Io,
    inputs: Vec<RunMeta>,
    path: PathBuf,
    read_buf: usize,
    release_step: u64,
) -> Result<RunMeta> {
    let paths: Vec<PathBuf> = inputs.iter().map(|m| m.path.clone()).collect();
    let scheme = inputs.first().and_then(|m| m.scheme);
    let scheme = scheme.filter(|&s| inputs.iter().all(|m| m.scheme == Some(s)));
    let mut sources = Vec::with_capacity(inputs.len());
    for meta in inputs {
        let mut source = Source::File(RunReader::open(meta, read_buf, release_step)?);
        if scheme.is_some() {
            source.keep_codes();
        }
        sources.push(source);
    }
    // Codes in, codes out; else keys in, keys out.
    let mut merger = Merger::new(sources)?;
    let mut w = RunWriter::create(io, path, WRITE_BUF, scheme)?;
    while merger.advance()? {
        w.push(&merger.last)?;
    }
    let meta = w.finish()?;
    drop(merger);
    for p in paths {
        // Best effort: frees disk space early; the directory goes at the end regardless.
        let _ = std::fs::remove_file(p);
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::time::Instant;

    fn opts(dir: &tempfile::TempDir, budget: usize) -> SortOptions {
        SortOptions {
            memory_budget: budget,
            temp_dir: dir.path().to_path_buf(),
            io: Io::default(),
        }
    }

    fn ok_keys(keys: &[Vec<u8>]) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        keys.iter().cloned().map(Ok)
    }

    fn dir_is_empty(dir: &tempfile::TempDir) -> bool {
        std::fs::read_dir(dir.path()).unwrap().next().is_none()
    }

    fn collect(sorted: SortedKeys) -> Result<Vec<Vec<u8>>> {
        sorted.collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn matches_btreeset(
            keys in prop::collection::vec(prop::collection::vec(0u8..4, 0..7), 0..300),
            budget in prop_oneof![Just(0usize), 1usize..200, Just(64), Just(1 << 20)],
            fan_in in 2usize..6,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let tuning = Tuning { fan_in, ..Tuning::default() };
            let mut calls = 0u64;
            let sorted = sort_keys_with(ok_keys(&keys), &opts(&dir, budget), |k| {
                calls += 1;
                k.first() != Some(&3)
            }, &tuning).unwrap();
            prop_assert_eq!(calls, keys.len() as u64);
            prop_assert_eq!(sorted.len_upper_bound(), keys.len() as u64);
            prop_assert_eq!(sorted.all_matched(), keys.iter().all(|k| k.first() != Some(&3)));
            if budget == 1 << 20 {
                prop_assert_eq!(sorted.spilled_runs(), 0);
            }
            let out = collect(sorted).unwrap();
            let expect: Vec<Vec<u8>> = keys.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
            prop_assert_eq!(out, expect);
            prop_assert!(dir_is_empty(&dir));
        }

        #[test]
        fn mixed_shapes_match_btreeset(
            picks in prop::collection::vec((0u8..10, 0u64..60), 0..400),
            budget in prop_oneof![Just(0usize), 1usize..3000, Just(1 << 20)],
            fan_in in 2usize..6,
        ) {
            // Mostly hashes (held as codes), some UUIDs and plain keys: the first key picks
            // the shape; any other shape turns the sort back to plain keys.
            let keys: Vec<Vec<u8>> = picks
                .iter()
                .map(|&(shape, i)| match shape {
                    0..=6 => hash_key(i),
                    7 | 8 => uuid_key(i),
                    _ => format!("k{i}").into_bytes(),
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let tuning = Tuning { fan_in, release_step: 64, ..Tuning::default() };
            let sorted = sort_keys_with(ok_keys(&keys), &opts(&dir, budget), |_| true, &tuning).unwrap();
            let out = collect(sorted).unwrap();
            let expect: Vec<Vec<u8>> = keys.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
            prop_assert_eq!(out, expect);
            prop_assert!(dir_is_empty(&dir));
        }

        #[test]
        fn random_bytes_default_fan_in(
            keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..400),
            budget in 0usize..2000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let sorted = sort_keys(ok_keys(&keys), &opts(&dir, budget), |_| true).unwrap();
            prop_assert!(sorted.all_matched());
            let out = collect(sorted).unwrap();
            let expect: Vec<Vec<u8>> = keys.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
            prop_assert_eq!(out, expect);
        }
    }

    #[test]
    fn many_runs_multi_pass() {
        // 64-byte budget: ~2 keys per run, ~500 runs, fan-in 3: several merge passes.
        let keys: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) % 700).to_be_bytes().to_vec())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            fan_in: 3,
            ..Tuning::default()
        };
        let sorted = sort_keys_with(ok_keys(&keys), &opts(&dir, 64), |_| true, &tuning).unwrap();
        assert!(sorted.spilled_runs() > 100, "{sorted:?}");
        assert_eq!(sorted.len_upper_bound(), 1000);
        let out = collect(sorted).unwrap();
        let expect: Vec<Vec<u8>> = keys
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(out, expect);
        assert!(dir_is_empty(&dir));
    }

    #[test]
    fn empty_input() {
        let dir = tempfile::tempdir().unwrap();
        let sorted = sort_keys(std::iter::empty(), &opts(&dir, 64), |_| false).unwrap();
        assert_eq!(sorted.len_upper_bound(), 0);
        assert!(sorted.all_matched());
        assert_eq!(sorted.spilled_runs(), 0);
        assert!(collect(sorted).unwrap().is_empty());
        assert!(dir_is_empty(&dir));
    }

    #[test]
    fn one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![b"k".to_vec()];
        let mut sorted = sort_keys(ok_keys(&keys), &opts(&dir, 0), |k| k == b"k").unwrap();
        assert_eq!(sorted.len_upper_bound(), 1);
        assert!(sorted.all_matched());
        assert_eq!(sorted.spilled_runs(), 0);
        assert_eq!(sorted.next().unwrap().unwrap(), b"k");
        assert!(sorted.next().is_none());
        assert!(sorted.next().is_none());
    }

    #[test]
    fn empty_and_short_keys_order() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = vec![
            b"a\0".to_vec(),
            b"".to_vec(),
            b"a".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefgh\0".to_vec(),
            b"".to_vec(),
            b"abcdefg".to_vec(),
            vec![0xff; 9],
            b"a".to_vec(),
        ];
        let expect: Vec<Vec<u8>> = keys
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for budget in [0, 60, 1 << 20] {
            let sorted = sort_keys(ok_keys(&keys), &opts(&dir, budget), |_| true).unwrap();
            assert_eq!(collect(sorted).unwrap(), expect, "budget {budget}");
        }
    }

    #[test]
    fn input_error_is_propagated_and_temp_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let input = (0..500u32).map(|i| {
            if i == 400 {
                Err(Error::corrupt("input.csv", "bad line 400"))
            } else {
                Ok(i.to_le_bytes().to_vec())
            }
        });
        let err = sort_keys(input, &opts(&dir, 64), |_| true).unwrap_err();
        assert!(matches!(&err, Error::Corrupt { detail, .. } if detail == "bad line 400"));
        assert!(dir_is_empty(&dir));
    }

    #[test]
    fn missing_temp_dir_is_an_io_error_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let options = SortOptions {
            memory_budget: 0,
            temp_dir: missing.clone(),
            io: Io::default(),
        };
        let keys = vec![b"a".to_vec(), b"b".to_vec()];
        let err = sort_keys(ok_keys(&keys), &options, |_| true).unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, .. } if *path == missing),
            "{err}"
        );
        // In memory, the directory is never needed.
        let options = SortOptions {
            memory_budget: 1 << 20,
            temp_dir: missing,
            io: Io::default(),
        };
        let sorted = sort_keys(ok_keys(&keys), &options, |_| true).unwrap();
        assert_eq!(collect(sorted).unwrap(), keys);
    }

    #[test]
    fn key_length_limit() {
        assert_eq!(key_len_u32(0).unwrap(), 0);
        assert_eq!(key_len_u32(4096).unwrap(), 4096);
        assert_eq!(key_len_u32(u32::MAX as usize - 1).unwrap(), u32::MAX - 1);
        assert!(matches!(
            key_len_u32(u32::MAX as usize),
            Err(Error::InvalidKey { .. })
        ));
        #[cfg(target_pointer_width = "64")]
        assert!(matches!(
            key_len_u32(u32::MAX as usize + 1),
            Err(Error::InvalidKey { .. })
        ));
    }

    fn write_run(path: PathBuf, keys: &[&[u8]]) -> RunMeta {
        write_run_of(path, keys, None)
    }

    fn write_run_of(path: PathBuf, keys: &[&[u8]], scheme: Option<Scheme>) -> RunMeta {
        let mut w = RunWriter::create(&Io::default(), path, 64, scheme).unwrap();
        for k in keys {
            match scheme {
                Some(s) => w.push(&s.encode(k).unwrap()[..s.code_len()]).unwrap(),
                None => w.push(k).unwrap(),
            }
        }
        w.finish().unwrap()
    }

    /// Reads a whole run through a merger (which also checks the order).
    fn read_run(meta: &RunMeta, buf: usize) -> Result<Vec<Vec<u8>>> {
        let reader = RunReader::open(meta.clone(), buf, RELEASE_STEP)?;
        let mut m = Merger::new(vec![Source::File(reader)])?;
        let mut out = Vec::new();
        while m.advance()? {
            out.push(m.last.clone());
        }
        Ok(out)
    }

    #[test]
    fn run_round_trip_and_every_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<&[u8]> = vec![b"", b"a", b"abc", b"b", b"hello world", b"zz"];
        let meta = write_run(dir.path().join("run"), &keys);
        let good = std::fs::read(&meta.path).unwrap();
        assert_eq!(good.len() as u64, meta.total_len);
        for buf in [1, 3, 16, 1 << 20] {
            let out = read_run(&meta, buf).unwrap();
            assert_eq!(out, keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
        }
        assert_every_damage_is_caught(&meta, &good, &[0x01, 0x80, 0xff]);
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&meta.path, &longer).unwrap();
        assert!(matches!(read_run(&meta, 16), Err(Error::Corrupt { .. })));
    }

    /// Every single-byte change (each of `flips`, at every position) and every truncation of
    /// the run `meta`, whose intact bytes are `good`, is reported as corruption.
    fn assert_every_damage_is_caught(meta: &RunMeta, good: &[u8], flips: &[u8]) {
        for i in 0..good.len() {
            for flip in flips {
                let mut bad = good.to_vec();
                bad[i] ^= flip;
                std::fs::write(&meta.path, &bad).unwrap();
                let err = read_run(meta, 16).unwrap_err();
                assert!(matches!(err, Error::Corrupt { .. }), "byte {i}: {err}");
            }
        }
        for n in 0..good.len() {
            std::fs::write(&meta.path, &good[..n]).unwrap();
            let err = read_run(meta, 16).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "length {n}: {err}");
        }
    }

    /// A LaunchDarkly context hash from a number (the same shape the SDKs send).
    fn hash_key(i: u64) -> Vec<u8> {
        crate::context_hash(&format!("user-{i}")).into_bytes()
    }

    fn uuid_key(i: u64) -> Vec<u8> {
        let hex = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()));
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
        .into_bytes()
    }

    #[test]
    fn coded_runs_round_trip_and_every_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        for (scheme, mut keys) in [
            (Scheme::LdHash, (0..6).map(hash_key).collect::<Vec<_>>()),
            (Scheme::Uuid, (0..6).map(uuid_key).collect::<Vec<_>>()),
        ] {
            keys.sort();
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let meta = write_run_of(dir.path().join("coded"), &refs, Some(scheme));
            let good = std::fs::read(&meta.path).unwrap();
            // Codes alone, no lengths: the disk space the codes save.
            assert_eq!(good.len(), 6 * scheme.code_len() + TRAILER_LEN);
            for buf in [1, 7, 1 << 20] {
                assert_eq!(read_run(&meta, buf).unwrap(), keys);
            }
            assert_every_damage_is_caught(&meta, &good, &[0x10]);
            std::fs::remove_file(&meta.path).unwrap();
        }
    }

    /// Sizes of the run files as they are written, for the tests below.
    static RUN_SIZES: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

    fn record_run_size(path: &Path) {
        let len = std::fs::metadata(path).unwrap().len();
        RUN_SIZES.lock().unwrap().push(len);
    }

    #[test]
    fn hash_keys_spill_as_codes_until_another_shape_arrives() {
        // 3,000 hashes, then 1 plain key, then 3,000 more hashes and 3,000 UUIDs, with
        // duplicates, under a budget that spills every few hundred keys.
        let mut keys: Vec<Vec<u8>> = (0..3000).map(hash_key).collect();
        keys.push(b"plain-key".to_vec());
        keys.extend((2000..5000).map(hash_key));
        keys.extend((0..3000).map(uuid_key));
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            fan_in: 4,
            on_run_written: Some(record_run_size),
            ..Tuning::default()
        };
        RUN_SIZES.lock().unwrap().clear();
        let sorted =
            sort_keys_with(ok_keys(&keys), &opts(&dir, 20_000), |_| true, &tuning).unwrap();
        let spilled = sorted.spilled_runs();
        let out = collect(sorted).unwrap();
        let expect: Vec<Vec<u8>> = keys
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(out, expect);
        assert!(dir_is_empty(&dir));
        // The runs written before the plain key hold codes: (32 + 24) bytes charged a key, so
        // 357 keys fill a run, written as 32 bytes each.
        let sizes = RUN_SIZES.lock().unwrap().clone();
        assert!(spilled > 20, "{spilled} runs");
        let coded = (357 * Scheme::LdHash.code_len() + TRAILER_LEN) as u64;
        assert_eq!(sizes[0], coded, "{sizes:?}");
        assert!(sizes[..8].iter().all(|&s| s == coded), "{sizes:?}");
        // A hash-only sort, the same keys' runs: all coded.
        let hashes: Vec<Vec<u8>> = (0..3000).map(hash_key).collect();
        RUN_SIZES.lock().unwrap().clear();
        let tuning = Tuning {
            fan_in: 64,
            on_run_written: Some(record_run_size),
            ..Tuning::default()
        };
        let sorted =
            sort_keys_with(ok_keys(&hashes), &opts(&dir, 20_000), |_| true, &tuning).unwrap();
        let mut expect = hashes.clone();
        expect.sort();
        assert_eq!(collect(sorted).unwrap(), expect);
        let sizes = RUN_SIZES.lock().unwrap().clone();
        assert_eq!(sizes.len(), 3000 / 357, "{sizes:?}");
        assert!(sizes.iter().all(|&s| s == coded), "{sizes:?}");
    }

    #[test]
    fn a_run_releases_its_disk_blocks_as_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = {
            let mut k: Vec<Vec<u8>> = (0..40_000).map(hash_key).collect();
            k.sort();
            k
        };
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let meta = write_run_of(dir.path().join("run"), &refs, Some(Scheme::LdHash));
        let allocated = || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&meta.path).unwrap().blocks() * 512
        };
        // Not synced: the runs of a real sort are still in the page cache when read.
        let before = allocated();
        assert!(before >= meta.total_len, "{before} < {}", meta.total_len);
        // Only a file system that cannot punch holes excuses the reader from releasing.
        let probe = dir.path().join("probe");
        std::fs::write(&probe, vec![1u8; 1 << 16]).unwrap();
        let probe = std::fs::OpenOptions::new()
            .write(true)
            .open(&probe)
            .unwrap();
        if let Err(e) = punch_hole(&probe, 0, 4096) {
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            eprintln!("punch_hole unsupported here: skipped");
            return;
        }
        let mut reader = RunReader::open(meta.clone(), 64 << 10, 256 << 10).unwrap();
        let mut key = Vec::new();
        let mut read = 0usize;
        let mut halfway = 0;
        while reader.next_into(&mut key).unwrap() {
            assert_eq!(key, keys[read]);
            read += 1;
            if read == keys.len() / 2 {
                halfway = allocated();
            }
        }
        assert_eq!(read, keys.len());
        // Half read: at least a third of the file released; the whole read: all but the tail.
        assert!(halfway < before - before / 3, "{halfway} of {before}");
        let after = allocated();
        assert!(after < before / 4, "{after} of {before}");
        assert_eq!(std::fs::metadata(&meta.path).unwrap().len(), meta.total_len);
    }

    fn flip_middle_byte(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x5a;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn corrupted_spilled_run_is_detected() {
        let keys: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| format!("key-{i:05}").into_bytes())
            .collect();
        for fan_in in [2, MERGE_FAN_IN] {
            let dir = tempfile::tempdir().unwrap();
            let tuning = Tuning {
                fan_in,
                on_run_written: Some(flip_middle_byte),
                ..Tuning::default()
            };
            // ~100 runs: with fan-in 2 the damage shows in a merge pass, inside sort_keys;
            // with the default fan-in (one pass) it shows while iterating.
            let result = sort_keys_with(ok_keys(&keys), &opts(&dir, 700), |_| true, &tuning)
                .and_then(collect);
            let err = result.unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(dir_is_empty(&dir));
        }
        // Damage to a single run, found only while iterating.
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            fan_in: MERGE_FAN_IN,
            on_run_written: Some(flip_middle_byte),
            ..Tuning::default()
        };
        let mut sorted =
            sort_keys_with(ok_keys(&keys), &opts(&dir, 40_000), |_| true, &tuning).unwrap();
        assert_eq!(sorted.spilled_runs(), 1);
        let err = sorted.by_ref().find_map(|r| r.err()).expect("an error");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(sorted.next().is_none());
        assert!(dir_is_empty(&dir));
    }

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_keys(n: usize, seed: u64) -> impl Iterator<Item = Result<Vec<u8>>> {
        let mut state = seed;
        (0..n).map(move |_| {
            let mut k = Vec::with_capacity(44);
            for _ in 0..5 {
                k.extend_from_slice(&splitmix(&mut state).to_le_bytes());
            }
            k.extend_from_slice(&splitmix(&mut state).to_le_bytes()[..4]);
            Ok(k)
        })
    }

    /// `cargo test --release --lib extsort -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_10m_random_44_byte_keys() {
        const N: usize = 10_000_000;
        let t = Instant::now();
        let n = random_keys(N, 7).map(|k| k.unwrap().len()).sum::<usize>();
        assert_eq!(n, N * 44);
        eprintln!("generating the input alone: {:?}", t.elapsed());
        for budget in [256 << 20, 64 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let sorted =
                sort_keys(random_keys(N, 7), &opts(&dir, budget), |k| k.len() == 44).unwrap();
            let read = t.elapsed();
            let runs = sorted.spilled_runs();
            let mut count = 0usize;
            let mut prev: Vec<u8> = Vec::new();
            for k in sorted {
                let k = k.unwrap();
                assert!(k > prev);
                prev = k;
                count += 1;
            }
            assert_eq!(count, N);
            eprintln!(
                "budget {} MiB: {runs} runs, sort_keys {read:?}, total {:?}",
                budget >> 20,
                t.elapsed()
            );
        }
    }
}
