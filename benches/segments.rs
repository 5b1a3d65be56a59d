//! A store of many segments of mixed sizes: open time, memory mappings and lookups, against a
//! store of the same keys in one segment, in the same run.
//!
//! Segment `i` (from 0) holds `max(1, 1,000,000 / (i + 1)^1.2)` LaunchDarkly context hashes:
//! one of 1M keys, a few hundred over 1,000, most of a handful, the last ones 1 key
//! (100,000 segments: 5.1M keys). Both stores are compacted, so their tables are in packs
//! (format-spec §5.9). Measured, warm page cache, median of 11 opens:
//!
//! - `ReadOnlyStore::open` with `Verification::Structure` and the default `Checksum`;
//! - the memory mappings the open reader holds of the store's files (`/proc/self/maps`);
//! - `membership` and `check` of keys spread over all segments.
//!
//! `cargo bench --bench segments`; `SEGSTORE_BENCH_SEGMENTS=N` for another count.

mod common;

use common::*;
use segstore::{context_hash, Batch, List, Options, ReadOnlyStore, Status, Store, Verification};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FIXTURE_VERSION: &str = "segstore-bench segments fixture 3 (filter membership index)";
const OPENS: usize = 11;
const PROBES: usize = 200_000;

/// Milliseconds with one decimal: the open goal is 100 ms.
fn fmt_ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn segment_count() -> usize {
    std::env::var("SEGSTORE_BENCH_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn size_of(i: usize) -> usize {
    ((1_000_000f64 / ((i + 1) as f64).powf(1.2)) as usize).max(1)
}

fn seg(i: usize) -> String {
    format!("segment-{i:06}.g1")
}

fn key(i: usize, j: usize) -> String {
    context_hash(&format!("u{i}-{j}"))
}

/// Builds (once) the many-segment store and the one-segment store of the same keys.
fn fixtures(segments: usize) -> BenchResult<(PathBuf, PathBuf, usize)> {
    let root = bench_root().join(format!("segments-{segments}"));
    let many = root.join("many");
    let one = root.join("one");
    let total: usize = (0..segments).map(size_of).sum();
    let marker = root.join("COMPLETE");
    let rebuild = std::env::var_os("SEGSTORE_BENCH_REBUILD").is_some_and(|v| v == "1");
    if !rebuild && std::fs::read_to_string(&marker).is_ok_and(|m| m == FIXTURE_VERSION) {
        return Ok((many, one, total));
    }
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    eprintln!(
        "building {segments} segments, {total} keys, in {} ...",
        root.display()
    );
    let started = Instant::now();
    {
        let store = Store::create(&many, build_options())?;
        let mut batch = Batch::new();
        let mut in_batch = 0;
        for i in 0..segments {
            let n = size_of(i);
            if n >= 5_000 {
                let keys = (0..n).map(|j| Ok(key(i, j).into_bytes()));
                store.replace_list(&seg(i), None, List::Included, keys)?;
                continue;
            }
            for j in 0..n {
                batch = batch.add(&seg(i), List::Included, key(i, j));
            }
            in_batch += n;
            if in_batch >= 200_000 {
                store.write(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        store.write(batch)?;
        store.compact()?;
    }
    {
        let store = Store::create(&one, build_options())?;
        let keys =
            (0..segments).flat_map(|i| (0..size_of(i)).map(move |j| Ok(key(i, j).into_bytes())));
        store.replace_list("everyone.g1", None, List::Included, keys)?;
        store.compact()?;
    }
    std::fs::write(&marker, FIXTURE_VERSION)?;
    eprintln!("  built in {:.1} s", started.elapsed().as_secs_f64());
    Ok((many, one, total))
}

fn options(verification: Verification) -> Options {
    Options {
        poll_interval: None,
        verification,
        ..Options::default()
    }
}

/// Median time of [`OPENS`] read-only opens (after one to warm the page cache).
fn open_median(dir: &Path, verification: Verification) -> BenchResult<Duration> {
    drop(ReadOnlyStore::open(dir, options(verification))?);
    let mut times = Vec::with_capacity(OPENS);
    for _ in 0..OPENS {
        let started = Instant::now();
        let reader = ReadOnlyStore::open(dir, options(verification))?;
        times.push(started.elapsed());
        drop(reader);
    }
    times.sort();
    Ok(times[OPENS / 2])
}

fn mappings_of(dir: &Path) -> BenchResult<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let dir = dir.canonicalize()?;
    let dir = dir.to_string_lossy().into_owned();
    Ok(maps.lines().filter(|l| l.contains(&dir)).count())
}

fn files_of(dir: &Path) -> BenchResult<usize> {
    Ok(std::fs::read_dir(dir)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("t-"))
        })
        .count())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(0) as f64
}

/// p50 and p99 of `f` over the probes, one timer pair per call (timer overhead subtracted).
fn latency(probes: &[(usize, usize)], mut f: impl FnMut(usize, usize)) -> (f64, f64) {
    let overhead = timer_overhead_ns();
    for &(i, j) in probes {
        f(i, j);
    }
    let mut ns: Vec<u64> = probes
        .iter()
        .map(|&(i, j)| {
            let t = Instant::now();
            f(i, j);
            (t.elapsed().as_nanos() as u64).saturating_sub(overhead)
        })
        .collect();
    ns.sort_unstable();
    (percentile(&ns, 0.5), percentile(&ns, 0.99))
}

fn main() -> BenchResult<()> {
    let segments = segment_count();
    let (many, one, total) = fixtures(segments)?;
    // For a profiler: only open the many-segment store, again and again.
    if let Some(n) = std::env::var("SEGSTORE_BENCH_OPEN_ONLY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        for _ in 0..n {
            drop(black_box(ReadOnlyStore::open(
                &many,
                options(
                    if std::env::var_os("SEGSTORE_BENCH_OPEN_STRUCTURE").is_some() {
                        Verification::Structure
                    } else {
                        Verification::Checksum
                    },
                ),
            )?));
        }
        return Ok(());
    }
    println!("{}", machine());
    println!(
        "{segments} segments, {total} LD hashes; the baseline: the same keys in one segment\n"
    );

    // Probes: a random segment, then a random key of it (small segments as often as big).
    let probes: Vec<(usize, usize)> = probe_indexes(PROBES, segments as u64, 7)
        .into_iter()
        .zip(probe_indexes(PROBES, u64::MAX, 8))
        .map(|(i, r)| {
            let i = i as usize;
            (i, (r % size_of(i) as u64) as usize)
        })
        .collect();

    println!("| store | table files | mappings once open | open, Structure | open, Checksum (default) | membership p50 | p99 | check hit p50 | p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut opens = Vec::new();
    for (name, dir) in [
        ("1 segment", &one),
        (&*format!("{segments} segments"), &many),
    ] {
        let structure = open_median(dir, Verification::Structure)?;
        let checksum = open_median(dir, Verification::Checksum)?;
        let reader = ReadOnlyStore::open(dir, options(Verification::Checksum))?;
        let mapped = mappings_of(dir)?;
        let snap = reader.snapshot();
        let hashes: Vec<String> = probes.iter().map(|&(i, j)| key(i, j)).collect();
        let single = dir == &one;
        let names: Vec<String> = probes
            .iter()
            .map(|&(i, _)| {
                if single {
                    "everyone.g1".to_owned()
                } else {
                    seg(i)
                }
            })
            .collect();
        let mut at = 0;
        let (m50, m99) = latency(&probes, |_, _| {
            let k = &hashes[at % hashes.len()];
            at += 1;
            black_box(snap.membership(k.as_bytes()).unwrap());
        });
        let mut at = 0;
        let (c50, c99) = latency(&probes, |_, _| {
            let k = &hashes[at % hashes.len()];
            let segment = &names[at % names.len()];
            at += 1;
            let status = snap.check(segment, k.as_bytes()).unwrap();
            debug_assert_eq!(status, Status::Included);
            black_box(status);
        });
        println!(
            "| {name} | {} | {mapped} | {} | {} | {} | {} | {} | {} |",
            files_of(dir)?,
            fmt_ms(structure),
            fmt_ms(checksum),
            fmt_ns(m50),
            fmt_ns(m99),
            fmt_ns(c50),
            fmt_ns(c99),
        );
        opens.push((structure, checksum));
    }
    if let [(s1, c1), (sn, cn)] = opens[..] {
        println!(
            "\nopen, {segments} segments / 1 segment: Structure {:.1}x, Checksum {:.2}x",
            sn.as_secs_f64() / s1.as_secs_f64(),
            cn.as_secs_f64() / c1.as_secs_f64()
        );
    }
    Ok(())
}
