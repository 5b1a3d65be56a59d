//! Every kind of damage to every kind of file of a store.
//!
//! Files: the manifest, the live log, a hashed table named by the manifest, an fst table named
//! only by the log, and the membership index's postings file. Damage: a bit flip at every byte (tables: header, footer and a stride of
//! the body), truncation at every length (inside and at every record boundary), zero-filled
//! blocks, appended garbage and appended zeros, the file missing, and the same file from
//! another store.
//!
//! Invariant: `Store::open`, `ReadOnlyStore::open` and `verify` either report an error that
//! names the damaged file, or — only for damage at the end of the live log that a tear
//! explains, the torn tail — recover exactly the records wholly before the damage: any number
//! when the log was cut short or the rest of the file is zeros from the damage on (an unsynced
//! append leaves that, and nothing remains to tell it from a crash before those writes). A
//! flipped bit in the last record, like any other, leaves non-zero bytes after it and is
//! reported (format-spec.md §4.6). Never a panic, never a state that is not a whole prefix of
//! the writes.

mod scratch;

use segstore::{context_hash, Batch, Error, List, Options, ReadOnlyStore, Snapshot, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type State = (BTreeMap<String, [Vec<Vec<u8>>; 2]>, Option<u64>, String);

fn state(snap: &Snapshot) -> State {
    let mut map = BTreeMap::new();
    for info in snap.segments() {
        map.insert(
            info.segment.clone(),
            [
                snap.export(&info.segment, List::Included)
                    .unwrap()
                    .collect(),
                snap.export(&info.segment, List::Excluded)
                    .unwrap()
                    .collect(),
            ],
        );
    }
    let meta = snap.metadata();
    (map, meta.synchronized_on, meta.cursor)
}

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        membership_index_min_lists: 1,
        ..Options::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    /// State after 0, 1, ... records of the live log.
    prefixes: Vec<State>,
}

fn build_fixture() -> Fixture {
    let dir = scratch::dir();
    let store = Store::create(dir.path(), options()).unwrap();
    let hashes: Vec<Vec<u8>> = (0..60)
        .map(|i| context_hash(&format!("u{i}")).into_bytes())
        .collect();
    store
        .replace_list(
            "hashed.g1",
            None,
            List::Included,
            hashes.into_iter().map(Ok),
        )
        .unwrap();
    store.compact().unwrap();
    let mut prefixes = vec![state(&store.snapshot())];
    store
        .replace_list(
            "general.g1",
            Some("org"),
            List::Included,
            (0..50).map(|i| Ok(format!("org-{i:03}").into_bytes())),
        )
        .unwrap();
    prefixes.push(state(&store.snapshot()));
    for i in 0..4 {
        store
            .write(
                Batch::new()
                    .add("general.g1", List::Excluded, format!("org-{i:03}"))
                    .add("hashed.g1", List::Excluded, context_hash(&format!("u{i}")))
                    .remove(
                        "hashed.g1",
                        List::Included,
                        context_hash(&format!("u{}", 10 + i)),
                    )
                    .with_cursor(
                        if i == 0 {
                            String::new()
                        } else {
                            format!("v{i}")
                        },
                        format!("v{}", i + 1),
                    )
                    .synchronized_on(1000 + i as u64),
            )
            .unwrap();
        prefixes.push(state(&store.snapshot()));
    }
    Fixture { dir, prefixes }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Ends of the records of a log file.
fn record_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 56;
    while pos + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 16 + len + 4;
        ends.push(pos);
    }
    ends
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn names(error: &Error, file: &Path) -> bool {
    match error {
        Error::Io { path, .. }
        | Error::Corrupt { path, .. }
        | Error::ChecksumMismatch { path, .. }
        | Error::MissingFile { path, .. }
        | Error::UnsupportedVersion { path, .. }
        | Error::ForeignFile { path } => path == file,
        Error::NotFound { .. } => file.ends_with("MANIFEST"),
        _ => false,
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize),
    Truncate(usize),
    Zero(usize, usize),
    Append(Vec<u8>),
    Missing,
    Foreign,
}

/// Records wholly before the damage, and whether the damage may be a torn tail at all, given
/// the damaged file's bytes.
fn survivors(damage: &Damage, ends: &[usize], damaged: &[u8]) -> (usize, bool) {
    let before = |o: usize| ends.iter().filter(|&&e| e <= o).count();
    // A tear leaves a prefix and then zeros: damage is one only if everything from it on is 0.
    let zeros_from = |o: usize| damaged.get(o..).is_some_and(|r| r.iter().all(|&b| b == 0));
    let n = ends.len();
    match damage {
        Damage::Flip(o) | Damage::Zero(o, _) => (before(*o), zeros_from(*o)),
        // A log cut short reads as a log that ends at the cut: nothing after it remains to
        // tell a truncation from a crash before those writes (format-spec.md, §8).
        Damage::Truncate(l) => (before(*l), true),
        Damage::Append(bytes) => (n, bytes.iter().all(|&b| b == 0)),
        Damage::Missing | Damage::Foreign => (0, false),
    }
}

fn apply(damage: &Damage, path: &Path, original: &[u8], foreign: &Path) {
    let mut bytes = original.to_vec();
    match damage {
        Damage::Flip(o) => bytes[*o] ^= 0x20,
        Damage::Truncate(l) => bytes.truncate(*l),
        Damage::Zero(o, len) => {
            let end = (*o + *len).min(bytes.len());
            bytes[*o..end].fill(0);
        }
        Damage::Append(extra) => bytes.extend_from_slice(extra),
        Damage::Missing => {
            std::fs::remove_file(path).unwrap();
            return;
        }
        Damage::Foreign => {
            bytes = std::fs::read(foreign.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn damages(len: usize, dense: bool) -> Vec<Damage> {
    let mut out = Vec::new();
    for o in 0..len {
        if dense || o < 160 || o + 160 > len || o % 13 == 0 {
            out.push(Damage::Flip(o));
        }
    }
    for l in 0..len {
        if dense || l < 160 || l + 160 > len || l % 13 == 0 {
            out.push(Damage::Truncate(l));
        }
    }
    for o in (0..len).step_by(97) {
        out.push(Damage::Zero(o, 512));
    }
    out.push(Damage::Zero(0, len));
    out.push(Damage::Append(vec![0xA5; 100]));
    out.push(Damage::Append(vec![0; 4096]));
    out.push(Damage::Missing);
    out.push(Damage::Foreign);
    out
}

#[test]
fn every_damage_to_every_file_is_reported_or_is_a_torn_tail() {
    let fixture = build_fixture();
    let other = build_fixture();
    let original_state = fixture.prefixes.last().unwrap().clone();
    let dir = fixture.dir.path();
    let log = files(dir, "seglog").pop().unwrap();
    let tables = files(dir, "sstbl");
    assert_eq!(
        tables.len(),
        2,
        "a manifest table and a log-named table (the filter index has no key table)"
    );
    let postings = files(dir, "ssidx");
    assert_eq!(postings.len(), 1, "the membership index's postings");
    let mut targets = vec![(dir.join("MANIFEST"), true), (log.clone(), true)];
    targets.extend(tables.iter().chain(&postings).map(|t| (t.clone(), false)));
    let log_ends = record_ends(&std::fs::read(&log).unwrap());
    assert_eq!(
        log_ends.len() + 1,
        fixture.prefixes.len(),
        "one record per write"
    );
    let mut cases = 0;
    for (target, dense) in &targets {
        let original = std::fs::read(target).unwrap();
        let is_log = *target == log;
        for damage in damages(original.len(), *dense) {
            cases += 1;
            let work = scratch::dir();
            copy_dir(dir, work.path());
            let path = work.path().join(target.file_name().unwrap());
            apply(&damage, &path, &original, other.dir.path());
            let damaged = std::fs::read(&path).unwrap_or_default();
            let (kept, may_be_torn) = survivors(&damage, &log_ends, &damaged);
            let ctx = format!(
                "{} {damage:?}",
                target.file_name().unwrap().to_string_lossy()
            );
            // A file from another store is told apart from the rest by its store id: the error
            // may name it, or the files it disagrees with.
            let names_it = |e: &Error| {
                names(e, &path)
                    || (matches!(damage, Damage::Foreign) && matches!(e, Error::ForeignFile { .. }))
            };
            let acceptable = |s: &State| {
                if is_log && may_be_torn {
                    *s == fixture.prefixes[kept]
                } else {
                    *s == original_state
                }
            };
            // Readers first: they repair nothing.
            match ReadOnlyStore::open(work.path(), options()) {
                Ok(r) => assert!(acceptable(&state(&r.snapshot())), "{ctx}: reader state"),
                Err(e) => assert!(
                    names_it(&e),
                    "{ctx}: reader error does not name the file: {e}"
                ),
            }
            let problems = segstore::verify(work.path());
            match Store::open(work.path(), options()) {
                Ok(s) => {
                    assert!(
                        acceptable(&state(&s.snapshot())),
                        "{ctx}: opened with a wrong state"
                    );
                }
                Err(e) => {
                    assert!(names_it(&e), "{ctx}: error does not name the file: {e}");
                    match problems {
                        Ok(p) => assert!(
                            !p.is_empty()
                                && (p.iter().any(|p| p.path == path)
                                    || matches!(damage, Damage::Foreign)),
                            "{ctx}: open failed ({e}) but verify found {p:?}"
                        ),
                        Err(v) => assert!(names_it(&v), "{ctx}: verify error {v}"),
                    }
                }
            }
        }
    }
    eprintln!("{cases} damaged-file cases");
}
