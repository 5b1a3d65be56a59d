//! Opening and cold start, read-only, beside a bare `fst::Set` over the same keys:
//!
//! - open time with a warm page cache (`ReadOnlyStore::open`, `Verification::Structure` and the
//!   default `Checksum`), median of repeated opens;
//! - cold start: each measurement runs in a fresh process (this bench re-executes itself), which
//!   first warms its own code on a tiny store, then `sync`s and drops the page cache
//!   (`/proc/sys/vm/drop_caches`, needs root), opens the large store (or maps the bare fst, with
//!   default advice or `MADV_RANDOM`) and times the first lookup and each of the first 1,000
//!   lookups (random hits, one `Instant` pair each);
//! - the reader's anonymous memory (`RssAnon` of /proc/self/status) before opening and after
//!   opening and probing, in the same fresh processes.
//!
//! `cargo bench --bench cold` (1M keys); `SEGSTORE_BENCH_KEYS=10000000 cargo bench --bench
//! cold` for 10M. Arguments select shapes by name (`ld-hash`, `uuid`, `sequential`).

mod common;

use common::*;
use segstore::{Options, ReadOnlyStore, Status, Verification};
use std::hint::black_box;
use std::time::Instant;

const CHILD_ENV: &str = "SEGSTORE_COLD_CHILD";
const REPEATS: usize = 3;
const FIRST: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Structure,
    Checksum,
    FstDefault,
    FstRandom,
}

const MODES: [Mode; 4] = [
    Mode::Structure,
    Mode::Checksum,
    Mode::FstDefault,
    Mode::FstRandom,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Structure => "segstore, Verification::Structure",
            Mode::Checksum => "segstore, Verification::Checksum (default)",
            Mode::FstDefault => "bare fst, default advice",
            Mode::FstRandom => "bare fst, MADV_RANDOM",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Mode::Structure => "structure",
            Mode::Checksum => "checksum",
            Mode::FstDefault => "fst-default",
            Mode::FstRandom => "fst-random",
        }
    }

    fn from_arg(s: &str) -> Option<Mode> {
        MODES.into_iter().find(|m| m.arg() == s)
    }
}

fn reader_options(verification: Verification) -> Options {
    Options {
        poll_interval: None,
        verification,
        ..Options::default()
    }
}

/// One cold measurement, as the child reports it.
#[derive(Debug, Clone, Copy)]
struct Cold {
    open_ns: u64,
    first_ns: u64,
    p50_ns: u64,
    p99_ns: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

fn shape_from(name: &str) -> Option<Shape> {
    SHAPES.into_iter().find(|s| s.name() == name)
}

/// The child: warm the code, drop the cache, open, probe, report one line on stdout.
fn child(spec: &str) -> BenchResult<()> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [mode, shape, n] = parts[..] else {
        return Err(format!("bad {CHILD_ENV}: {spec}").into());
    };
    let mode = Mode::from_arg(mode).ok_or("bad mode")?;
    let shape = shape_from(shape).ok_or("bad shape")?;
    let n: u64 = n.parse()?;
    let big = fixture(shape, n)?;
    let tiny = fixture(shape, 1_000)?;
    let probes: Vec<Vec<u8>> = probe_indexes(FIRST, n, 31)
        .into_iter()
        .map(|i| shape.key(i))
        .collect();
    let tiny_probes: Vec<Vec<u8>> = (0..100).map(|i| shape.key(i)).collect();
    let verification = match mode {
        Mode::Checksum => Verification::Checksum,
        _ => Verification::Structure,
    };
    let fst_random = mode == Mode::FstRandom;
    // Warm this process's code paths on the tiny fixture (its pages stay mapped, so the cache
    // drop below leaves them; the large files are not mapped by anyone).
    {
        let r = ReadOnlyStore::open(tiny.store_dir(), reader_options(verification))?;
        let snap = r.snapshot();
        let f = open_fst(&tiny.fst_path(), fst_random)?;
        for p in &tiny_probes {
            black_box(snap.check(SEGMENT, p).unwrap());
            black_box(f.contains(p));
        }
    }
    let rss_before_kib = rss_anon_kib().unwrap_or(0);
    drop_page_cache()?;

    let mut times = Vec::with_capacity(FIRST);
    let open_ns;
    let rss_after_kib;
    match mode {
        Mode::Structure | Mode::Checksum => {
            let t = Instant::now();
            let reader = ReadOnlyStore::open(big.store_dir(), reader_options(verification))?;
            let snap = reader.snapshot();
            open_ns = t.elapsed().as_nanos() as u64;
            for p in &probes {
                let t = Instant::now();
                let s = snap.check(SEGMENT, black_box(p)).unwrap();
                times.push(t.elapsed().as_nanos() as u64);
                if s != Status::Included {
                    return Err("a probe key was not found".into());
                }
            }
            rss_after_kib = rss_anon_kib().unwrap_or(0);
        }
        Mode::FstDefault | Mode::FstRandom => {
            let t = Instant::now();
            let set = open_fst(&big.fst_path(), fst_random)?;
            open_ns = t.elapsed().as_nanos() as u64;
            for p in &probes {
                let t = Instant::now();
                let found = set.contains(black_box(p));
                times.push(t.elapsed().as_nanos() as u64);
                if !found {
                    return Err("a probe key was not found".into());
                }
            }
            rss_after_kib = rss_anon_kib().unwrap_or(0);
        }
    }
    let first_ns = times[0];
    times.sort_unstable();
    let cold = Cold {
        open_ns,
        first_ns,
        p50_ns: times[times.len() / 2],
        p99_ns: times[(times.len() * 99 / 100).min(times.len() - 1)],
        rss_before_kib,
        rss_after_kib,
    };
    println!(
        "COLD {} {} {} {} {} {}",
        cold.open_ns,
        cold.first_ns,
        cold.p50_ns,
        cold.p99_ns,
        cold.rss_before_kib,
        cold.rss_after_kib
    );
    Ok(())
}

fn run_child(mode: Mode, shape: Shape, n: u64) -> BenchResult<Cold> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        // The parent built (or rebuilt) the fixture; a child must not rebuild it again.
        .env_remove("SEGSTORE_BENCH_REBUILD")
        .env(CHILD_ENV, format!("{}:{}:{n}", mode.arg(), shape.name()))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("COLD "))
        .ok_or_else(|| {
            format!(
                "cold child failed: {}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse())
        .collect::<Result<_, _>>()?;
    let [open_ns, first_ns, p50_ns, p99_ns, rss_before_kib, rss_after_kib] = v[..] else {
        return Err(format!("bad child line: {line}").into());
    };
    Ok(Cold {
        open_ns,
        first_ns,
        p50_ns,
        p99_ns,
        rss_before_kib,
        rss_after_kib,
    })
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn open_times(shape: Shape, n: u64) -> BenchResult<()> {
    let fixture = fixture(shape, n)?;
    println!(
        "\n### Open read-only, warm page cache, {} keys, {n} keys (median of 11 opens)\n",
        shape.name()
    );
    println!("| verification | open | per table byte |");
    println!("|---|---|---|");
    let bytes = fixture.table_bytes()?;
    for (name, v) in [
        ("Structure", Verification::Structure),
        ("Checksum (default)", Verification::Checksum),
    ] {
        drop(ReadOnlyStore::open(fixture.store_dir(), reader_options(v))?);
        let mut times = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            let r = ReadOnlyStore::open(fixture.store_dir(), reader_options(v))?;
            times.push(t.elapsed().as_nanos() as u64);
            drop(r);
        }
        let m = median(times);
        println!(
            "| {name} | {} | {:.3} ns/B |",
            fmt_ns(m as f64),
            m as f64 / bytes as f64
        );
    }
    Ok(())
}

fn cold_starts(shape: Shape, n: u64) -> BenchResult<()> {
    // Build the fixtures here, so the children only open them.
    fixture(shape, n)?;
    fixture(shape, 1_000)?;
    println!(
        "\n### Cold start (page cache dropped, fresh process), {} keys, {n} keys: median (max) of {REPEATS} processes\n",
        shape.name()
    );
    println!("| reader | open | first lookup | p50 of first {FIRST} | p99 of first {FIRST} | RssAnon before open | RssAnon after open + {FIRST} lookups |");
    println!("|---|---|---|---|---|---|---|");
    for mode in MODES {
        let mut runs = Vec::new();
        for _ in 0..REPEATS {
            runs.push(run_child(mode, shape, n)?);
        }
        let col = |f: fn(&Cold) -> u64| {
            let vals: Vec<u64> = runs.iter().map(f).collect();
            let max = vals.iter().copied().max().unwrap_or(0);
            format!("{} ({})", fmt_ns(median(vals) as f64), fmt_ns(max as f64))
        };
        let kib = |f: fn(&Cold) -> u64| {
            let vals: Vec<u64> = runs.iter().map(f).collect();
            format!("{:.1} MiB", median(vals) as f64 / 1024.0)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            mode.name(),
            col(|c| c.open_ns),
            col(|c| c.first_ns),
            col(|c| c.p50_ns),
            col(|c| c.p99_ns),
            kib(|c| c.rss_before_kib),
            kib(|c| c.rss_after_kib),
        );
    }
    Ok(())
}

fn main() -> BenchResult<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n = key_count();
    println!("## open and cold start, {n} keys — {}", machine());
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .is_ok();
    for shape in SHAPES {
        if !(filter.is_empty() && shape != Shape::Sequential
            || filter.iter().any(|f| shape.name().contains(f.as_str())))
        {
            continue;
        }
        open_times(shape, n)?;
        if writable {
            cold_starts(shape, n)?;
        } else {
            println!(
                "\n(cold start skipped: /proc/sys/vm/drop_caches is not writable; run as root)"
            );
        }
    }
    Ok(())
}
