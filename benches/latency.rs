//! Latency percentiles of `check` (hit and miss, warm, 1 and 2 threads) for the three key
//! shapes, beside a `HashSet` in memory, a bare `fst::Set` in mmap over the same keys and — when
//! `SEGSTORE_BENCH_REDIS_PORT` names a Redis on 127.0.0.1 — Redis with LaunchDarkly's
//! big-segment layout (`SISMEMBER` per check, two `SMEMBERS` per membership call). Prints
//! markdown tables.
//!
//! `cargo bench --bench latency` (1M keys); `SEGSTORE_BENCH_KEYS=10000000 cargo bench --bench
//! latency` for 10M; `scripts/bench-vs-redis.sh` runs it against a private Redis.
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

fn run_shape(shape: Shape, n: u64, rows: &mut Vec<Row>) -> BenchResult<()> {
    let fixture = fixture(shape, n)?;
    let hits: Vec<Vec<u8>> = probe_indexes(PROBES, n, 11)
        .into_iter()
        .map(|i| shape.key(i))
        .collect();
    let misses: Vec<Vec<u8>> = (0..PROBES as u64).map(|i| shape.miss(i, n)).collect();
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
    let mut rows = Vec::new();
    for shape in SHAPES {
        if filter.is_empty() || filter.iter().any(|f| shape.name().contains(f.as_str())) {
            run_shape(shape, n, &mut rows)?;
        }
    }
    summary(&rows);
    Ok(())
}
