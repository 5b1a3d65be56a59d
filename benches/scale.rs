//! The growth table's large rows: one segment of `SEGSTORE_BENCH_KEYS` random LaunchDarkly
//! context hashes, bulk loaded through the real `segstore import` binary, then read.
//!
//! - **import**: this process generates the keys (base64 of 32 pseudo-random bytes, in no
//!   order) and writes them, one a line, into `segstore import -`'s stdin. Reported: wall time
//!   and keys/s, the importer's peak RSS (`getrusage(RUSAGE_CHILDREN)`), and the peak disk the
//!   store directory took while importing (blocks allocated to its files, sort runs included,
//!   sampled every 250 ms), against the final store;
//! - **cold**: the page cache dropped (root only), the store opened at
//!   `Verification::Structure`, then 1,000 lookups of keys never looked up before, each timed,
//!   with the device's completed read requests (`/sys/dev/block/M:m/stat`) and this process's
//!   major faults counted around each lookup. Twice: with nothing resident, and with only the
//!   table's bucket index read into the page cache first (hits, then misses);
//! - **resident**: check hit and miss p50/p99 of probe keys whose pages were read once before
//!   (the latency harness of the other benches), beside a 10M-key store imported the same
//!   way (`scale-10000000`, imported first if missing) in the same process, as a ratio; both
//!   stores start from a dropped page cache, so both are in the small folios random reads
//!   bring in (`SEGSTORE_BENCH_READ_INDEX=1` first reads both bucket indexes whole, which
//!   puts them in 2 MiB folios: what the index's page walks cost);
//! - open time (page cache warm) and the reader's anonymous memory.
//!
//! `SEGSTORE_BENCH_KEYS=100000000 cargo bench --bench scale` (about 4 GB of disk; 1B takes
//! about 34 GB for the store plus the sort's runs, which shrink as the table grows, and an
//! hour). The store is kept under `target/segstore-bench/scale-<n>` and reused;
//! `SEGSTORE_BENCH_REBUILD=1` imports again. Arguments select sections: `import`, `read`.

mod common;

use common::*;
use segstore::{Options, ReadOnlyStore, Status, Verification};
use std::hint::black_box;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const VERSION: &str = "segstore-bench scale 1";
const COLD_LOOKUPS: usize = 1_000;
const PROBES: usize = 100_000;
const CALLS: usize = 2_000_000;
/// The 10M-key fixture the resident figures are compared with.
const BASELINE_KEYS: u64 = 10_000_000;

/// Key `i` of the imported set (`salt` 0) or of a disjoint set of absent keys (`salt` 1).
fn scale_key(i: u64, salt: u64) -> [u8; 44] {
    use base64::Engine;
    let mut raw = [0u8; 32];
    let a = xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), 2 * salt + 11);
    let b = xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), 2 * salt + 12);
    raw[..16].copy_from_slice(&a.to_le_bytes());
    raw[16..].copy_from_slice(&b.to_le_bytes());
    let mut out = [0u8; 44];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(raw, &mut out)
        .unwrap_or(0);
    debug_assert_eq!(n, 44);
    out
}

/// `count` keys of the imported set of `n`, spread at random (`seed`).
fn hit_keys(count: usize, n: u64, seed: u64) -> Vec<[u8; 44]> {
    probe_indexes(count, n, seed)
        .into_iter()
        .map(|i| scale_key(i, 0))
        .collect()
}

/// `count` absent keys, none of them among the cold rows' misses.
fn miss_keys(count: usize) -> Vec<[u8; 44]> {
    (0..count as u64)
        .map(|i| scale_key(i + 1_000_000, 1))
        .collect()
}

fn store_dir(n: u64) -> PathBuf {
    bench_root().join(format!("scale-{n}"))
}

/// Blocks allocated to the files under `dir` (recursively), in bytes.
fn allocated_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            allocated_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// The largest resident set of any child this process waited for, in KiB.
fn children_max_rss_kib() -> u64 {
    // SAFETY: `getrusage` writes one `rusage` struct into the zeroed value it is given and
    // reads nothing else; the pointer is to a live local.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    if rc == 0 {
        usage.ru_maxrss as u64
    } else {
        0
    }
}

fn import(n: u64) -> BenchResult<()> {
    let dir = store_dir(n);
    let marker = dir.join("COMPLETE");
    let rebuild = std::env::var_os("SEGSTORE_BENCH_REBUILD").is_some_and(|v| v == "1");
    if !rebuild && std::fs::read_to_string(&marker).is_ok_and(|m| m.starts_with(VERSION)) {
        println!(
            "\n(import of {n} keys: reusing {}; SEGSTORE_BENCH_REBUILD=1 imports again)\n{}",
            dir.display(),
            std::fs::read_to_string(&marker)?
        );
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let store = dir.join("store");
    let bin = env!("CARGO_BIN_EXE_segstore");

    // What the generator alone can do, so a slow importer is not mistaken for it.
    let sample = 5_000_000.min(n);
    let t = Instant::now();
    let mut sink = 0u64;
    for i in 0..sample {
        sink = sink.wrapping_add(u64::from(scale_key(i, 0)[7]));
    }
    black_box(sink);
    let generator_rate = sample as f64 / t.elapsed().as_secs_f64();

    let status = Command::new(bin)
        .args(["--quiet", "--dir"])
        .arg(&store)
        .arg("init")
        .status()?;
    if !status.success() {
        return Err(format!("segstore init failed: {status}").into());
    }
    let done = AtomicBool::new(false);
    let peak_disk = AtomicU64::new(0);
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["--dir"])
        .arg(&store)
        .args(["import", "--segment", SEGMENT, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let (fed, summary) = std::thread::scope(|s| -> BenchResult<_> {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak_disk.fetch_max(allocated_bytes(&store), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let feeder = s.spawn(move || -> std::io::Result<Duration> {
            let mut w = BufWriter::with_capacity(1 << 20, stdin);
            for i in 0..n {
                w.write_all(&scale_key(i, 0))?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            Ok(started.elapsed())
        });
        let mut summary = String::new();
        stdout.read_to_string(&mut summary)?;
        let status = child.wait()?;
        done.store(true, Ordering::Relaxed);
        let fed = feeder.join().map_err(|_| "the feeder panicked")??;
        if !status.success() {
            return Err(format!("segstore import failed: {status}").into());
        }
        Ok((fed, summary))
    })?;
    let took = started.elapsed();
    let rss_kib = children_max_rss_kib();
    let stats = segstore::stats(&store)?;
    let final_bytes = allocated_bytes(&store);
    peak_disk.fetch_max(final_bytes, Ordering::Relaxed);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let report = format!(
        "{VERSION}\n\
         | keys | import (wall) | keys/s | importer peak RSS | peak disk while importing | store on disk | table B/key | generator alone |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {n} | {:.1} s | {:.2}M | {:.2} GiB | {:.2} GiB | {:.2} GiB | {:.3} | {:.1}M keys/s |\n\
         (all keys written into the pipe after {:.1} s; importer said: {})\n",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64() / 1e6,
        rss_kib as f64 / (1024.0 * 1024.0),
        gib(peak_disk.load(Ordering::Relaxed)),
        gib(final_bytes),
        stats.table_bytes as f64 / n as f64,
        generator_rate / 1e6,
        fed.as_secs_f64(),
        summary.trim().replace('\n', " / "),
    );
    println!("\n### Import of {n} random LD hashes through `segstore import -`\n\n{report}");
    std::fs::write(&marker, report)?;
    Ok(())
}

/// Completed read requests and sectors read of the device holding `path`.
struct Device {
    stat: PathBuf,
}

impl Device {
    fn of(path: &Path) -> Option<Device> {
        let dev = std::fs::metadata(path).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let stat = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
        stat.exists().then_some(Device { stat })
    }

    /// (read requests completed, sectors read).
    fn reads(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(&self.stat).unwrap_or_default();
        let fields: Vec<u64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        (
            fields.first().copied().unwrap_or(0),
            fields.get(2).copied().unwrap_or(0),
        )
    }
}

/// This process's major page faults so far.
fn major_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name's closing parenthesis; majflt is the 10th of them.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(9))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

fn reader_options() -> Options {
    Options {
        poll_interval: None,
        verification: Verification::Structure,
        ..Options::default()
    }
}

/// The one table file of a single-segment store.
fn table_file(store: &Path) -> BenchResult<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(store)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".sstbl") {
            let len = entry.metadata()?.len();
            if best.as_ref().is_none_or(|(l, _)| len > *l) {
                best = Some((len, entry.path()));
            }
        }
    }
    Ok(best.ok_or("no table file")?.1)
}

/// Reads the table's bucket index (and the block sums and footer after it) into the page
/// cache: everything after the header and the `n` 32-byte codes.
fn read_index(table: &Path, n: u64) -> BenchResult<u64> {
    let mut file = std::fs::File::open(table)?;
    let start = 64 + 32 * n;
    file.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            break;
        }
        total += got as u64;
    }
    Ok(total)
}

/// 1,000 timed lookups, with read requests and major faults counted around each.
struct ColdRow {
    what: String,
    first_ns: u64,
    p50_ns: u64,
    p99_ns: u64,
    reads_mean: f64,
    /// Lookups that needed 0, 1, 2, 3 or more read requests.
    reads_hist: [usize; 4],
    faults_mean: f64,
    kib_mean: f64,
}

fn cold_lookups<F: FnMut(&[u8]) -> Status>(
    what: &str,
    keys: &[[u8; 44]],
    expect: Status,
    device: Option<&Device>,
    mut check: F,
) -> BenchResult<ColdRow> {
    let mut times = Vec::with_capacity(keys.len());
    let mut reads = Vec::with_capacity(keys.len());
    let mut faults = 0u64;
    let mut sectors = 0u64;
    for key in keys {
        let (r0, s0) = device.map_or((0, 0), Device::reads);
        let f0 = major_faults();
        let t = Instant::now();
        let status = check(black_box(key));
        let ns = t.elapsed().as_nanos() as u64;
        let f1 = major_faults();
        let (r1, s1) = device.map_or((0, 0), Device::reads);
        if status != expect {
            return Err(format!("{what}: {status:?}, expected {expect:?}").into());
        }
        times.push(ns);
        reads.push(r1.saturating_sub(r0));
        faults += f1 - f0;
        sectors += s1.saturating_sub(s0);
    }
    let first_ns = times.first().copied().unwrap_or(0);
    times.sort_unstable();
    let mut hist = [0usize; 4];
    for &r in &reads {
        hist[(r as usize).min(3)] += 1;
    }
    let count = keys.len().max(1) as f64;
    Ok(ColdRow {
        what: what.to_owned(),
        first_ns,
        p50_ns: times.get(times.len() / 2).copied().unwrap_or(0),
        p99_ns: times
            .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0),
        reads_mean: reads.iter().sum::<u64>() as f64 / count,
        reads_hist: hist,
        faults_mean: faults as f64 / count,
        kib_mean: sectors as f64 * 512.0 / 1024.0 / count,
    })
}

fn print_cold(rows: &[ColdRow]) {
    println!("| lookups (1,000 each) | first | p50 | p99 | read requests / lookup | lookups with 0 / 1 / 2 / 3+ reads | major faults / lookup | KiB read / lookup |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {} / {} / {} / {} | {:.2} | {:.1} |",
            r.what,
            fmt_ns(r.first_ns as f64),
            fmt_ns(r.p50_ns as f64),
            fmt_ns(r.p99_ns as f64),
            r.reads_mean,
            r.reads_hist[0],
            r.reads_hist[1],
            r.reads_hist[2],
            r.reads_hist[3],
            r.faults_mean,
            r.kib_mean
        );
    }
}

fn read(n: u64) -> BenchResult<()> {
    let store = store_dir(n).join("store");
    if !store.join("MANIFEST").exists() && std::fs::read_dir(&store).is_err() {
        return Err(format!(
            "no store at {}: run the import section first",
            store.display()
        )
        .into());
    }
    let table = table_file(&store)?;
    let device = Device::of(&table);
    let table_len = std::fs::metadata(&table)?.len();
    println!(
        "\n### Reads of {n} random LD hashes in one segment — {}\n\ntable {} ({:.2} GB); device stats: {}",
        machine(),
        table.display(),
        table_len as f64 / 1e9,
        device.as_ref().map_or("unavailable".into(), |d| d.stat.display().to_string())
    );

    // Probe sets, allocated before anything is measured. Disjoint index ranges, so no cold
    // lookup meets a page an earlier section read on purpose.
    let cold_a = hit_keys(COLD_LOOKUPS, n, 41);
    let cold_b = hit_keys(COLD_LOOKUPS, n, 42);
    let cold_miss: Vec<[u8; 44]> = (0..COLD_LOOKUPS as u64).map(|i| scale_key(i, 1)).collect();
    let hits = hit_keys(PROBES, n, 43);
    let misses = miss_keys(PROBES);

    // Warm this process's code on a tiny store, so the cold rows time the disk, not the code.
    let tiny = fixture(Shape::LdHash, 1_000)?;
    {
        let r = ReadOnlyStore::open(tiny.store_dir(), reader_options())?;
        let snap = r.snapshot();
        for i in 0..100 {
            black_box(snap.check(SEGMENT, &Shape::LdHash.key(i))?);
        }
    }

    // Cold: nothing resident.
    let rss_before = rss_anon_kib().unwrap_or(0);
    let mut cold_rows = Vec::new();
    let cold_open;
    let rss_after;
    match drop_page_cache() {
        Err(e) => println!("\n(cold rows skipped: cannot drop the page cache: {e})"),
        Ok(()) => {
            let t = Instant::now();
            let reader = ReadOnlyStore::open(&store, reader_options())?;
            let snap = reader.snapshot();
            cold_open = t.elapsed();
            cold_rows.push(cold_lookups(
                "hits, nothing resident",
                &cold_a,
                Status::Included,
                device.as_ref(),
                |k| snap.check(SEGMENT, k).unwrap_or(Status::Unknown),
            )?);
            rss_after = rss_anon_kib().unwrap_or(0);
            drop(snap);
            drop(reader);

            drop_page_cache()?;
            let t = Instant::now();
            let index_bytes = read_index(&table, n)?;
            let index_read = t.elapsed();
            let reader = ReadOnlyStore::open(&store, reader_options())?;
            let snap = reader.snapshot();
            cold_rows.push(cold_lookups(
                "hits, bucket index resident",
                &cold_b,
                Status::Included,
                device.as_ref(),
                |k| snap.check(SEGMENT, k).unwrap_or(Status::Unknown),
            )?);
            cold_rows.push(cold_lookups(
                "misses, bucket index resident",
                &cold_miss,
                Status::Unknown,
                device.as_ref(),
                |k| snap.check(SEGMENT, k).unwrap_or(Status::Included),
            )?);
            println!(
                "\nCold (page cache dropped; `Verification::Structure`): open {:.2} ms; the reader's RssAnon {} → {} KiB over the open and 1,000 lookups; the bucket index and what follows it: {:.1} MiB, read in {:.2} s\n",
                cold_open.as_secs_f64() * 1e3,
                rss_before,
                rss_after,
                index_bytes as f64 / f64::from(1u32 << 20),
                index_read.as_secs_f64()
            );
            print_cold(&cold_rows);
        }
    }

    // Open time, page cache warm (median of 5), at both levels where Checksum fits in RAM.
    let open_median = |verification: Verification| -> BenchResult<Duration> {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let r = ReadOnlyStore::open(
                &store,
                Options {
                    verification,
                    ..reader_options()
                },
            )?;
            times.push(t.elapsed());
            drop(r);
        }
        times.sort();
        Ok(times[2])
    };
    let structure_open = open_median(Verification::Structure)?;
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let checksum_open = if table_len < ram / 2 {
        format!(
            "{:.2} s",
            open_median(Verification::Checksum)?.as_secs_f64()
        )
    } else {
        "not run (reads the whole table, larger than half the RAM)".to_owned()
    };
    println!(
        "\nOpen, page cache warm (median of 5): Structure {:.2} ms; Checksum (default) {checksum_open}",
        structure_open.as_secs_f64() * 1e3
    );

    // Resident: the large store and a 10M store imported the same way, same harness, same
    // process, same page-cache state: both dropped, then read in by the warm-up's lookups
    // (so both sit in small page-cache folios; a table written moments ago, or read whole,
    // sits in 2 MiB folios and is faster: see the `latency` bench).
    let baseline = store_dir(BASELINE_KEYS).join("store");
    if !baseline.join("MANIFEST").exists() {
        import(BASELINE_KEYS)?;
    }
    let base_hits = hit_keys(PROBES, BASELINE_KEYS, 43);
    let base_misses = miss_keys(PROBES);
    let _ = drop_page_cache();
    if std::env::var_os("SEGSTORE_BENCH_READ_INDEX").is_some() {
        read_index(&table, n)?;
        read_index(&table_file(&baseline)?, BASELINE_KEYS)?;
    }
    let big = ReadOnlyStore::open(&store, reader_options())?;
    let small = ReadOnlyStore::open(&baseline, reader_options())?;
    let measure_set = |reader: &ReadOnlyStore, keys: &[&[u8]], expect: Status| {
        let snap = reader.snapshot();
        measure(1, CALLS, |_| {
            let snap = snap.clone();
            move |i: usize| {
                let key = keys[i % keys.len()];
                let status = snap.check(SEGMENT, black_box(key));
                assert_eq!(status.ok(), Some(expect));
            }
        })
    };
    let (big_hits, big_misses) = (as_refs(&hits), as_refs(&misses));
    let (small_hits, small_misses) = (as_refs(&base_hits), as_refs(&base_misses));
    let faults_before = major_faults();
    let rows = [
        (
            format!("{n} keys, hit"),
            measure_set(&big, &big_hits, Status::Included),
        ),
        (
            format!("{BASELINE_KEYS} keys, hit"),
            measure_set(&small, &small_hits, Status::Included),
        ),
        (
            format!("{n} keys, miss"),
            measure_set(&big, &big_misses, Status::Unknown),
        ),
        (
            format!("{BASELINE_KEYS} keys, miss"),
            measure_set(&small, &small_misses, Status::Unknown),
        ),
    ];
    print_latency_header(&format!(
        "Resident lookups ({PROBES} probe keys each, read in by the warm-up after a page-cache drop; Structure)"
    ));
    for (name, l) in &rows {
        print_latency_row(name, 1, l);
    }
    let ratio = |a: &Latency, b: &Latency| (a.p50 / b.p50, a.call_p50 / b.call_p50);
    let (hit_b, hit_s) = ratio(&rows[0].1, &rows[1].1);
    let (miss_b, miss_s) = ratio(&rows[2].1, &rows[3].1);
    println!(
        "\n{n} / {BASELINE_KEYS} p50: hit {hit_b:.2}× (single calls {hit_s:.2}×), miss {miss_b:.2}× ({miss_s:.2}×); major faults during the resident rows: {}; {}",
        major_faults() - faults_before,
        huge_page_report()
    );
    Ok(())
}

fn as_refs<K: AsRef<[u8]>>(keys: &[K]) -> Vec<&[u8]> {
    keys.iter().map(|k| k.as_ref()).collect()
}

fn main() -> BenchResult<()> {
    let n = key_count();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    println!("## scale, {n} keys — {}", machine());
    if wants("import") {
        import(n)?;
    }
    if wants("read") {
        read(n)?;
    }
    Ok(())
}
