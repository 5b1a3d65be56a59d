//! Shared by the benches: key shapes, cached read-only fixtures (a store and a bare fst over the
//! same keys), a latency-percentile harness and the Redis baseline.
//!
//! Sizes: `SEGSTORE_BENCH_KEYS` (default 1,000,000; 10,000,000 for the BENCHMARKS.md figures;
//! 100,000,000 works given the disk and memory). Fixtures for the read benches are built once
//! under `target/segstore-bench/` (or `SEGSTORE_BENCH_DIR`) and reused; `SEGSTORE_BENCH_REBUILD=1`
//! rebuilds them. Write benches always build from scratch.
#![allow(dead_code)] // each bench uses part of this module

use hdrhistogram::Histogram;
use segstore::{context_hash, List, Options, Store};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A bench error: benches stop at the first one, with its message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The segment every single-segment fixture puts its keys in.
pub const SEGMENT: &str = "bench.g1";

/// Keys in the large segment (`SEGSTORE_BENCH_KEYS`, default 1M).
pub fn key_count() -> u64 {
    std::env::var("SEGSTORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000)
}

/// Whether this is a large run (10M keys or more).
pub fn large_run() -> bool {
    key_count() >= 10_000_000
}

/// The three key shapes of the brief.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// LaunchDarkly context hashes: base64 of SHA-256, 44 characters.
    LdHash,
    /// UUID strings, 36 characters, random.
    Uuid,
    /// Sequential ids like `user-00001234`.
    Sequential,
}

/// Every shape, in report order.
pub const SHAPES: [Shape; 3] = [Shape::LdHash, Shape::Uuid, Shape::Sequential];

fn uuid_string(bits: u128) -> Vec<u8> {
    // Version 4, variant 1, as a random UUID would have.
    let bits = (bits & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
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

impl Shape {
    /// The name used in reports and fixture directories.
    pub fn name(self) -> &'static str {
        match self {
            Shape::LdHash => "ld-hash",
            Shape::Uuid => "uuid",
            Shape::Sequential => "sequential",
        }
    }

    /// Key number `i` of the set (deterministic, random access).
    pub fn key(self, i: u64) -> Vec<u8> {
        match self {
            Shape::LdHash => context_hash(&format!("user-{i}")).into_bytes(),
            Shape::Uuid => uuid_string(xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), 1)),
            Shape::Sequential => format!("user-{i:08}").into_bytes(),
        }
    }

    /// Key number `i` of a set disjoint from `key(0..n)`, same shape.
    pub fn miss(self, i: u64, n: u64) -> Vec<u8> {
        match self {
            Shape::LdHash => context_hash(&format!("absent-{i}")).into_bytes(),
            Shape::Uuid => uuid_string(xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), 2)),
            Shape::Sequential => format!("user-{:08}", n + i).into_bytes(),
        }
    }
}

/// A permutation of `0..n` (multiplication by a prime larger than any `n` used here), so
/// sequential keys arrive unsorted.
pub fn scatter(i: u64, n: u64) -> u64 {
    ((i as u128 * 2_147_483_647u128) % n as u128) as u64
}

/// `count` probe indexes spread at random over `0..n` (fixed seed).
pub fn probe_indexes(count: usize, n: u64, seed: u64) -> Vec<u64> {
    (0..count as u64)
        .map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed) % n)
        .collect()
}

/// Where fixtures live.
pub fn bench_root() -> PathBuf {
    std::env::var_os("SEGSTORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/segstore-bench"))
}

/// The store options every fixture uses to build: no background compaction.
pub fn build_options() -> Options {
    Options {
        auto_compact: false,
        ..Options::default()
    }
}

/// A store holding `n` keys of one shape in [`SEGMENT`]'s included list, and a bare fst set
/// over the same keys, built once and reused.
pub struct Fixture {
    /// Fixture directory.
    pub dir: PathBuf,
    /// Key shape.
    pub shape: Shape,
    /// Keys.
    pub n: u64,
}

const FIXTURE_VERSION: &str = "segstore-bench fixture 7 (table v2, 16 KiB block sums)";

impl Fixture {
    /// The store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The bare fst file.
    pub fn fst_path(&self) -> PathBuf {
        self.dir.join("bare.fst")
    }

    /// Bytes of the store's table files.
    pub fn table_bytes(&self) -> BenchResult<u64> {
        Ok(segstore::stats(&self.store_dir())?.table_bytes)
    }

    /// Bytes of the bare fst file.
    pub fn fst_bytes(&self) -> BenchResult<u64> {
        Ok(std::fs::metadata(self.fst_path())?.len())
    }
}

/// The fixture for `shape` at `n` keys, built if missing.
pub fn fixture(shape: Shape, n: u64) -> BenchResult<Fixture> {
    let dir = bench_root().join(format!("{}-{n}", shape.name()));
    let fixture = Fixture { dir, shape, n };
    let marker = fixture.dir.join("COMPLETE");
    let rebuild = std::env::var_os("SEGSTORE_BENCH_REBUILD").is_some_and(|v| v == "1");
    let current = std::fs::read_to_string(&marker).is_ok_and(|m| m == FIXTURE_VERSION);
    // A fixture written by an older on-disk format no longer opens: rebuild it then.
    let opens = || {
        segstore::ReadOnlyStore::open(
            fixture.store_dir(),
            Options {
                poll_interval: None,
                verification: segstore::Verification::Structure,
                ..Options::default()
            },
        )
        .is_ok()
    };
    if current && !rebuild && opens() {
        return Ok(fixture);
    }
    if fixture.dir.exists() {
        std::fs::remove_dir_all(&fixture.dir)?;
    }
    std::fs::create_dir_all(&fixture.dir)?;
    eprintln!("building fixture {} ({n} keys)...", fixture.dir.display());
    let started = Instant::now();
    let mut keys: Vec<Vec<u8>> = (0..n).map(|i| shape.key(scatter(i, n))).collect();
    {
        let store = Store::create(fixture.store_dir(), build_options())?;
        store.replace_list(SEGMENT, None, List::Included, keys.iter().cloned().map(Ok))?;
    }
    keys.sort_unstable();
    write_fst(&fixture.fst_path(), &keys)?;
    std::fs::write(&marker, FIXTURE_VERSION)?;
    eprintln!("  built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(fixture)
}

/// Writes a bare fst set of `sorted` keys to `path` and fsyncs it.
///
/// Written through the same aligned 2 MiB chunks as segstore's tables, so both files sit in
/// the page cache in the same folio sizes and the comparison is of the formats alone.
pub fn write_fst(path: &Path, sorted: &[Vec<u8>]) -> BenchResult<()> {
    let io = segstore::io::Io::default();
    let file = std::fs::File::create(path)?;
    let writer = segstore::io::ChunkWriter::new(io.writer(file, path));
    let mut builder = fst::SetBuilder::new(writer)?;
    for key in sorted {
        builder.insert(key)?;
    }
    let writer = builder.into_inner()?;
    writer.into_inner()?.sync_all()?;
    Ok(())
}

/// Maps a bare fst set; `random` applies `MADV_RANDOM` first.
pub fn open_fst(path: &Path, random: bool) -> BenchResult<fst::Set<memmap2::Mmap>> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the bench wrote this file and nothing modifies or truncates it while mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    if random {
        map.advise(memmap2::Advice::Random)?;
    }
    Ok(fst::Set::new(map)?)
}

/// Total bytes of the files in `dir` (not recursive).
pub fn dir_bytes(dir: &Path) -> BenchResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Writes dirty pages back and empties the page cache (`/proc/sys/vm/drop_caches`: root only).
pub fn drop_page_cache() -> BenchResult<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail; it only flushes dirty pages.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")?;
    Ok(())
}

/// `RssAnon` of this process in KiB, from /proc/self/status.
pub fn rss_anon_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `(FilePmdMapped, AnonHugePages, RssAnon)` of this process in KiB (`/proc/self/smaps_rollup`):
/// file pages mapped as 2 MiB huge pages, anonymous memory in transparent huge pages, and all
/// anonymous memory.
pub fn huge_page_kib() -> Option<(u64, u64, u64)> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((
        field("FilePmdMapped:")?,
        field("AnonHugePages:")?,
        rss_anon_kib()?,
    ))
}

/// [`huge_page_kib`] for a report line.
pub fn huge_page_report() -> String {
    match huge_page_kib() {
        Some((file, anon, rss)) => format!(
            "FilePmdMapped {:.1} MiB, AnonHugePages {:.1} MiB, RssAnon {:.1} MiB",
            file as f64 / 1024.0,
            anon as f64 / 1024.0,
            rss as f64 / 1024.0
        ),
        None => "smaps_rollup unavailable".into(),
    }
}

/// The machine, for reports: CPU model and core count.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}

// ---------------------------------------------------------------------------------------------
// Latency harness

/// Calls per timed batch.
pub const BATCH: usize = 64;

/// Percentiles of one measurement, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median of batch means (each batch: [`BATCH`] calls timed together, divided).
    pub p50: f64,
    /// 99th percentile of batch means.
    pub p99: f64,
    /// Median of single calls, each timed alone, minus the timer's own cost.
    pub call_p50: f64,
    /// 99th percentile of single calls, timed alone, minus the timer's own cost.
    pub call_p99: f64,
    /// Mean over all batched calls.
    pub mean: f64,
    /// Calls measured (both methods, all threads).
    pub calls: u64,
}

/// What one `Instant::now()` pair costs here, in ns (median of many).
pub fn timer_overhead_ns() -> u64 {
    let mut samples: Vec<u64> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn new_histogram() -> Histogram<u64> {
    // Picoseconds, 1 ps .. 100 s, 3 significant digits. Auto-resizes beyond that.
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
    h.auto(true);
    h
}

/// The fewest warm-up calls [`measure`] makes: the largest probe set.
const WARM_CALLS: usize = 1 << 18;

/// Measures `calls_per_thread` calls on each of `threads` threads: half timed in batches of
/// [`BATCH`] (the batch's time divided by its size is one sample), half timed one by one with
/// the timer's own median cost subtracted. `make(thread)` builds each thread's call; the call
/// receives a running index (distinct per thread) to pick its probe.
pub fn measure<M, F>(threads: usize, calls_per_thread: usize, make: M) -> Latency
where
    M: Fn(usize) -> F + Sync,
    F: FnMut(usize),
{
    let overhead = timer_overhead_ns();
    let batches = (calls_per_thread / 2 / BATCH).max(1);
    let singles = (calls_per_thread / 2).max(1);
    let start_together = std::sync::Barrier::new(threads);
    let results: Vec<(Histogram<u64>, Histogram<u64>, u128, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let make = &make;
                let start_together = &start_together;
                s.spawn(move || {
                    let mut call = make(t);
                    start_together.wait();
                    let base = t * 1_000_003;
                    // Warm-up: enough calls to touch every probe once (probe sets are at most
                    // 2^18 here, indexed by consecutive `i`), so page-table faults of a freshly
                    // mapped file are not measured.
                    let warm = (calls_per_thread / 2).max(WARM_CALLS);
                    for i in 0..warm {
                        call(base + i);
                    }
                    let mut batch_hist = new_histogram();
                    let mut call_hist = new_histogram();
                    let mut total_ns: u128 = 0;
                    let mut i = base + warm;
                    for _ in 0..batches {
                        let started = Instant::now();
                        for _ in 0..BATCH {
                            call(i);
                            i += 1;
                        }
                        let ns = started.elapsed().as_nanos();
                        total_ns += ns;
                        let _ = batch_hist.record(((ns * 1000) / BATCH as u128).max(1) as u64);
                    }
                    for _ in 0..singles {
                        let started = Instant::now();
                        call(i);
                        let ns = started.elapsed().as_nanos() as u64;
                        i += 1;
                        let _ = call_hist.record((ns.saturating_sub(overhead) * 1000).max(1));
                    }
                    (batch_hist, call_hist, total_ns, (batches * BATCH) as u64)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut batch_all = new_histogram();
    let mut call_all = new_histogram();
    let mut total_ns = 0u128;
    let mut batched_calls = 0u64;
    for (b, c, ns, n) in &results {
        let _ = batch_all.add(b);
        let _ = call_all.add(c);
        total_ns += ns;
        batched_calls += n;
    }
    Latency {
        p50: batch_all.value_at_quantile(0.50) as f64 / 1000.0,
        p99: batch_all.value_at_quantile(0.99) as f64 / 1000.0,
        call_p50: call_all.value_at_quantile(0.50) as f64 / 1000.0,
        call_p99: call_all.value_at_quantile(0.99) as f64 / 1000.0,
        mean: total_ns as f64 / batched_calls.max(1) as f64,
        calls: batched_calls + call_all.len(),
    }
}

/// Formats nanoseconds for a table: ns below 10 µs, µs above.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

/// Prints the header of a latency table.
pub fn print_latency_header(title: &str) {
    println!("\n### {title}\n");
    println!(
        "| measurement | threads | p50 (batch of {BATCH}) | p99 (batch of {BATCH}) | p50 (single call) | p99 (single call) | mean |"
    );
    println!("|---|---|---|---|---|---|---|");
}

/// Prints one row of a latency table.
pub fn print_latency_row(name: &str, threads: usize, l: &Latency) {
    println!(
        "| {name} | {threads} | {} | {} | {} | {} | {} |",
        fmt_ns(l.p50),
        fmt_ns(l.p99),
        fmt_ns(l.call_p50),
        fmt_ns(l.call_p99),
        fmt_ns(l.mean)
    );
    let _ = std::io::stdout().flush();
}

/// Seconds as a short string.
pub fn fmt_secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Redis, LaunchDarkly big-segment layout

/// Redis key prefix the benches write under.
pub const REDIS_PREFIX: &str = "segstore-bench";

/// The Redis port from `SEGSTORE_BENCH_REDIS_PORT` (Redis on 127.0.0.1), if set.
pub fn redis_port() -> Option<u16> {
    std::env::var("SEGSTORE_BENCH_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
}

/// A connection to the bench Redis.
pub fn redis_connection(port: u16) -> BenchResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    Ok(client.get_connection()?)
}

/// The include-set key of a context hash, as LaunchDarkly's Redis big-segment store names it.
pub fn redis_include_key(hash: &[u8]) -> Vec<u8> {
    let mut k = format!("{REDIS_PREFIX}:big_segment_include:").into_bytes();
    k.extend_from_slice(hash);
    k
}

/// The exclude-set key of a context hash.
pub fn redis_exclude_key(hash: &[u8]) -> Vec<u8> {
    let mut k = format!("{REDIS_PREFIX}:big_segment_exclude:").into_bytes();
    k.extend_from_slice(hash);
    k
}

/// Loads `n` keys of `shape` into Redis as members of [`SEGMENT`]'s include list (one set per
/// context hash, holding the segment ref), pipelined in chunks. Skipped when the marker key
/// says the same load was done before.
pub fn redis_load(con: &mut redis::Connection, shape: Shape, n: u64) -> BenchResult<()> {
    let marker = format!("{REDIS_PREFIX}:loaded:{}", shape.name());
    let loaded: Option<u64> = redis::cmd("GET").arg(&marker).query(con)?;
    if loaded == Some(n) {
        return Ok(());
    }
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        let mut pipe = redis::pipe();
        for j in i..end {
            pipe.cmd("SADD")
                .arg(redis_include_key(&shape.key(j)))
                .arg(SEGMENT)
                .ignore();
        }
        pipe.query::<()>(con)?;
        i = end;
    }
    redis::cmd("SET").arg(&marker).arg(n).query::<()>(con)?;
    eprintln!(
        "loaded {n} {} keys into Redis in {:.1} s",
        shape.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
