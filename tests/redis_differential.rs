//! `segstore serve --redis` against a real `redis-server`: the same randomized stream of
//! Relay-style transactions, plain writes, `WATCH` conflicts between two writer connections,
//! and reads goes to both, and every reply must match (sets compared as sets). At the end the
//! whole keyspace is compared, and the store, read in this process with `ReadOnlyStore`, must
//! hold what Redis holds.

#![cfg(feature = "cli")]

mod serve_support;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use redis::Value;
use segstore::{context_hash, Options, ReadOnlyStore};
use serve_support::{connect, RedisServer, Serve};

const PREFIX: &str = "ld-test";

/// One server under comparison: two writer connections and a reader.
struct Target {
    conns: Vec<redis::Connection>,
}

impl Target {
    fn new(url: &str) -> Target {
        Target {
            conns: (0..3).map(|_| connect(url)).collect(),
        }
    }

    /// Runs one command on connection `c`; the reply in a canonical text form. `queued`
    /// names the commands an `EXEC` answers for.
    fn run(&mut self, c: usize, args: &[String], queued: &[String]) -> String {
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        match cmd.query::<Value>(&mut self.conns[c]) {
            Ok(v) => canon(&args[0], &v, queued),
            Err(e) => format!("error {:?} {}", e.kind(), e.code().unwrap_or("")),
        }
    }
}

/// A reply as text; the members of a set in order, whatever order the server sent.
fn canon(command: &str, value: &Value, queued: &[String]) -> String {
    match value {
        Value::Nil => "nil".into(),
        Value::Int(i) => format!("int {i}"),
        Value::Okay => "ok".into(),
        Value::SimpleString(s) => format!("status {s}"),
        Value::BulkString(b) => format!("bulk {}", String::from_utf8_lossy(b)),
        Value::Array(items) | Value::Set(items) => {
            let mut parts: Vec<String> = if command.eq_ignore_ascii_case("exec") {
                items
                    .iter()
                    .zip(queued)
                    .map(|(v, name)| canon(name, v, &[]))
                    .collect()
            } else {
                items.iter().map(|v| canon("", v, &[])).collect()
            };
            if command.eq_ignore_ascii_case("smembers") {
                parts.sort();
            }
            format!("[{}]", parts.join(", "))
        }
        Value::ServerError(e) => format!("error {}", e.code()),
        other => format!("other {other:?}"),
    }
}

fn key(tail: &str) -> String {
    format!("{PREFIX}:{tail}")
}

struct Universe {
    hashes: Vec<String>,
    refs: Vec<String>,
}

impl Universe {
    fn new() -> Universe {
        Universe {
            hashes: (0..12).map(|i| context_hash(&format!("user{i}"))).collect(),
            refs: [
                "seg0.g1", "seg0.g2", "seg1.g1", "seg2.g1", "seg3.g7", "beta.g1",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    fn set_key(&self, rng: &mut StdRng) -> String {
        let list = if rng.gen_bool(0.5) {
            "include"
        } else {
            "exclude"
        };
        let hash = self.hashes.choose(rng).unwrap();
        key(&format!("big_segment_{list}:{hash}"))
    }

    fn any_key(&self, rng: &mut StdRng) -> String {
        match rng.gen_range(0..10) {
            0 => key("big_segments_lock"),
            1 => key("big_segments_cursor"),
            2 => key("big_segments_synchronized_on"),
            3 => "unrelated:key".into(),
            _ => self.set_key(rng),
        }
    }

    fn refs(&self, rng: &mut StdRng) -> Vec<String> {
        let n = rng.gen_range(1..=3);
        (0..n)
            .map(|_| self.refs.choose(rng).unwrap().clone())
            .collect()
    }

    /// A write to one set: SADD or SREM of 1..=3 refs.
    fn set_write(&self, rng: &mut StdRng) -> Vec<String> {
        let verb = if rng.gen_bool(0.65) { "SADD" } else { "SREM" };
        let mut cmd = vec![verb.to_owned(), self.set_key(rng)];
        cmd.extend(self.refs(rng));
        cmd
    }

    fn read(&self, rng: &mut StdRng) -> Vec<String> {
        let k = self.any_key(rng);
        match rng.gen_range(0..8) {
            0 | 1 => vec!["SMEMBERS".into(), self.set_key(rng)],
            2 => vec![
                "SISMEMBER".into(),
                self.set_key(rng),
                self.refs[rng.gen_range(0..self.refs.len())].clone(),
            ],
            3 => vec!["SCARD".into(), self.set_key(rng)],
            4 => vec!["EXISTS".into(), k, self.any_key(rng)],
            5 => vec!["TYPE".into(), k],
            6 => vec!["GET".into(), self.any_key(rng)],
            _ => vec!["GET".into(), key("big_segments_cursor")],
        }
    }

    /// A plain write outside a transaction.
    fn plain_write(&self, rng: &mut StdRng, version: &mut u32) -> Vec<String> {
        match rng.gen_range(0..10) {
            0 => vec!["DEL".into(), self.set_key(rng)],
            1 => {
                *version += 1;
                vec![
                    "SET".into(),
                    key("big_segments_synchronized_on"),
                    (1_700_000_000_000u64 + u64::from(*version)).to_string(),
                ]
            }
            2 => vec!["SET".into(), key("big_segments_lock"), String::new()],
            // An initial sync's pages carry empty versions: a cursor SET to "" exists, holding "".
            3 => vec!["SET".into(), key("big_segments_cursor"), String::new()],
            4 if rng.gen_bool(0.3) => vec!["DEL".into(), key("big_segments_cursor")],
            _ => self.set_write(rng),
        }
    }
}

fn both(
    a: &mut Target,
    b: &mut Target,
    c: usize,
    cmd: &[String],
    queued: &[String],
    log: &[String],
) {
    let ra = a.run(c, cmd, queued);
    let rb = b.run(c, cmd, queued);
    assert_eq!(
        ra,
        rb,
        "conn {c} {cmd:?}: redis-server said {ra}, segstore said {rb}\nthe last steps:\n{}",
        log.iter()
            .rev()
            .take(12)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn same_replies_as_redis_server_for_relay_style_traffic() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--redis-prefix", PREFIX]);
    let mut reference = Target::new(&redis.url());
    let mut ours = Target::new(&serve.url());
    let universe = Universe::new();
    let mut rng = StdRng::seed_from_u64(0x5e65_7a0e);
    let mut version = 0u32;
    let mut log: Vec<String> = Vec::new();
    let lock = key("big_segments_lock");
    let cursor = key("big_segments_cursor");
    let mut conflicts = 0;
    for step in 0..400 {
        let c = rng.gen_range(0..2);
        match rng.gen_range(0..10) {
            // A Relay-style patch, sometimes raced by the other writer between WATCH and EXEC.
            0..=4 => {
                let watched = if rng.gen_bool(0.7) {
                    lock.clone()
                } else {
                    universe.any_key(&mut rng)
                };
                let race = rng.gen_bool(0.35);
                let mut steps: Vec<(usize, Vec<String>)> = vec![
                    (c, vec!["WATCH".into(), watched]),
                    (c, vec!["GET".into(), cursor.clone()]),
                ];
                if race {
                    let other = 1 - c;
                    steps.push((other, universe.plain_write(&mut rng, &mut version)));
                }
                version += 1;
                steps.push((c, vec!["MULTI".into()]));
                let mut queued = vec!["SET".to_owned(), "SET".to_owned()];
                steps.push((c, vec!["SET".into(), lock.clone(), String::new()]));
                steps.push((c, vec!["SET".into(), cursor.clone(), format!("v{version}")]));
                for _ in 0..rng.gen_range(1..=8) {
                    let cmd = if rng.gen_bool(0.15) {
                        universe.read(&mut rng)
                    } else {
                        universe.set_write(&mut rng)
                    };
                    queued.push(cmd[0].clone());
                    steps.push((c, cmd));
                }
                for (conn, cmd) in &steps {
                    log.push(format!("{step}: conn {conn} {cmd:?}"));
                    both(&mut reference, &mut ours, *conn, cmd, &[], &log);
                }
                let exec = vec!["EXEC".to_owned()];
                log.push(format!("{step}: conn {c} EXEC"));
                let want = reference.run(c, &exec, &queued);
                let got = ours.run(c, &exec, &queued);
                assert_eq!(
                    want,
                    got,
                    "EXEC: redis-server said {want}, segstore said {got}\n{}",
                    log.join("\n")
                );
                if want == "nil" {
                    conflicts += 1;
                }
            }
            5..=7 => {
                let cmd = universe.read(&mut rng);
                log.push(format!("{step}: conn 2 {cmd:?}"));
                both(&mut reference, &mut ours, 2, &cmd, &[], &log);
            }
            _ => {
                let cmd = universe.plain_write(&mut rng, &mut version);
                log.push(format!("{step}: conn {c} {cmd:?}"));
                both(&mut reference, &mut ours, c, &cmd, &[], &log);
            }
        }
    }
    assert!(
        conflicts >= 5,
        "the stream raced WATCH only {conflicts} times"
    );

    // The whole keyspace, then the store itself.
    for hash in &universe.hashes {
        for list in ["include", "exclude"] {
            let cmd = vec![
                "SMEMBERS".to_owned(),
                key(&format!("big_segment_{list}:{hash}")),
            ];
            both(&mut reference, &mut ours, 2, &cmd, &[], &log);
        }
    }
    for k in [&lock, &cursor, &key("big_segments_synchronized_on")] {
        both(
            &mut reference,
            &mut ours,
            2,
            &["GET".to_owned(), k.clone()],
            &[],
            &log,
        );
    }
    let reader = ReadOnlyStore::open(
        dir.path(),
        Options {
            poll_interval: None,
            ..Options::default()
        },
    )
    .unwrap();
    let snapshot = reader.snapshot();
    let mut redis_conn = connect(&redis.url());
    for hash in &universe.hashes {
        let mentions = snapshot.mentions(hash.as_bytes()).unwrap();
        for (list, held) in [
            ("include", &mentions.included),
            ("exclude", &mentions.excluded),
        ] {
            let mut want: Vec<String> = redis::cmd("SMEMBERS")
                .arg(key(&format!("big_segment_{list}:{hash}")))
                .query(&mut redis_conn)
                .unwrap();
            want.sort();
            let got: Vec<String> = held.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, "{list} of {hash} in the store");
        }
    }
    let want_cursor: Option<String> = redis::cmd("GET")
        .arg(&cursor)
        .query(&mut redis_conn)
        .unwrap();
    assert_eq!(
        Some(snapshot.metadata().cursor).filter(|c| !c.is_empty()),
        want_cursor
    );
    let (status, stderr) = serve.stop();
    assert!(status.success(), "serve exited with {status}: {stderr}");
}
