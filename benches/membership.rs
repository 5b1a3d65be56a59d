//! `membership(key)` as the number of segments grows: 10, 100 and 1,000 segments of LD-hash
//! keys (100,000 keys each in a large run, `SEGSTORE_BENCH_KEYS` ≥ 10M; 10,000 each by
//! default; `SEGSTORE_BENCH_SEGMENT_KEYS` overrides), hit (a key of one segment) and miss,
//! beside `check` on one of those segments. One store grows from 10 to 1,000 segments; it is
//! compacted before each measurement (the compaction time is printed too).
//!
//! `cargo bench --bench membership`; `SEGSTORE_BENCH_KEYS=10000000 cargo bench --bench
//! membership` for 100k keys per segment. Latency method as in `benches/latency.rs`.

mod common;

use base64::Engine;
use common::*;
use segstore::{List, Status, Store};
use std::hint::black_box;
use std::time::Instant;

/// Probe keys per measurement: spread over the whole key set, as in `benches/latency.rs`, so
/// that lookups land on cold cache lines of the tables and the index.
const PROBES: usize = 1 << 18;

/// Key `j` of segment `s`: a canonical LD context hash (base64 of 32 random bytes).
fn segment_key(s: u64, j: u64) -> Vec<u8> {
    let mut bytes = [0u8; 32];
    let seed = s << 32 | j;
    bytes[..16].copy_from_slice(
        &xxhash_rust::xxh3::xxh3_128_with_seed(&seed.to_le_bytes(), 3).to_le_bytes(),
    );
    bytes[16..].copy_from_slice(
        &xxhash_rust::xxh3::xxh3_128_with_seed(&seed.to_le_bytes(), 4).to_le_bytes(),
    );
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into_bytes()
}

fn segment_ref(s: u64) -> String {
    format!("segment-{s:04}.g1")
}

/// Bulk loads segments `range`, `per_segment` keys each.
fn load_segments(store: &Store, range: std::ops::Range<u64>, per_segment: u64) -> BenchResult<()> {
    for s in range {
        store.replace_list(
            &segment_ref(s),
            None,
            List::Included,
            (0..per_segment).map(|j| Ok(segment_key(s, j))),
        )?;
    }
    Ok(())
}

fn keys_per_segment() -> u64 {
    std::env::var("SEGSTORE_BENCH_SEGMENT_KEYS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(if large_run() { 100_000 } else { 10_000 })
}

fn main() -> BenchResult<()> {
    let per_segment = keys_per_segment();
    println!(
        "## membership, {per_segment} LD-hash keys per segment — {}",
        machine()
    );
    let dir = bench_root().join("scratch").join("membership");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let store = Store::create(&dir, build_options())?;
    print_latency_header("membership(key) and check as segments grow");
    let mut built = 0u64;
    let mut build_secs = 0.0;
    let mut compactions = Vec::new();
    let mut sizes = Vec::new();
    for segments in [10u64, 100, 1_000] {
        let started = Instant::now();
        load_segments(&store, built..segments, per_segment)?;
        built = segments;
        build_secs += started.elapsed().as_secs_f64();
        let started = Instant::now();
        store.compact()?;
        compactions.push((segments, started.elapsed()));
        let stats = segstore::stats(&dir)?;
        let of_kind = |kind: &str| -> u64 {
            stats
                .files
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| f.bytes)
                .sum()
        };
        let pairs = (segments * per_segment) as f64;
        sizes.push(format!(
            "{segments} segments: tables {:.2} B, index {:.2} B, together {:.2} B",
            of_kind("table") as f64 / pairs,
            of_kind("index") as f64 / pairs,
            (of_kind("table") + of_kind("index")) as f64 / pairs,
        ));
        let snapshot = store.snapshot();
        let probes: Vec<(String, Vec<u8>)> = probe_indexes(PROBES, segments * per_segment, 41)
            .into_iter()
            .map(|i| {
                (
                    segment_ref(i / per_segment),
                    segment_key(i / per_segment, i % per_segment),
                )
            })
            .collect();
        let misses: Vec<Vec<u8>> = (0..PROBES as u64)
            .map(|j| segment_key(u32::MAX as u64, j))
            .collect();
        let mask = PROBES - 1;
        // Enough calls that the batch p99 is not one preempted batch.
        let calls = 400_000;
        let l = measure(1, calls, |_| {
            |i: usize| {
                let (segment, key) = &probes[i & mask];
                let m = snapshot.membership(black_box(key)).unwrap();
                assert_eq!(m.get(segment), Some(true));
            }
        });
        print_latency_row(&format!("membership hit, {segments} segments"), 1, &l);
        let l = measure(1, calls, |_| {
            |i: usize| {
                let m = snapshot.membership(black_box(&misses[i & mask])).unwrap();
                assert!(m.is_empty());
            }
        });
        print_latency_row(&format!("membership miss, {segments} segments"), 1, &l);
        let l = measure(1, 400_000, |_| {
            |i: usize| {
                let (segment, key) = &probes[i & mask];
                assert_eq!(
                    snapshot.check(segment, black_box(key)).unwrap(),
                    Status::Included
                );
            }
        });
        print_latency_row(&format!("check hit, one of {segments} segments"), 1, &l);
    }
    println!(
        "\nbuilt {built} segments × {per_segment} keys in {build_secs:.1} s; compaction before measuring: {}",
        compactions
            .iter()
            .map(|(s, d)| format!("{s} segments {:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "bytes a (key, segment) pair after compaction (each key in one segment): {}",
        sizes.join("; ")
    );
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    after_writes(per_segment)?;
    Ok(())
}

/// Membership p99 of 2,000 random hits in the store's current snapshot, one timer pair per
/// call, after one untimed pass over the same keys (first-touch faults of freshly mapped
/// files are not what this measures). Small on purpose: while the store is slow (every
/// changed list probed, ~100 µs a call) a sample takes a fraction of a second, so the time
/// until the goal is met is not dominated by the sampling.
fn membership_p99(store: &Store, segments: u64, per_segment: u64, seed: u64) -> f64 {
    const CALLS: usize = 2_000;
    let snapshot = store.snapshot();
    let probes: Vec<Vec<u8>> = probe_indexes(CALLS, segments * per_segment, seed)
        .into_iter()
        .map(|i| segment_key(i / per_segment, i % per_segment))
        .collect();
    for key in &probes {
        black_box(snapshot.membership(black_box(key)).unwrap());
    }
    let overhead = timer_overhead_ns();
    let mut ns: Vec<u64> = probes
        .iter()
        .map(|key| {
            let started = Instant::now();
            black_box(snapshot.membership(black_box(key)).unwrap());
            (started.elapsed().as_nanos() as u64).saturating_sub(overhead)
        })
        .collect();
    ns.sort_unstable();
    ns[ns.len() * 99 / 100] as f64
}

/// With the default options (automatic compaction on) and no manual step: how long after a
/// bulk load of 1,000 segments, and after a sync batch touching 100 of them, membership is
/// back under 5 µs p99.
fn after_writes(per_segment: u64) -> BenchResult<()> {
    const SEGMENTS: u64 = 1_000;
    const GOAL_NS: f64 = 5_000.0;
    let dir = bench_root().join("scratch").join("membership-auto");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let store = Store::create(&dir, segstore::Options::default())?;
    println!("\n### membership after writes, no manual compaction ({SEGMENTS} segments × {per_segment} keys, default options)\n");
    println!("| after | membership p99 right after | time until p99 ≤ 5 µs | p99 then |");
    println!("|---|---|---|---|");
    // Each sample draws new keys, and the time is taken at the end of the first sample under
    // the goal.
    let wait = |what: &str, store: &Store, seed: u64| -> BenchResult<()> {
        let written = Instant::now();
        let first = membership_p99(store, SEGMENTS, per_segment, seed);
        for sample in 1.. {
            let p99 = membership_p99(store, SEGMENTS, per_segment, seed + sample);
            if p99 <= GOAL_NS {
                println!(
                    "| {what} | {} | {:.1} s | {} |",
                    fmt_ns(first),
                    written.elapsed().as_secs_f64(),
                    fmt_ns(p99)
                );
                return Ok(());
            }
            if written.elapsed().as_secs() > 300 {
                println!(
                    "| {what} | {} | not within 300 s | {} |",
                    fmt_ns(first),
                    fmt_ns(p99)
                );
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    };
    load_segments(&store, 0..SEGMENTS, per_segment)?;
    wait("bulk load of 1,000 segments", &store, 51)?;
    let mut batch = segstore::Batch::new();
    for s in (0..SEGMENTS).step_by(10) {
        for j in 0..10 {
            batch = batch.add(
                &segment_ref(s),
                List::Included,
                segment_key(s + SEGMENTS, j),
            );
        }
    }
    store.write(batch)?;
    wait("a batch adding keys to 100 segments", &store, 61)?;
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
