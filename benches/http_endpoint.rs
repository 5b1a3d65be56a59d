//! A bounded load test of `segstore serve --http` on loopback: client threads post REST target
//! updates of 1,000 raw keys each (`POST .../segments/default/production/load/contexts`) with
//! an admin token; the server hashes, applies and fsyncs each as one batch. This process is
//! also a reader (`ReadOnlyStore`, refreshed in a loop): every request carries a marker key,
//! and the time from sending the request to the marker being visible in the reader is the
//! request-to-visibility latency.
//!
//! `cargo bench --bench http_endpoint`. Knobs: `SEGSTORE_BENCH_HTTP_CLIENTS` (4),
//! `SEGSTORE_BENCH_SECS` (5), `SEGSTORE_BENCH_HTTP_KEYS` (1,000 keys a request).
//! Goals (issue 12): ≥ 1M key-ops/s applied with 1,000-key requests; visible in a reader
//! within 50 ms at p99.

mod common;

use common::{machine, BenchResult};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> BenchResult<()> {
    let clients = env_usize("SEGSTORE_BENCH_HTTP_CLIENTS", 4);
    let secs = env_usize("SEGSTORE_BENCH_SECS", 5) as u64;
    let keys_per_request = env_usize("SEGSTORE_BENCH_HTTP_KEYS", 1_000);
    println!("## serve --http load test — {}", machine());
    println!("load average at start: {}", loadavg());
    println!(
        "reproduce: SEGSTORE_BENCH_HTTP_CLIENTS={clients} SEGSTORE_BENCH_SECS={secs} SEGSTORE_BENCH_HTTP_KEYS={keys_per_request} cargo bench --bench http_endpoint"
    );
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("store");
    let bin = env!("CARGO_BIN_EXE_segstore");
    let run = |args: &[&str]| -> BenchResult<String> {
        let out = Command::new(bin)
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    run(&["init"])?;
    let token = run(&["token", "create", "--name", "load", "--role", "admin"])?;
    let mut server = Command::new(bin)
        .arg("--dir")
        .arg(&dir)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--environment-id",
            "bench",
        ])
        .env("SEGSTORE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    let stdout = server.stdout.take().ok_or("no stdout")?;
    let mut stdout = BufReader::new(stdout);
    stdout.read_line(&mut line)?;
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("serve: http listening on ")
        .ok_or_else(|| format!("unexpected line {line:?}"))?
        .to_owned();
    let url = format!("http://{addr}/api/v2/segments/default/production/load/contexts");

    // The reader: refreshes in a loop and reports when each marker becomes visible.
    let reader = segstore::ReadOnlyStore::open(
        &dir,
        segstore::Options {
            poll_interval: None,
            ..segstore::Options::default()
        },
    )?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let visible = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (sent, visible, stop) = (sent.clone(), visible.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = reader.refresh();
                let snapshot = reader.snapshot();
                let mut pending = sent.lock();
                let seen: Vec<String> = pending
                    .keys()
                    .filter(|m| {
                        snapshot
                            .check("load.g1", segstore::context_hash(m).as_bytes())
                            .unwrap()
                            == segstore::Status::Included
                    })
                    .cloned()
                    .collect();
                for marker in seen {
                    if let Some(at) = pending.remove(&marker) {
                        let _ = visible.lock().record(at.elapsed().as_micros() as u64);
                    }
                }
                drop(pending);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let applied = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (url, token, sent, applied, requests) = (
                url.clone(),
                token.clone(),
                sent.clone(),
                applied.clone(),
                requests.clone(),
            );
            std::thread::spawn(move || -> Result<(), String> {
                let agent = ureq::Agent::new_with_config(
                    ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build(),
                );
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let marker = format!("marker-{c}-{n}");
                    let mut keys: Vec<String> = (0..keys_per_request.saturating_sub(1))
                        .map(|k| format!("c{c}-r{n}-k{k}"))
                        .collect();
                    keys.push(marker.clone());
                    let body = serde_json::json!({"included": {"add": keys}}).to_string();
                    let t = Instant::now();
                    sent.lock().insert(marker, t);
                    let response = agent
                        .post(&url)
                        .header("Authorization", &token)
                        .header("Content-Type", "application/json")
                        .send(body.as_bytes())
                        .map_err(|e| e.to_string())?;
                    if response.status().as_u16() != 204 {
                        return Err(format!("status {}", response.status()));
                    }
                    let _ = requests.lock().record(t.elapsed().as_micros() as u64);
                    applied.fetch_add(keys_per_request as u64, Ordering::Relaxed);
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a client thread panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the reader see the last requests.
    let settle = Instant::now() + Duration::from_secs(2);
    while !sent.lock().is_empty() && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = server.wait();

    let ops = applied.load(Ordering::Relaxed);
    let rate = ops as f64 / elapsed;
    let requests = requests.lock();
    let visible = visible.lock();
    let missing = sent.lock().len();
    println!();
    println!("| figure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| requests ({clients} clients, {keys_per_request} keys each) | {} in {elapsed:.1} s = {:.0}/s | |",
        requests.len(),
        requests.len() as f64 / elapsed
    );
    println!(
        "| key-ops applied | {rate:.0}/s | ≥ 1,000,000/s: {} |",
        if rate >= 1e6 { "met" } else { "not met" }
    );
    println!(
        "| request latency (send to 204, durable) | p50 {:.2} ms, p99 {:.2} ms | |",
        requests.value_at_quantile(0.5) as f64 / 1e3,
        requests.value_at_quantile(0.99) as f64 / 1e3
    );
    let p99 = visible.value_at_quantile(0.99) as f64 / 1e3;
    println!(
        "| request to visible in a reader process | p50 {:.2} ms, p99 {p99:.2} ms ({} seen, {missing} not seen) | p99 ≤ 50 ms: {} |",
        visible.value_at_quantile(0.5) as f64 / 1e3,
        visible.len(),
        if p99 <= 50.0 && missing == 0 { "met" } else { "not met" }
    );
    println!("load average at end: {}", loadavg());
    Ok(())
}
