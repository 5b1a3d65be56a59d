//! Latency percentiles of `check` (hit and miss, warm, 1 and 2 threads) for the three key
//! shapes, beside a `HashSet` in memory, a bare `fst::Set` in mmap over the same keys and — when
//! `SEGSTORE_BENCH_REDIS_PORT` names a Redis on 127.0.0.1 — Redis with LaunchDarkly's
//! big-segment layout (`SISMEMBER` per check, two `SMEMBERS` per membership call). Prints
//! markdown tables.
//!
//! `cargo bench --bench latency` (1M keys); `SEGSTORE_BENCH_KEYS=10000000 cargo bench --bench
//! latency` for 10M; `scripts/bench-vs-redis.sh` runs it against a private Redis.
//! `cargo bench --bench latency -- reclaim` runs only the section after a reclaim: the page
//! cache loses the table and gets it back through lookups, with and without
//! `Residency::PageCacheHugeFolios`. `-- watch` keeps one reader open and samples it over an
//! hour (see `watch`).
//!
//! Method: each measurement times half its calls in batches of 64 consecutive calls (one
//! `Instant` pair per batch, the batch's time divided by 64 is one histogram sample: the p50
//! and p99 of those batch means are the first two columns), and half one call per `Instant`
//! pair with the timer's median cost (measured first) subtracted (the "single call" columns:
//! they show the per-call tail the batch means smooth out). Probes are spread at random over
//! the whole key set so each one lands on cold cache lines of a large table, as a server
//! evaluating flags for many users would; the page cache is warm.

mod common;

use common::*;
use segstore::{ReadOnlyStore, Status, Verification};
use std::collections::HashSet;
use std::hint::black_box;

const PROBES: usize = 1 << 18;

fn calls() -> usize {
    std::env::var("SEGSTORE_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000)
}

fn redis_calls() -> usize {
    std::env::var("SEGSTORE_BENCH_REDIS_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

struct Row {
    shape: Shape,
    name: String,
    threads: usize,
    latency: Latency,
}

/// The probes every section uses: [`PROBES`] keys of the set at random, and as many absent.
fn probe_keys(shape: Shape, n: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let hits = probe_indexes(PROBES, n, 11)
        .into_iter()
        .map(|i| shape.key(i))
        .collect();
    let misses = (0..PROBES as u64).map(|i| shape.miss(i, n)).collect();
    (hits, misses)
}

fn run_shape(shape: Shape, n: u64, rows: &mut Vec<Row>) -> BenchResult<()> {
    let fixture = fixture(shape, n)?;
    let (hits, misses) = probe_keys(shape, n);
    let reader = ReadOnlyStore::open(
        fixture.store_dir(),
        // The default verification: its checksum pass reads the tables whole, so whatever
        // state the page cache is in (the cold bench drops it), they are cached in 2 MiB
        // folios as a reader of the default configuration has them. With `Structure` after a
        // dropped cache, lookups fault 4 KiB pages (measured: hit 465 ns, miss 225 ns, where
        // huge pages give ~330 / ~135 ns), while the bare fst, read with default advice, gets
        // large folios.
        segstore::Options {
            poll_interval: None,
            verification: Verification::Checksum,
            ..segstore::Options::default()
        },
    )?;
    let snapshot = reader.snapshot();
    let bare = open_fst(&fixture.fst_path(), false)?;
    // A HashSet of 100M keys would need ~10 GB: kept to 20M keys and below.
    let hash: Option<HashSet<Vec<u8>>> = (n <= 20_000_000).then(|| hits_all(shape, n));
    let mask = PROBES - 1;
    let calls = calls();

    print_latency_header(&format!("{} keys, {n} keys, warm", shape.name()));
    let mut push = |name: &str, threads: usize, latency: Latency| {
        print_latency_row(name, threads, &latency);
        rows.push(Row {
            shape,
            name: name.to_owned(),
            threads,
            latency,
        });
    };
    for threads in [1, 2] {
        let l = measure(threads, calls, |_| {
            |i: usize| {
                let s = snapshot.check(SEGMENT, black_box(&hits[i & mask])).unwrap();
                assert_eq!(s, Status::Included);
            }
        });
        push("segstore check hit", threads, l);
        let l = measure(threads, calls, |_| {
            |i: usize| {
                let s = snapshot
                    .check(SEGMENT, black_box(&misses[i & mask]))
                    .unwrap();
                assert_eq!(s, Status::Unknown);
            }
        });
        push("segstore check miss", threads, l);
        let l = measure(threads, calls, |_| {
            |i: usize| assert!(bare.contains(black_box(&hits[i & mask])))
        });
        push("bare fst hit", threads, l);
        let l = measure(threads, calls, |_| {
            |i: usize| assert!(!bare.contains(black_box(&misses[i & mask])))
        });
        push("bare fst miss", threads, l);
        if let Some(hash) = &hash {
            let l = measure(threads, calls, |_| {
                |i: usize| assert!(hash.contains(black_box(&hits[i & mask])))
            });
            push("HashSet hit", threads, l);
            let l = measure(threads, calls, |_| {
                |i: usize| assert!(!hash.contains(black_box(&misses[i & mask])))
            });
            push("HashSet miss", threads, l);
        }
    }
    // The same lookups with the tables copied into anonymous huge pages (Residency::
    // AnonymousHugePages), beside the page-cache mapping whose folios may have split since
    // the fixture was written; the huge-page figures of the process before and after.
    println!("\npage cache reader: {}", huge_page_report());
    let anon_reader = ReadOnlyStore::open(
        fixture.store_dir(),
        segstore::Options {
            poll_interval: None,
            residency: segstore::Residency::AnonymousHugePages,
            ..segstore::Options::default()
        },
    )?;
    println!(
        "with a second reader in anonymous huge pages: {}\n",
        huge_page_report()
    );
    let anon = anon_reader.snapshot();
    let l = measure(1, calls, |_| {
        |i: usize| {
            assert_eq!(
                anon.check(SEGMENT, black_box(&hits[i & mask])).unwrap(),
                Status::Included
            )
        }
    });
    push("segstore check hit, AnonymousHugePages", 1, l);
    let l = measure(1, calls, |_| {
        |i: usize| {
            assert_eq!(
                anon.check(SEGMENT, black_box(&misses[i & mask])).unwrap(),
                Status::Unknown
            )
        }
    });
    push("segstore check miss, AnonymousHugePages", 1, l);
    drop(anon);
    drop(anon_reader);
    if shape == Shape::LdHash {
        let l = measure(1, calls, |_| {
            |i: usize| {
                let m = snapshot.membership(black_box(&hits[i & mask])).unwrap();
                assert_eq!(m.get(SEGMENT), Some(true));
            }
        });
        push("segstore membership hit (1 segment)", 1, l);
        redis_rows(shape, n, &hits, &misses, &mut push)?;
    }
    let table = fixture.table_bytes()? as f64 / n as f64;
    let fst = fixture.fst_bytes()? as f64 / n as f64;
    println!(
        "\nsize: segstore tables {table:.4} B/key, bare fst {fst:.4} B/key (ratio {:.2})",
        table / fst
    );
    Ok(())
}

fn hits_all(shape: Shape, n: u64) -> HashSet<Vec<u8>> {
    (0..n).map(|i| shape.key(i)).collect()
}

fn redis_rows(
    shape: Shape,
    n: u64,
    hits: &[Vec<u8>],
    misses: &[Vec<u8>],
    push: &mut impl FnMut(&str, usize, Latency),
) -> BenchResult<()> {
    let Some(port) = redis_port() else {
        println!("\n(Redis skipped: SEGSTORE_BENCH_REDIS_PORT is not set; scripts/bench-vs-redis.sh sets it)");
        return Ok(());
    };
    redis_load(&mut redis_connection(port)?, shape, n)?;
    let mask = PROBES - 1;
    let calls = redis_calls();
    let include_hits: Vec<Vec<u8>> = hits.iter().map(|h| redis_include_key(h)).collect();
    let exclude_hits: Vec<Vec<u8>> = hits.iter().map(|h| redis_exclude_key(h)).collect();
    let include_misses: Vec<Vec<u8>> = misses.iter().map(|h| redis_include_key(h)).collect();
    let exclude_misses: Vec<Vec<u8>> = misses.iter().map(|h| redis_exclude_key(h)).collect();
    let (include_hits, exclude_hits) = (&include_hits, &exclude_hits);
    let (include_misses, exclude_misses) = (&include_misses, &exclude_misses);
    let connect = || match redis_connection(port) {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to Redis on port {port}: {e}"),
    };
    for threads in [1, 2] {
        let l = measure(threads, calls, |_| {
            let mut con = connect();
            move |i: usize| {
                let member: bool = redis::cmd("SISMEMBER")
                    .arg(&include_hits[i & mask])
                    .arg(SEGMENT)
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("SISMEMBER: {e}"));
                assert!(member);
            }
        });
        push("Redis SISMEMBER hit (check)", threads, l);
        let l = measure(threads, calls, |_| {
            let mut con = connect();
            move |i: usize| {
                let included: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(&include_hits[i & mask])
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("SMEMBERS: {e}"));
                let excluded: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(&exclude_hits[i & mask])
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("SMEMBERS: {e}"));
                assert_eq!(included.len() + excluded.len(), 1);
            }
        });
        push("Redis membership hit (2× SMEMBERS)", threads, l);
        let l = measure(threads, calls, |_| {
            let mut con = connect();
            move |i: usize| {
                let included: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(&include_misses[i & mask])
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("SMEMBERS: {e}"));
                let excluded: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(&exclude_misses[i & mask])
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("SMEMBERS: {e}"));
                assert!(included.is_empty() && excluded.is_empty());
            }
        });
        push("Redis membership miss (2× SMEMBERS)", threads, l);
    }
    Ok(())
}

fn find<'a>(rows: &'a [Row], shape: Shape, name: &str, threads: usize) -> Option<&'a Latency> {
    rows.iter()
        .find(|r| r.shape == shape && r.name == name && r.threads == threads)
        .map(|r| &r.latency)
}

fn summary(rows: &[Row]) {
    println!("\n### Ratios (same run, p50 of batch means unless noted)\n");
    println!(
        "| shape | comparison | ours | baseline | ratio (ours / baseline) | baseline / ours |"
    );
    println!("|---|---|---|---|---|---|");
    let line = |shape: Shape, what: &str, ours: Option<f64>, base: Option<f64>| {
        if let (Some(o), Some(b)) = (ours, base) {
            println!(
                "| {} | {what} | {} | {} | {:.3} | {:.1}× |",
                shape.name(),
                fmt_ns(o),
                fmt_ns(b),
                o / b,
                b / o
            );
        }
    };
    for shape in SHAPES {
        for (ours, base, what) in [
            ("segstore check hit", "bare fst hit", "hit vs bare fst"),
            ("segstore check miss", "bare fst miss", "miss vs bare fst"),
            ("segstore check hit", "HashSet hit", "hit vs HashSet"),
        ] {
            line(
                shape,
                what,
                find(rows, shape, ours, 1).map(|l| l.p50),
                find(rows, shape, base, 1).map(|l| l.p50),
            );
        }
    }
    line(
        Shape::LdHash,
        "check hit vs Redis membership call",
        find(rows, Shape::LdHash, "segstore check hit", 1).map(|l| l.p50),
        find(rows, Shape::LdHash, "Redis membership hit (2× SMEMBERS)", 1).map(|l| l.p50),
    );
    line(
        Shape::LdHash,
        "check hit vs Redis SISMEMBER",
        find(rows, Shape::LdHash, "segstore check hit", 1).map(|l| l.p50),
        find(rows, Shape::LdHash, "Redis SISMEMBER hit (check)", 1).map(|l| l.p50),
    );
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; a filter argument selects shapes by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n = key_count();
    println!("## check latency, {n} keys — {}", machine());
    println!(
        "timer overhead subtracted from single calls: {} ns",
        timer_overhead_ns()
    );
    // `reclaim` alone: only the section after a reclaim (LD hashes).
    if filter.iter().any(|f| f == "reclaim") {
        return after_reclaim(Shape::LdHash, n);
    }
    // `watch`: one long-lived reader, sampled over time (LD hashes).
    if filter.iter().any(|f| f == "watch") {
        return watch(Shape::LdHash, n);
    }
    let mut rows = Vec::new();
    for shape in SHAPES {
        if filter.is_empty() || filter.iter().any(|f| shape.name().contains(f.as_str())) {
            run_shape(shape, n, &mut rows)?;
        }
    }
    summary(&rows);
    Ok(())
}

/// Evicts every file of `dir` from the page cache (clean pages no process maps), as reclaim
/// would take them.
fn evict(dir: &std::path::Path) -> BenchResult<()> {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir)? {
        let file = std::fs::File::open(entry?.path())?;
        // SAFETY: a valid open descriptor; the call only drops clean cached pages.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(format!("posix_fadvise: error {rc}").into());
        }
    }
    Ok(())
}

/// One reader (Checksum open, the residency `SEGSTORE_BENCH_RESIDENCY` names: `page-cache`,
/// the default, or `huge-folios`) kept open while the machine does other work: every
/// `SEGSTORE_BENCH_WATCH_SECONDS` (default 300) for `SEGSTORE_BENCH_WATCH_SAMPLES` samples
/// (default 13: an hour), the process's `FilePmdMapped` and the hit latency. Two of these,
/// one per residency, side by side, show how each holds up under the same memory pressure.
fn watch(shape: Shape, n: u64) -> BenchResult<()> {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let residency = match std::env::var("SEGSTORE_BENCH_RESIDENCY").as_deref() {
        Ok("huge-folios") => segstore::Residency::PageCacheHugeFolios,
        _ => segstore::Residency::PageCache,
    };
    let (every, samples) = (
        env("SEGSTORE_BENCH_WATCH_SECONDS", 300),
        env("SEGSTORE_BENCH_WATCH_SAMPLES", 13),
    );
    let fixture = fixture(shape, n)?;
    let (hits, _) = probe_keys(shape, n);
    let mask = PROBES - 1;
    let reader = ReadOnlyStore::open(
        fixture.store_dir(),
        segstore::Options {
            poll_interval: None,
            residency,
            ..segstore::Options::default()
        },
    )?;
    let snapshot = reader.snapshot();
    println!(
        "\n### {residency:?} reader over time, {n} {}\n",
        shape.name()
    );
    println!("| time (UTC) | FilePmdMapped | hit p50 (batch) | p99 | hit p50 (single) | p99 |");
    println!("|---|---|---|---|---|---|");
    for sample in 0..samples {
        if sample > 0 {
            std::thread::sleep(std::time::Duration::from_secs(every));
        }
        let hit = measure(1, 200_000, |_| {
            |i: usize| {
                assert_eq!(
                    snapshot.check(SEGMENT, black_box(&hits[i & mask])).unwrap(),
                    Status::Included
                )
            }
        });
        let pmd = huge_page_kib().map_or(0.0, |(file, _, _)| file as f64 / 1024.0);
        let now = std::process::Command::new("date")
            .arg("-u")
            .arg("+%H:%M")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        println!(
            "| {now} | {pmd:.1} MiB | {} | {} | {} | {} |",
            fmt_ns(hit.p50),
            fmt_ns(hit.p99),
            fmt_ns(hit.call_p50),
            fmt_ns(hit.call_p99)
        );
    }
    Ok(())
}

/// Reclaims this process's mappings of the files of `dir` (`MADV_PAGEOUT`), as memory
/// pressure would take them from a long-running reader.
fn page_out(dir: &std::path::Path) -> BenchResult<()> {
    let dir = dir.canonicalize()?.to_string_lossy().into_owned();
    for line in std::fs::read_to_string("/proc/self/maps")?.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(path)) = (fields.next(), fields.nth(4)) else {
            continue;
        };
        if !path.starts_with(&dir) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (start, end) = (
            usize::from_str_radix(start, 16)?,
            usize::from_str_radix(end, 16)?,
        );
        // SAFETY: the range is one of this process's read-only file mappings (from its own
        // maps); paging it out changes no byte a later read sees.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc != 0 {
            return Err(
                format!("madvise(MADV_PAGEOUT): {}", std::io::Error::last_os_error()).into(),
            );
        }
    }
    Ok(())
}

/// A reader whose table the page cache lost and got back through its lookups, as a
/// long-running reader's does after reclaim. At `Checksum`, the reader opens (reading the
/// table whole) and its mapping is then paged out; at `Structure`, the store's files are
/// evicted and the reader opens (reading nothing). One pass over the probes then faults the
/// table back in. Then the process's huge-page figures, and hit and miss latency, for the
/// default residency and for `PageCacheHugeFolios`, in alternation (twice each).
fn after_reclaim(shape: Shape, n: u64) -> BenchResult<()> {
    let fixture = fixture(shape, n)?;
    let (hits, misses) = probe_keys(shape, n);
    let mask = PROBES - 1;
    let calls = calls();
    println!("\n### check after a reclaim, {n} {}\n", shape.name());
    println!("| residency | first lookup | p99 of the first 1,000 | warm-up pass | FilePmdMapped after it | hit p50 (batch) | p99 | hit p50 (single) | p99 | miss p50 (batch) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for round in 0..8 {
        let residency = if round % 2 == 0 {
            segstore::Residency::PageCache
        } else {
            segstore::Residency::PageCacheHugeFolios
        };
        let verification = if round % 4 < 2 {
            Verification::Checksum
        } else {
            Verification::Structure
        };
        evict(&fixture.store_dir())?;
        let reader = ReadOnlyStore::open(
            fixture.store_dir(),
            segstore::Options {
                poll_interval: None,
                verification,
                residency,
                ..segstore::Options::default()
            },
        )?;
        if verification == Verification::Checksum {
            page_out(&fixture.store_dir())?;
        }
        let snapshot = reader.snapshot();
        let started = std::time::Instant::now();
        // The first 1,000 timed one by one: the cold-start figures (first, p99).
        let mut first: Vec<u64> = Vec::with_capacity(1000);
        for (i, key) in hits.iter().enumerate() {
            let t = std::time::Instant::now();
            assert_eq!(snapshot.check(SEGMENT, key)?, Status::Included);
            if i < 1000 {
                first.push(t.elapsed().as_nanos() as u64);
            }
        }
        let warm = started.elapsed();
        let first_call = first.first().copied().unwrap_or(0);
        first.sort_unstable();
        let first_p99 = first.get(first.len() * 99 / 100).copied().unwrap_or(0);
        let pmd = huge_page_kib().map_or(0.0, |(file, _, _)| file as f64 / 1024.0);
        let hit = measure(1, calls, |_| {
            |i: usize| {
                assert_eq!(
                    snapshot.check(SEGMENT, black_box(&hits[i & mask])).unwrap(),
                    Status::Included
                )
            }
        });
        let miss = measure(1, calls, |_| {
            |i: usize| {
                assert_eq!(
                    snapshot
                        .check(SEGMENT, black_box(&misses[i & mask]))
                        .unwrap(),
                    Status::Unknown
                )
            }
        });
        println!(
            "| {residency:?}, {verification:?} | {:.1} µs | {:.1} µs | {:.2} s | {pmd:.1} MiB | {} | {} | {} | {} | {} |",
            first_call as f64 / 1e3,
            first_p99 as f64 / 1e3,
            warm.as_secs_f64(),
            fmt_ns(hit.p50),
            fmt_ns(hit.p99),
            fmt_ns(hit.call_p50),
            fmt_ns(hit.call_p99),
            fmt_ns(miss.p50)
        );
    }
    Ok(())
}
