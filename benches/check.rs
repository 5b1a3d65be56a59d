//! `check` on one large segment, beside the baselines a user would otherwise pick, measured in
//! the same run: a `HashSet` in memory and a bare `fst::Set` over the same keys in mmap.
//!
//! `cargo bench --bench check` (1M keys); `SEGSTORE_BENCH_KEYS=10000000 cargo bench --bench
//! check` for the 10M figures of BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use segstore::{context_hash, List, Options, Status, Store};
use std::collections::HashSet;

fn key_count() -> usize {
    std::env::var("SEGSTORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn shapes(n: usize) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        (
            "ld-hash",
            (0..n)
                .map(|i| context_hash(&format!("user-{i}")).into_bytes())
                .collect(),
        ),
        (
            "sequential",
            (0..n)
                .map(|i| format!("user-{i:08}").into_bytes())
                .collect(),
        ),
    ]
}

fn bench_check(c: &mut Criterion) {
    let n = key_count();
    for (shape, keys) in shapes(n) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(
            dir.path(),
            Options {
                auto_compact: false,
                ..Options::default()
            },
        )
        .unwrap();
        store
            .replace_list(
                "bench.g1",
                None,
                List::Included,
                keys.iter().cloned().map(Ok),
            )
            .unwrap();
        let snapshot = store.snapshot();
        let misses: Vec<Vec<u8>> = (0..4096)
            .map(|i| {
                if shape == "ld-hash" {
                    context_hash(&format!("absent-{i}")).into_bytes()
                } else {
                    format!("user-{:08}", n + i).into_bytes()
                }
            })
            .collect();
        let probes: Vec<&Vec<u8>> = (0..4096).map(|i| &keys[(i * 7919) % keys.len()]).collect();

        let mut sorted = keys.clone();
        sorted.sort();
        let fst_path = dir.path().join("bare.fst");
        {
            let file = std::io::BufWriter::new(std::fs::File::create(&fst_path).unwrap());
            let mut b = fst::SetBuilder::new(file).unwrap();
            for k in &sorted {
                b.insert(k).unwrap();
            }
            b.finish().unwrap();
        }
        let file = std::fs::File::open(&fst_path).unwrap();
        // SAFETY: the bench wrote this file above and nothing modifies it while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file).unwrap() };
        let bare = fst::Set::new(mmap).unwrap();
        let hash: HashSet<Vec<u8>> = keys.iter().cloned().collect();

        let mut group = c.benchmark_group(format!("check/{shape}/{n}"));
        group.bench_function(BenchmarkId::new("segstore", "hit"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                assert_eq!(
                    snapshot.check("bench.g1", black_box(probes[i])),
                    Status::Included
                );
            })
        });
        group.bench_function(BenchmarkId::new("segstore", "miss"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                assert_eq!(
                    snapshot.check("bench.g1", black_box(&misses[i])),
                    Status::Unknown
                );
            })
        });
        group.bench_function(BenchmarkId::new("bare-fst", "hit"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                assert!(bare.contains(black_box(probes[i])));
            })
        });
        group.bench_function(BenchmarkId::new("bare-fst", "miss"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                assert!(!bare.contains(black_box(&misses[i])));
            })
        });
        group.bench_function(BenchmarkId::new("hashset", "hit"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                assert!(hash.contains(black_box(probes[i])));
            })
        });
        group.finish();
        let table_bytes: u64 = segstore::stats(dir.path())
            .unwrap()
            .files
            .iter()
            .filter(|f| f.kind == "table")
            .map(|f| f.bytes)
            .sum();
        let fst_bytes = std::fs::metadata(&fst_path).unwrap().len();
        eprintln!(
            "{shape} {n} keys: segstore table {:.1} B/key, bare fst {:.1} B/key",
            table_bytes as f64 / n as f64,
            fst_bytes as f64 / n as f64
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_check
}
criterion_main!(benches);
