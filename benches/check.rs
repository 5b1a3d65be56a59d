//! `check` on one large segment (criterion means), beside the baselines a user would otherwise
//! pick, measured in the same run: a `HashSet` in memory and a bare `fst::Set` over the same
//! keys in mmap. Three key shapes: LD context hashes, UUID strings, sequential ids.
//!
//! `segstore` opens at `Verification::Structure` (each 64 KiB block checked against its sum on
//! a lookup's first touch, then a bit test per block read); `segstore-checksum` opens at the
//! default `Checksum` (the table hashed whole at open, no per-lookup check): the pair gives
//! the cost of the block checks in the same run.
//!
//! `cargo bench --bench check` (1M keys); `SEGSTORE_BENCH_KEYS=10000000 cargo bench --bench
//! check` for 10M. Percentiles and two threads: `cargo bench --bench latency`.

mod common;

use common::*;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use segstore::{Options, ReadOnlyStore, Status, Verification};
use std::collections::HashSet;

const PROBES: usize = 1 << 16;

fn bench_shape(c: &mut Criterion, shape: Shape, n: u64) -> BenchResult<()> {
    let fixture = fixture(shape, n)?;
    let reader = ReadOnlyStore::open(
        fixture.store_dir(),
        Options {
            poll_interval: None,
            verification: Verification::Structure,
            ..Options::default()
        },
    )?;
    let snapshot = reader.snapshot();
    let checksummed = ReadOnlyStore::open(
        fixture.store_dir(),
        Options {
            poll_interval: None,
            ..Options::default()
        },
    )?;
    let checksummed = checksummed.snapshot();
    let bare = open_fst(&fixture.fst_path(), false)?;
    let hits: Vec<Vec<u8>> = probe_indexes(PROBES, n, 7)
        .into_iter()
        .map(|i| shape.key(i))
        .collect();
    let misses: Vec<Vec<u8>> = (0..PROBES as u64).map(|i| shape.miss(i, n)).collect();
    let hash: Option<HashSet<Vec<u8>>> =
        (n <= 20_000_000).then(|| (0..n).map(|i| shape.key(i)).collect());
    let mask = PROBES - 1;

    let mut group = c.benchmark_group(format!("check/{}/{n}", shape.name()));
    group.bench_function(BenchmarkId::new("segstore", "hit"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & mask;
            assert_eq!(
                snapshot.check(SEGMENT, black_box(&hits[i])).unwrap(),
                Status::Included
            );
        })
    });
    group.bench_function(BenchmarkId::new("segstore", "miss"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & mask;
            assert_eq!(
                snapshot.check(SEGMENT, black_box(&misses[i])).unwrap(),
                Status::Unknown
            );
        })
    });
    group.bench_function(BenchmarkId::new("segstore-checksum", "hit"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & mask;
            assert_eq!(
                checksummed.check(SEGMENT, black_box(&hits[i])).unwrap(),
                Status::Included
            );
        })
    });
    group.bench_function(BenchmarkId::new("segstore-checksum", "miss"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & mask;
            assert_eq!(
                checksummed.check(SEGMENT, black_box(&misses[i])).unwrap(),
                Status::Unknown
            );
        })
    });
    group.bench_function(BenchmarkId::new("bare-fst", "hit"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & mask;
            assert!(bare.contains(black_box(&hits[i])));
        })
    });
    group.bench_function(BenchmarkId::new("bare-fst", "miss"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & mask;
            assert!(!bare.contains(black_box(&misses[i])));
        })
    });
    if let Some(hash) = &hash {
        group.bench_function(BenchmarkId::new("hashset", "hit"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & mask;
                assert!(hash.contains(black_box(&hits[i])));
            })
        });
        group.bench_function(BenchmarkId::new("hashset", "miss"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & mask;
                assert!(!hash.contains(black_box(&misses[i])));
            })
        });
    }
    group.finish();
    eprintln!(
        "{} {n} keys: segstore table {:.2} B/key, bare fst {:.2} B/key",
        shape.name(),
        fixture.table_bytes()? as f64 / n as f64,
        fixture.fst_bytes()? as f64 / n as f64
    );
    Ok(())
}

fn bench_check(c: &mut Criterion) {
    let n = key_count();
    for shape in SHAPES {
        if let Err(e) = bench_shape(c, shape, n) {
            panic!("check bench, {} keys: {e}", shape.name());
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_check
}
criterion_main!(benches);
