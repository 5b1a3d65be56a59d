//! kill -9 at random points of a random workload.
//!
//! A child process (this test binary, re-run as `crash_writer_child`) applies a deterministic
//! stream of operations — batches, cursor-guarded batches, bulk replaces, explicit and
//! background compactions, segment creates and deletes — and after each one appends its
//! number to an acknowledgement file and fsyncs it before starting the next. The parent kills
//! it with SIGKILL after a random delay, reopens the store and checks:
//! - every acknowledged operation is present;
//! - the state equals the model after a whole prefix of the operations (the acknowledged
//!   ones, or those plus the one in flight): no half batch, no half replace or compaction;
//! - `verify` finds nothing wrong.
//!
//! `SEGSTORE_CRASH_POINTS` sets the number of kills (default 60; the documented long run uses
//! 1000). Each crash point continues the same store, so recoveries stack.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::{context_hash, Batch, List, Options, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SEGMENTS: [&str; 3] = ["s0.g1", "s1.g1", "s2.g1"];

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(usize, List, bool, Vec<u8>)>),
    Guarded(Vec<(usize, List, bool, Vec<u8>)>),
    Replace(usize, List, Vec<Vec<u8>>),
    Compact,
    Delete(usize),
}

fn key(rng: &mut StdRng) -> Vec<u8> {
    let i = rng.gen_range(0..200);
    if rng.gen_bool(0.5) {
        context_hash(&format!("ctx-{i}")).into_bytes()
    } else {
        format!("user-{i}").into_bytes()
    }
}

/// Operation `n` of the stream for `seed`: the same in the child and the parent.
fn op(seed: u64, n: u64) -> Op {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(n));
    let list = |rng: &mut StdRng| {
        if rng.gen_bool(0.7) {
            List::Included
        } else {
            List::Excluded
        }
    };
    match rng.gen_range(0..100) {
        0..=59 => {
            let changes = (0..rng.gen_range(1..40))
                .map(|_| {
                    (
                        rng.gen_range(0..3),
                        list(&mut rng),
                        rng.gen_bool(0.7),
                        key(&mut rng),
                    )
                })
                .collect();
            if rng.gen_bool(0.3) {
                Op::Guarded(changes)
            } else {
                Op::Write(changes)
            }
        }
        60..=79 => {
            let n = rng.gen_range(0..400);
            let keys = (0..n).map(|_| key(&mut rng)).collect();
            Op::Replace(rng.gen_range(0..3), list(&mut rng), keys)
        }
        80..=92 => Op::Compact,
        _ => Op::Delete(rng.gen_range(0..3)),
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Write(c) => format!("write of {} changes", c.len()),
        Op::Guarded(c) => format!("guarded write of {} changes", c.len()),
        Op::Replace(seg, list, keys) => format!(
            "replace of {} {list:?} with {} keys",
            SEGMENTS[*seg],
            keys.len()
        ),
        Op::Compact => "compact".into(),
        Op::Delete(seg) => format!("delete {}", SEGMENTS[*seg]),
    }
}

type Model = BTreeMap<String, [BTreeSet<Vec<u8>>; 2]>;

fn batch_of(changes: &[(usize, List, bool, Vec<u8>)]) -> Batch {
    let mut b = Batch::new();
    for (seg, list, add, key) in changes {
        b = if *add {
            b.add(SEGMENTS[*seg], *list, key.clone())
        } else {
            b.remove(SEGMENTS[*seg], *list, key.clone())
        };
    }
    b
}

fn apply_model(model: &mut Model, cursor: &mut u64, op: &Op) {
    match op {
        Op::Write(changes) | Op::Guarded(changes) => {
            for (seg, list, add, key) in changes {
                let sets = model.entry(SEGMENTS[*seg].to_string()).or_default();
                if *add {
                    sets[list.index()].insert(key.clone());
                } else {
                    sets[list.index()].remove(key);
                }
            }
            if matches!(op, Op::Guarded(_)) {
                *cursor += 1;
            }
        }
        Op::Replace(seg, list, keys) => {
            let sets = model.entry(SEGMENTS[*seg].to_string()).or_default();
            sets[list.index()] = keys.iter().cloned().collect();
        }
        Op::Compact => {}
        Op::Delete(seg) => {
            model.remove(SEGMENTS[*seg]);
        }
    }
}

fn options() -> Options {
    Options {
        poll_interval: None,
        auto_compact: true,
        compact_min_log_bytes: 16 * 1024,
        compact_log_ratio: 0.0,
        sort_memory_budget: 4096,
        membership_index_min_lists: 1,
        ..Options::default()
    }
}

/// The writer, run as a child process by the test below.
#[test]
#[ignore]
fn crash_writer_child() {
    let (Ok(dir), Ok(seed), Ok(start), Ok(acks)) = (
        std::env::var("CRASH_DIR"),
        std::env::var("CRASH_SEED"),
        std::env::var("CRASH_START"),
        std::env::var("CRASH_ACKS"),
    ) else {
        return;
    };
    let seed: u64 = seed.parse().unwrap();
    let start: u64 = start.parse().unwrap();
    let store = Store::open_or_create(&dir, options()).unwrap();
    let mut ack_file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&acks)
        .unwrap();
    let mut cursor = store.snapshot().metadata().cursor;
    for n in start.. {
        match op(seed, n) {
            Op::Write(changes) => {
                store.write(batch_of(&changes)).unwrap();
            }
            Op::Guarded(changes) => {
                let next = (cursor.parse::<u64>().unwrap_or(0) + 1).to_string();
                store
                    .write(batch_of(&changes).with_cursor(cursor.clone(), next.clone()))
                    .unwrap();
                cursor = next;
            }
            Op::Replace(seg, list, keys) => {
                store
                    .replace_list(SEGMENTS[seg], None, list, keys.into_iter().map(Ok))
                    .unwrap();
            }
            Op::Compact => {
                store.compact().unwrap();
            }
            Op::Delete(seg) => match store.delete_segment(SEGMENTS[seg]) {
                Ok(()) | Err(segstore::Error::UnknownSegment(_)) => {}
                Err(e) => panic!("{e}"),
            },
        }
        // One write per acknowledgement, so a kill cannot leave half a line.
        ack_file.write_all(format!("{n}\n").as_bytes()).unwrap();
        ack_file.sync_data().unwrap();
    }
}

/// Prints the keys that differ and the operations that last touched them.
fn report_differences(state: &Model, model: &Model, seed: u64, acked: u64) {
    for (seg, sets) in state {
        let Some(m) = model.get(seg) else { continue };
        for i in 0..2 {
            let differing: Vec<Vec<u8>> = m[i].symmetric_difference(&sets[i]).cloned().collect();
            if differing.is_empty() {
                continue;
            }
            let shown: Vec<String> = differing
                .iter()
                .map(|k| {
                    let side = if m[i].contains(k) { "missing" } else { "extra" };
                    format!("{side} {}", String::from_utf8_lossy(k))
                })
                .collect();
            eprintln!("{seg} list {i}: {shown:?}");
            for n in (0..acked).rev().take(3000) {
                let o = op(seed, n);
                match &o {
                    Op::Write(c) | Op::Guarded(c) => {
                        for (sg, l, add, k) in c {
                            if differing.contains(k) {
                                eprintln!("  op {n}: {} {l:?} add={add}", SEGMENTS[*sg]);
                            }
                        }
                    }
                    Op::Replace(sg, l, keys) if SEGMENTS[*sg] == seg => {
                        eprintln!(
                            "  op {n}: replace {l:?} ({} keys, has it: {})",
                            keys.len(),
                            differing.iter().any(|d| keys.contains(d))
                        );
                    }
                    Op::Delete(sg) if SEGMENTS[*sg] == seg => eprintln!("  op {n}: delete"),
                    Op::Compact => eprintln!("  op {n}: compact"),
                    _ => {}
                }
            }
        }
    }
}

fn store_state(store: &Store) -> (Model, String) {
    let snap = store.snapshot();
    let mut model = Model::new();
    for info in snap.segments() {
        let sets = [
            snap.export(&info.segment, List::Included)
                .unwrap()
                .collect(),
            snap.export(&info.segment, List::Excluded)
                .unwrap()
                .collect(),
        ];
        model.insert(info.segment, sets);
    }
    (model, snap.metadata().cursor)
}

fn acked(path: &Path) -> u64 {
    // Every line is a whole number: the ack is written before its fsync, so a torn last line
    // can only be a prefix of a number that was never acknowledged.
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .count() as u64
}

#[test]
fn kill_9_at_random_points_loses_nothing_acknowledged() {
    let points: u64 = std::env::var("SEGSTORE_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("SEGSTORE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261128);
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let acks = dir.path().join("acks");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = 0u64;
    let mut model = Model::new();
    let mut cursor = 0u64;
    let mut total_ops = 0u64;
    let mut in_flight_landed = 0u64;
    for point in 0..points {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_writer_child",
                "--test-threads=1",
            ])
            .env("CRASH_DIR", &store_dir)
            .env("CRASH_SEED", seed.to_string())
            .env("CRASH_START", done.to_string())
            .env("CRASH_ACKS", &acks)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.gen_range(20_000..250_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked_now = acked(&acks);
        assert!(acked_now >= done);
        // Bring the model to the acknowledged prefix.
        for n in done..acked_now {
            apply_model(&mut model, &mut cursor, &op(seed, n));
        }
        total_ops = acked_now;
        if !store_dir.join("MANIFEST").exists() {
            assert_eq!(acked_now, 0, "acknowledged writes but no store");
            continue;
        }
        let store = Store::open(&store_dir, options())
            .unwrap_or_else(|e| panic!("crash point {point}: reopen failed: {e}"));
        let (state, stored_cursor) = store_state(&store);
        let cursor_str = |c: u64| if c == 0 { String::new() } else { c.to_string() };
        if state == model && stored_cursor == cursor_str(cursor) {
            done = acked_now;
        } else {
            // The operation in flight may have landed whole.
            let mut with_next = model.clone();
            let mut next_cursor = cursor;
            apply_model(&mut with_next, &mut next_cursor, &op(seed, acked_now));
            if !(state == with_next && stored_cursor == cursor_str(next_cursor)) {
                let keep = std::env::temp_dir().join(format!("segstore-crash-failure-{point}"));
                let _ = std::fs::create_dir_all(&keep);
                for entry in std::fs::read_dir(&store_dir).unwrap().flatten() {
                    let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
                }
                for (seg, sets) in &state {
                    let a = model.get(seg);
                    let b = with_next.get(seg);
                    eprintln!(
                        "{seg}: store {}/{} model {:?} model+1 {:?}",
                        sets[0].len(),
                        sets[1].len(),
                        a.map(|s| (s[0].len(), s[1].len())),
                        b.map(|s| (s[0].len(), s[1].len()))
                    );
                }
                report_differences(&state, &with_next, seed, acked_now);
                eprintln!(
                    "model segments {:?}, cursor {stored_cursor:?} vs {cursor}",
                    model.keys().collect::<Vec<_>>()
                );
                eprintln!("store files kept in {}", keep.display());
            }
            assert!(
                state == with_next && stored_cursor == cursor_str(next_cursor),
                "crash point {point}: state after recovery is not the model after {acked_now} \
                 or {} operations (op in flight: {})",
                acked_now + 1,
                describe(&op(seed, acked_now))
            );
            // It landed: acknowledge it on the child's behalf so the stream stays aligned.
            model = with_next;
            cursor = next_cursor;
            in_flight_landed += 1;
            done = acked_now + 1;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&acks)
                .unwrap();
            f.write_all(format!("{acked_now}\n").as_bytes()).unwrap();
        }
        drop(store);
        let problems = segstore::verify(&store_dir).unwrap();
        assert!(
            problems.is_empty(),
            "crash point {point}: verify: {problems:?}"
        );
    }
    eprintln!(
        "{points} crash points, {total_ops} operations acknowledged, \
         {in_flight_landed} times the operation in flight had landed whole"
    );
    assert!(
        total_ops > points,
        "the workload barely ran: {total_ops} operations"
    );
}
