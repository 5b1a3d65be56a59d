//! The write side, each beside its baseline in the same run: bulk import of unsorted keys
//! (`Store::replace_list`, end to end) against sort + bare fst build, with bytes per key on
//! disk; `apply` throughput (`Store::write`, fsync per batch) in batches of 100 and 10,000;
//! compaction of a segment plus 10% changed keys against a fresh build of the result, with a
//! reader's `check` p99 during the compaction against idle. Prints markdown tables.
//!
//! `cargo bench --bench write` (1M keys); `SEGSTORE_BENCH_KEYS=10000000 cargo bench --bench
//! write` for 10M. Arguments select sections: `import`, `apply`, `compact` (default all).

mod common;

use common::*;
use hdrhistogram::Histogram;
use segstore::{Batch, List, Options, ReadOnlyStore, Store};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> BenchResult<PathBuf> {
    let dir = bench_root().join("scratch").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn import(n: u64) -> BenchResult<()> {
    println!("\n### Bulk import of {n} unsorted keys, end to end (fsync included)\n");
    println!("| keys | segstore replace_list | keys/s | sort + bare fst build | keys/s | ratio (ours / fst) | table B/key | store dir B/key | bare fst B/key | size ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for shape in SHAPES {
        let keys: Vec<Vec<u8>> = (0..n).map(|i| shape.key(scatter(i, n))).collect();
        let dir = scratch(&format!("import-{}", shape.name()))?;
        let store_dir = dir.join("store");
        let started = Instant::now();
        {
            let store = Store::create(&store_dir, build_options())?;
            store.replace_list(SEGMENT, None, List::Included, keys.iter().cloned().map(Ok))?;
        }
        let ours = started.elapsed();
        let stats = segstore::stats(&store_dir)?;
        let dir_total = dir_bytes(&store_dir)?;

        let mut copy = keys.clone();
        drop(keys);
        let fst_path = dir.join("bare.fst");
        let started = Instant::now();
        copy.sort_unstable();
        copy.dedup();
        write_fst(&fst_path, &copy)?;
        let fst_time = started.elapsed();
        drop(copy);
        let fst_bytes = std::fs::metadata(&fst_path)?.len();
        let per_key = |b: u64| b as f64 / n as f64;
        println!(
            "| {} | {} | {:.2}M | {} | {:.2}M | {:.2} | {:.3} | {:.3} | {:.3} | {:.2} |",
            shape.name(),
            fmt_secs(ours),
            n as f64 / ours.as_secs_f64() / 1e6,
            fmt_secs(fst_time),
            n as f64 / fst_time.as_secs_f64() / 1e6,
            ours.as_secs_f64() / fst_time.as_secs_f64(),
            per_key(stats.table_bytes),
            per_key(dir_total),
            per_key(fst_bytes),
            stats.table_bytes as f64 / fst_bytes as f64,
        );
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// A reader's `check` latency, sampled in batches of [`BATCH`], split by phase.
struct PhaseHistograms {
    batch: [Histogram<u64>; 2],
    single: [Histogram<u64>; 2],
}

fn histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("histogram: {e}"));
    h.auto(true);
    h
}

fn apply_and_compact(n: u64, sections: &[String]) -> BenchResult<()> {
    let shape = Shape::LdHash;
    let changed = (n / 10).max(20_000);
    let dir = scratch("compact")?;
    let store_dir = dir.join("store");
    let base: Vec<Vec<u8>> = (0..n).map(|i| shape.key(i)).collect();
    let store = Store::create(&store_dir, build_options())?;
    store.replace_list(SEGMENT, None, List::Included, base.iter().cloned().map(Ok))?;

    // The changes: half the changed keys removed (every 20th base key), half added (new).
    let removed: Vec<u64> = (0..n).step_by(20).take((changed / 2) as usize).collect();
    let mut ops: Vec<(bool, Vec<u8>)> = Vec::with_capacity(changed as usize);
    for (j, &i) in removed.iter().enumerate() {
        ops.push((true, shape.miss(j as u64, n)));
        ops.push((false, base[i as usize].clone()));
    }
    let small = 100usize;
    let small_batches = 1_000.min(ops.len() / 10 / small);
    let (small_ops, large_ops) = ops.split_at(small_batches * small);
    let apply = |chunk_size: usize, chunk_ops: &[(bool, Vec<u8>)]| -> BenchResult<Duration> {
        let started = Instant::now();
        for chunk in chunk_ops.chunks(chunk_size) {
            let mut batch = Batch::new();
            for (add, key) in chunk {
                batch = if *add {
                    batch.add(SEGMENT, List::Included, key.clone())
                } else {
                    batch.remove(SEGMENT, List::Included, key.clone())
                };
            }
            store.write(batch)?;
        }
        Ok(started.elapsed())
    };
    let small_time = apply(small, small_ops)?;
    let large_time = apply(10_000, large_ops)?;
    if sections.iter().any(|s| s == "apply") {
        println!("\n### apply (Store::write, fsync per batch, auto-compaction off) on a {n}-key LD-hash segment\n");
        println!("| batch size | batches | key-ops | time | key-ops/s |");
        println!("|---|---|---|---|---|");
        for (size, count, time) in [
            (small, small_ops.len(), small_time),
            (10_000, large_ops.len(), large_time),
        ] {
            println!(
                "| {size} | {} | {count} | {} | {:.0}k |",
                count.div_ceil(size),
                fmt_secs(time),
                count as f64 / time.as_secs_f64() / 1e3
            );
        }
    }
    if !sections.iter().any(|s| s == "compact") {
        drop(store);
        std::fs::remove_dir_all(&dir)?;
        return Ok(());
    }

    // A reader in its own thread samples `check` while idle, then during compaction.
    let reader = ReadOnlyStore::open(&store_dir, Options::default())?;
    let probes: Vec<Vec<u8>> = probe_indexes(1 << 18, n, 23)
        .into_iter()
        .map(|i| base[i as usize].clone())
        .collect();
    let phase = AtomicUsize::new(0); // 0 idle, 1 compacting, 2 stop
    let started_sampling = AtomicBool::new(false);
    let overhead = timer_overhead_ns();
    let (compaction_time, hists) = std::thread::scope(|s| -> BenchResult<_> {
        let sampler = s.spawn(|| {
            let mut h = PhaseHistograms {
                batch: [histogram(), histogram()],
                single: [histogram(), histogram()],
            };
            let mask = probes.len() - 1;
            let mut i = 0usize;
            loop {
                let p = phase.load(Ordering::Acquire);
                if p >= 2 {
                    break;
                }
                let snapshot = reader.snapshot();
                let t = Instant::now();
                for _ in 0..BATCH {
                    black_box(
                        snapshot
                            .check(SEGMENT, black_box(&probes[i & mask]))
                            .unwrap(),
                    );
                    i += 1;
                }
                let ns = t.elapsed().as_nanos() as u64;
                let _ = h.batch[p].record((ns * 1000 / BATCH as u64).max(1));
                let t = Instant::now();
                black_box(
                    snapshot
                        .check(SEGMENT, black_box(&probes[i & mask]))
                        .unwrap(),
                );
                let ns = t.elapsed().as_nanos() as u64;
                i += 1;
                let _ = h.single[p].record((ns.saturating_sub(overhead) * 1000).max(1));
                started_sampling.store(true, Ordering::Release);
            }
            h
        });
        while !started_sampling.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_secs(3));
        phase.store(1, Ordering::Release);
        let started = Instant::now();
        let result = store.compact();
        let elapsed = started.elapsed();
        phase.store(2, Ordering::Release);
        let hists = sampler
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        result?;
        Ok((elapsed, hists))
    })?;
    drop(reader);
    drop(store);

    // A fresh build of the result: the same final keys, unsorted, into a new store.
    let mut result_keys = base;
    for &i in &removed {
        result_keys[i as usize].clear();
    }
    result_keys.retain(|k| !k.is_empty());
    result_keys.extend(ops.iter().filter(|(add, _)| *add).map(|(_, k)| k.clone()));
    let result_len = result_keys.len();
    let fresh_dir = dir.join("fresh");
    let started = Instant::now();
    {
        let fresh = Store::create(&fresh_dir, build_options())?;
        fresh.replace_list(
            SEGMENT,
            None,
            List::Included,
            result_keys.into_iter().map(Ok),
        )?;
    }
    let fresh_time = started.elapsed();

    println!("\n### Compaction of {n} LD-hash keys + {changed} changed\n");
    println!(
        "| compaction | fresh build of the result ({result_len} keys, replace_list) | ratio |"
    );
    println!("|---|---|---|");
    println!(
        "| {} | {} | {:.2} |",
        fmt_secs(compaction_time),
        fmt_secs(fresh_time),
        compaction_time.as_secs_f64() / fresh_time.as_secs_f64()
    );
    println!(
        "\n### A reader's check (hit) during that compaction vs idle (same reader, same probes)\n"
    );
    println!("| phase | samples | p50 (batch of {BATCH}) | p99 (batch of {BATCH}) | p50 (single call) | p99 (single call) |");
    println!("|---|---|---|---|---|---|");
    let q = |h: &Histogram<u64>, q: f64| fmt_ns(h.value_at_quantile(q) as f64 / 1000.0);
    for (p, name) in [(0, "idle"), (1, "during compaction")] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            hists.batch[p].len(),
            q(&hists.batch[p], 0.5),
            q(&hists.batch[p], 0.99),
            q(&hists.single[p], 0.5),
            q(&hists.single[p], 0.99),
        );
    }
    let ratio = |h: &[Histogram<u64>; 2]| {
        h[1].value_at_quantile(0.99) as f64 / h[0].value_at_quantile(0.99).max(1) as f64
    };
    println!(
        "\np99 ratio during / idle: {:.2} (batch of {BATCH}), {:.2} (single call)",
        ratio(&hists.batch),
        ratio(&hists.single)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn main() -> BenchResult<()> {
    let mut sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if sections.is_empty() {
        sections = vec!["import".into(), "apply".into(), "compact".into()];
    }
    let n = key_count();
    println!("## write side, {n} keys — {}", machine());
    if sections.iter().any(|s| s == "import") {
        import(n)?;
    }
    if sections.iter().any(|s| s == "apply" || s == "compact") {
        apply_and_compact(n, &sections)?;
    }
    Ok(())
}
