//! Bad input at the library API and the CLI: each case gets a defined result or a clear error,
//! never a panic, and a rejected write changes nothing.
//!
//! Covered elsewhere, not repeated here (tests/cli.rs): `apply` with an empty key, a
//! 4097-byte key, an invalid-UTF-8 line, bad JSON and wrong types; `import` of over-long keys;
//! unknown `--format` names.

use segstore::ingest::{parse_line, Format, ParseError};
use segstore::{
    Batch, Details, Error, List, Options, ReadOnlyStore, SegmentChange, Status, Store, MAX_KEY_LEN,
};
use std::path::Path;

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        ..Options::default()
    }
}

/// A store holding `s.g1` with `before` included.
fn store_with_one_key() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::create(tmp.path(), options()).unwrap();
    store
        .write(Batch::new().add("s.g1", List::Included, "before"))
        .unwrap();
    (tmp, store)
}

/// Everything a snapshot says, to compare before and after a rejected write.
fn dump(store: &Store) -> String {
    let snap = store.snapshot();
    let mut out = format!("{:?} {}\n", snap.metadata(), snap.last_seq());
    for info in snap.segments() {
        out.push_str(&format!("{info:?}\n"));
        for list in List::BOTH {
            let keys: Vec<Vec<u8>> = snap.export(&info.segment, list).unwrap().collect();
            out.push_str(&format!("  {list:?}: {keys:?}\n"));
        }
    }
    out
}

/// Runs `write` and expects it refused with an error `matches` accepts, leaving the store
/// unchanged, still writable, and unchanged after a reopen.
fn refused(dir: &Path, store: Store, batch: Batch, matches: fn(&Error) -> bool) -> Store {
    let before = dump(&store);
    let err = store.write(batch).expect_err("the write must be refused");
    assert!(matches(&err), "unexpected error: {err:?}");
    assert!(!err.to_string().is_empty());
    assert_eq!(dump(&store), before, "a refused write changed the state");
    drop(store);
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(dump(&store), before, "a refused write reached the log");
    store
        .write(Batch::new().add("s.g1", List::Included, "after"))
        .expect("the store still takes writes");
    store
}

fn invalid_key(len: usize) -> fn(&Error) -> bool {
    match len {
        0 => |e| matches!(e, Error::InvalidKey { len: 0 }),
        _ => |e| matches!(e, Error::InvalidKey { len: 4097 }),
    }
}

fn invalid_argument(what: &'static str) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::InvalidArgument { what: w, .. } if *w == what)
}

// ------------------------------------------------------------------------------------------
// Keys

#[test]
fn empty_and_overlong_keys_are_refused_and_change_nothing() {
    let (tmp, store) = store_with_one_key();
    let long = vec![b'k'; MAX_KEY_LEN + 1];
    // A bad key anywhere in the batch refuses the whole batch, even after good changes.
    let store = refused(
        tmp.path(),
        store,
        Batch::new()
            .add("s.g1", List::Included, "fine")
            .add("s.g1", List::Included, Vec::new()),
        invalid_key(0),
    );
    let store = refused(
        tmp.path(),
        store,
        Batch::new().add("other.g1", List::Included, "fine").remove(
            "s.g1",
            List::Excluded,
            long.clone(),
        ),
        invalid_key(4097),
    );
    // The limit itself is accepted.
    let max = vec![b'k'; MAX_KEY_LEN];
    store
        .write(Batch::new().add("s.g1", List::Included, max.clone()))
        .unwrap();
    assert_eq!(
        store.snapshot().check("s.g1", &max).unwrap(),
        Status::Included
    );

    // Bulk replace: refused, the list keeps its keys, and no table is left behind.
    let tables = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".sstbl")
            })
            .count()
    };
    let tables_before = tables(tmp.path());
    for bad in [Vec::new(), long.clone()] {
        let keys = vec![Ok(b"a".to_vec()), Ok(bad.clone()), Ok(b"b".to_vec())];
        let err = store
            .replace_list("s.g1", None, List::Included, keys)
            .expect_err("bad key in a bulk replace");
        assert!(
            matches!(err, Error::InvalidKey { len } if len == bad.len()),
            "{err:?}"
        );
        assert_eq!(
            store.snapshot().check("s.g1", b"before").unwrap(),
            Status::Included
        );
        assert_eq!(tables(tmp.path()), tables_before);
    }

    // Lookups with such keys answer, they never fail.
    let snap = store.snapshot();
    for key in [&b""[..], &long[..], &vec![0u8; 1 << 20][..]] {
        assert_eq!(snap.check("s.g1", key).unwrap(), Status::Unknown);
        assert!(snap.membership(key).unwrap().is_empty());
    }
}

#[test]
fn keys_are_bytes_not_text() {
    // Invalid UTF-8, NUL and control bytes are valid keys: keys are opaque bytes, in an
    // overlay, in an fst table, and through a compaction.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::create(tmp.path(), options()).unwrap();
    let odd: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe],
        vec![0],
        b"line\nbreak".to_vec(),
        vec![0xc3],
    ];
    store
        .replace_list("bulk.g1", None, List::Included, odd.iter().cloned().map(Ok))
        .unwrap();
    let mut batch = Batch::new();
    for key in &odd {
        batch = batch.add("overlay.g1", List::Excluded, key.clone());
    }
    store.write(batch).unwrap();
    let check_all = |snap: &segstore::Snapshot| {
        for key in &odd {
            assert_eq!(snap.check("bulk.g1", key).unwrap(), Status::Included);
            assert_eq!(snap.check("overlay.g1", key).unwrap(), Status::Excluded);
        }
        let mut sorted = odd.clone();
        sorted.sort();
        let exported: Vec<Vec<u8>> = snap.export("bulk.g1", List::Included).unwrap().collect();
        assert_eq!(exported, sorted);
    };
    check_all(&store.snapshot());
    store.compact().unwrap();
    check_all(&store.snapshot());
    drop(store);
    check_all(
        &ReadOnlyStore::open(tmp.path(), options())
            .unwrap()
            .snapshot(),
    );
    assert!(segstore::verify(tmp.path()).unwrap().is_empty());
}

// ------------------------------------------------------------------------------------------
// Batches

#[test]
fn a_batch_over_the_record_limit_is_refused_whole() {
    let (tmp, store) = store_with_one_key();
    // 16,400 keys of 4,096 bytes: about 67 MB encoded, over the 64 MiB record limit.
    let key_count = 16_400;
    let mut change = SegmentChange::new("s.g1");
    change.included.add = (0..key_count)
        .map(|i: u32| {
            let mut key = vec![b'k'; MAX_KEY_LEN];
            key[..4].copy_from_slice(&i.to_be_bytes());
            key
        })
        .collect();
    let batch = Batch::new().change(change).with_cursor("", "v1");
    let store = refused(
        tmp.path(),
        store,
        batch,
        |e| matches!(e, Error::BatchTooLarge { size, limit } if *size > *limit && *limit == 64 << 20),
    );
    // The cursor did not move: a guarded write on the old cursor still applies.
    assert_eq!(store.snapshot().metadata().cursor, "");
    store
        .write(
            Batch::new()
                .add("s.g1", List::Included, "x")
                .with_cursor("", "v1"),
        )
        .unwrap();
}

#[test]
fn duplicate_keys_in_one_batch_count_once() {
    let (tmp, store) = store_with_one_key();
    store
        .write(
            Batch::new()
                .add("s.g1", List::Included, "dup")
                .add("s.g1", List::Included, "dup")
                .add("s.g1", List::Included, "before")
                .remove("s.g1", List::Excluded, "absent")
                .remove("s.g1", List::Excluded, "absent"),
        )
        .unwrap();
    let expect = |store: &Store| {
        let snap = store.snapshot();
        let info = snap.segment("s.g1").unwrap();
        assert_eq!((info.included, info.excluded), (2, 0));
        let keys: Vec<Vec<u8>> = snap.export("s.g1", List::Included).unwrap().collect();
        assert_eq!(keys, vec![b"before".to_vec(), b"dup".to_vec()]);
    };
    expect(&store);
    store.compact().unwrap();
    expect(&store);
    drop(store);
    expect(&Store::open(tmp.path(), options()).unwrap());
}

/// The rule (src/change.rs, `ListChange`; format-spec.md §6.2): within one `SegmentChange`,
/// every add of a list applies first and every remove second, so a key both added and removed
/// in one change ends up removed. The `Batch` builder keeps the order of its calls: an add
/// after a remove of the same list starts a new change.
#[test]
fn add_and_remove_of_one_key_in_one_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::create(tmp.path(), options()).unwrap();
    store
        .write(Batch::new().add("s.g1", List::Included, "present"))
        .unwrap();

    // One change naming a key in both add and remove: removed, whatever the field order.
    let mut change = SegmentChange::new("s.g1");
    change.included.remove = vec![b"present".to_vec(), b"new".to_vec()].into();
    change.included.add = vec![b"present".to_vec(), b"new".to_vec()].into();
    store.write(Batch::new().change(change)).unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.check("s.g1", b"present").unwrap(), Status::Unknown);
    assert_eq!(snap.check("s.g1", b"new").unwrap(), Status::Unknown);

    // The builder: add then remove is one change (removed); remove then add is two changes,
    // applied in order (added).
    let b = Batch::new()
        .add("s.g1", List::Included, "a")
        .remove("s.g1", List::Included, "a");
    assert_eq!(b.changes.len(), 1);
    store.write(b).unwrap();
    let b = Batch::new()
        .remove("s.g1", List::Included, "b")
        .add("s.g1", List::Included, "b");
    assert_eq!(b.changes.len(), 2);
    store.write(b).unwrap();
    let expect = |snap: &segstore::Snapshot| {
        assert_eq!(snap.check("s.g1", b"present").unwrap(), Status::Unknown);
        assert_eq!(snap.check("s.g1", b"new").unwrap(), Status::Unknown);
        assert_eq!(snap.check("s.g1", b"a").unwrap(), Status::Unknown);
        assert_eq!(snap.check("s.g1", b"b").unwrap(), Status::Included);
    };
    expect(&store.snapshot());
    store.compact().unwrap();
    expect(&store.snapshot());
    drop(store);
    expect(
        &ReadOnlyStore::open(tmp.path(), options())
            .unwrap()
            .snapshot(),
    );

    // The same through `apply`'s updates format: one line is one change.
    let line = r#"{"segment": "s.g1", "included": {"add": ["c"], "remove": ["c"]}}"#;
    let parsed = parse_line(&Format::Updates, line, false).unwrap();
    let segstore::ingest::Parsed::Changes(changes) = parsed else {
        panic!("updates parse to changes")
    };
    let store = Store::open(tmp.path(), options()).unwrap();
    store
        .write(Batch {
            changes,
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(
        store.snapshot().check("s.g1", b"c").unwrap(),
        Status::Unknown
    );
}

// ------------------------------------------------------------------------------------------
// Refs, kinds, cursors, details

#[test]
fn refs_without_generation_are_opaque_and_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::create(tmp.path(), options()).unwrap();
    for r in [
        "plain",
        "with.dots.but.no.generation",
        "x.g",
        ".g1",
        "é-ünïcode",
        "a b",
    ] {
        store
            .write(Batch::new().add(r, List::Included, "k"))
            .unwrap();
        assert_eq!(
            store.snapshot().check(r, b"k").unwrap(),
            Status::Included,
            "{r}"
        );
    }
    store.create_segment("created", "user").unwrap();
    assert!(store.snapshot().segment("created").is_some());
    // Refs are exact: no normalisation, no generation stripping.
    assert_eq!(
        store.snapshot().check("plain.g1", b"k").unwrap(),
        Status::Unknown
    );
    assert_eq!(
        store.snapshot().check("Plain", b"k").unwrap(),
        Status::Unknown
    );
}

#[test]
fn bad_refs_and_kinds_are_refused() {
    let (tmp, store) = store_with_one_key();
    let long_ref = "r".repeat(1025);
    let mut store = store;
    for bad in [
        "",
        "a\nb",
        "tab\there",
        "nul\0",
        "del\u{7f}",
        "c1\u{85}",
        &long_ref,
    ] {
        store = refused(
            tmp.path(),
            store,
            Batch::new().add(bad, List::Included, "k"),
            |e| {
                matches!(
                    e,
                    Error::InvalidArgument {
                        what: "segment ref",
                        ..
                    }
                )
            },
        );
        let err = store.create_segment(bad, "user").unwrap_err();
        assert!(invalid_argument("segment ref")(&err), "{err:?}");
        let err = store
            .replace_list(bad, None, List::Included, [Ok(b"k".to_vec())])
            .unwrap_err();
        assert!(invalid_argument("segment ref")(&err), "{err:?}");
        // Reads with such a ref answer "not there".
        let snap = store.snapshot();
        assert_eq!(snap.check(bad, b"before").unwrap(), Status::Unknown);
        assert!(snap.segment(bad).is_none());
        assert!(matches!(
            store.delete_segment(bad),
            Err(Error::UnknownSegment(_))
        ));
    }
    let mut change = SegmentChange::new("new.g1");
    change.kind = Some("bad\nkind".into());
    change.included.add = vec![b"k".to_vec()].into();
    let store = refused(tmp.path(), store, Batch::new().change(change), |e| {
        matches!(
            e,
            Error::InvalidArgument {
                what: "context kind",
                ..
            }
        )
    });
    let err = store.create_segment("new.g1", "").unwrap_err();
    assert!(invalid_argument("context kind")(&err), "{err:?}");
    // The limits themselves are accepted.
    store
        .create_segment(&"r".repeat(1024), &"k".repeat(1024))
        .unwrap();
}

#[test]
fn cursor_limit_is_1024_bytes() {
    let (tmp, store) = store_with_one_key();
    let long = "c".repeat(1025);
    let store = refused(
        tmp.path(),
        store,
        Batch::new().with_cursor("", long.clone()),
        |e| matches!(e, Error::InvalidArgument { what: "cursor", .. }),
    );
    let store = refused(
        tmp.path(),
        store,
        Batch::new().with_cursor(long.clone(), "v1"),
        |e| matches!(e, Error::InvalidArgument { what: "cursor", .. }),
    );
    let max = "c".repeat(1024);
    store
        .write(Batch::new().with_cursor("", max.clone()))
        .unwrap();
    assert_eq!(store.snapshot().metadata().cursor, max);
    // A cursor with control characters or no text at all is just a string.
    store
        .write(Batch::new().with_cursor(max, "line\nbreak"))
        .unwrap();
    store
        .write(Batch::new().with_cursor("line\nbreak", ""))
        .unwrap();
    // The patches parser applies the same limit to versions, naming the field.
    let line = format!(r#"{{"segmentId": "s.g1", "version": "{long}", "previousVersion": ""}}"#);
    let err = parse_line(&Format::Patches, &line, false).unwrap_err();
    assert!(
        matches!(&err, ParseError::Field { path, .. } if path == "/version"),
        "{err:?}"
    );
}

#[test]
fn details_limits() {
    let (tmp, store) = store_with_one_key();
    let tags = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    let before = dump(&store);
    let cases: Vec<(Details, &str)> = vec![
        (
            Details {
                tags: tags(257),
                ..Details::default()
            },
            "tags",
        ),
        (
            Details {
                tags: vec!["ok".into(), String::new()],
                ..Details::default()
            },
            "tag",
        ),
        (
            Details {
                tags: vec!["t".repeat(1025)],
                ..Details::default()
            },
            "tag",
        ),
        (
            Details {
                name: Some("n".repeat(1025)),
                ..Details::default()
            },
            "segment name",
        ),
        (
            Details {
                description: Some("d".repeat(64 * 1024 + 1)),
                ..Details::default()
            },
            "description",
        ),
    ];
    for (details, what) in cases {
        let err = store.set_details("s.g1", details).unwrap_err();
        assert!(invalid_argument(what)(&err), "{what}: {err:?}");
    }
    assert_eq!(dump(&store), before);
    let err = store
        .set_details("nope.g1", Details::default())
        .unwrap_err();
    assert!(matches!(err, Error::UnknownSegment(ref s) if s == "nope.g1"));
    // The limits themselves are accepted, and survive a compaction and a reopen.
    let max = Details {
        name: Some("n".repeat(1024)),
        description: Some("d".repeat(64 * 1024)),
        tags: tags(256),
    };
    store.set_details("s.g1", max.clone()).unwrap();
    store.compact().unwrap();
    drop(store);
    let store = Store::open(tmp.path(), options()).unwrap();
    assert_eq!(store.snapshot().segment("s.g1").unwrap().details, max);
    // A name in a sync change that creates a segment has the same limit.
    let mut change = SegmentChange::new("named.g1");
    change.name = Some("n".repeat(1025));
    refused(tmp.path(), store, Batch::new().change(change), |e| {
        matches!(
            e,
            Error::InvalidArgument {
                what: "segment name",
                ..
            }
        )
    });
}

#[test]
fn unknown_segments_answer_unknown() {
    let (_tmp, store) = store_with_one_key();
    let snap = store.snapshot();
    assert_eq!(snap.check("nope.g1", b"before").unwrap(), Status::Unknown);
    assert_eq!(snap.check("", b"before").unwrap(), Status::Unknown);
    assert!(snap.segment("nope.g1").is_none());
    assert!(matches!(
        snap.export("nope.g1", List::Included),
        Err(Error::UnknownSegment(ref s)) if s == "nope.g1"
    ));
    assert!(matches!(
        store.delete_segment("nope.g1"),
        Err(Error::UnknownSegment(_))
    ));
}

// ------------------------------------------------------------------------------------------
// The CLI (built with the `cli` feature, on by default)

#[cfg(feature = "cli")]
mod cli_support;

#[cfg(feature = "cli")]
mod cli_cases {
    use super::*;
    use segstore::context_hash;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Output;

    fn cli(dir: &Path, args: &[&OsStr], stdin: Option<&[u8]>) -> Output {
        let mut cmd = cli_support::segstore();
        cmd.arg("--dir").arg(dir).args(args);
        cli_support::run(cmd, stdin)
    }

    fn args(list: &[&str]) -> Vec<&'static OsStr> {
        list.iter()
            .map(|s| OsStr::new(Box::leak(s.to_string().into_boxed_str())))
            .collect()
    }

    fn code(out: &Output) -> i32 {
        out.status.code().unwrap()
    }

    fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A store with `s.g1` holding the raw key `\xff\xfe` and `user-1`'s hash.
    fn cli_store() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = Store::create(&dir, options()).unwrap();
        store
            .write(
                Batch::new()
                    .add("s.g1", List::Included, vec![0xff, 0xfe])
                    .add("s.g1", List::Included, context_hash("user-1")),
            )
            .unwrap();
        (tmp, dir)
    }

    #[test]
    fn cli_check_unknown_segment_prints_unknown_and_warns() {
        let (_tmp, dir) = cli_store();
        let out = cli(
            &dir,
            &args(&["check", "nope.g1", "user-1", "--hash-key"]),
            None,
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out), "unknown\n");
        let err = stderr(&out);
        assert!(err.starts_with("warning: no segment \"nope.g1\""), "{err}");
        // A known segment and an unknown key: no warning.
        let out = cli(&dir, &args(&["check", "s.g1", "nobody"]), None);
        assert_eq!((code(&out), stdout(&out)), (0, "unknown\n".into()));
        assert_eq!(stderr(&out), "");
        // A ref without `.g` or with a control character is just a ref nobody has: warnings
        // (no generation suffix, white space, no such segment), each on one line.
        for r in ["plain", "a\nb", "\u{1b}[31m"] {
            let out = cli(&dir, &args(&["check", r, "k"]), None);
            assert_eq!((code(&out), stdout(&out)), (0, "unknown\n".into()), "{r:?}");
            let err = stderr(&out);
            assert!(err.lines().count() >= 2, "warning lines: {err}");
            assert!(err.lines().all(|l| l.starts_with("warning: ")), "{err}");
            assert!(err.contains("has no `.gN` generation suffix"), "{err}");
            assert!(err.contains("warning: no segment"), "{err}");
            // The ref is quoted with escapes: no raw control character reaches the terminal.
            assert!(!stderr(&out).contains('\u{1b}'), "{:?}", stderr(&out));
        }
    }

    #[test]
    fn cli_check_empty_and_overlong_keys_are_runtime_errors() {
        let (_tmp, dir) = cli_store();
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for key_args in [vec!["check", "s.g1", ""], vec!["check", "s.g1", &long]] {
            let out = cli(&dir, &args(&key_args), None);
            assert_eq!(code(&out), 1, "{}", stderr(&out));
            assert!(
                stderr(&out).starts_with("error: invalid key"),
                "{}",
                stderr(&out)
            );
            assert_eq!(stdout(&out), "");
        }
        let out = cli(&dir, &args(&["check", "s.g1", "", "--hash-key"]), None);
        assert_eq!(code(&out), 1);
        assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
        // With --hash-key a long raw key is fine: only its 44-byte hash is looked up.
        let out = cli(&dir, &args(&["check", "s.g1", &long, "--hash-key"]), None);
        assert_eq!((code(&out), stdout(&out)), (0, "unknown\n".into()));
        let out = cli(&dir, &args(&["membership", ""]), None);
        assert_eq!(code(&out), 1);
    }

    #[test]
    fn cli_invalid_utf8_arguments() {
        let (_tmp, dir) = cli_store();
        let bad = OsStr::from_bytes(&[0xff, 0xfe]);
        // A key is bytes: found as stored.
        let out = cli(&dir, &[OsStr::new("check"), OsStr::new("s.g1"), bad], None);
        assert_eq!(
            (code(&out), stdout(&out)),
            (0, "included\n".into()),
            "{}",
            stderr(&out)
        );
        let out = cli(&dir, &[OsStr::new("membership"), bad], None);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out), "{\"s.g1\":true}\n");
        // ...but has no context hash.
        let out = cli(
            &dir,
            &[
                OsStr::new("check"),
                OsStr::new("s.g1"),
                bad,
                OsStr::new("--hash-key"),
            ],
            None,
        );
        assert_eq!(code(&out), 1);
        assert!(stderr(&out).contains("UTF-8"), "{}", stderr(&out));
        // Refs, names, kinds and tags are text: a usage error.
        let usage: [Vec<&OsStr>; 4] = [
            vec![OsStr::new("check"), bad, OsStr::new("k")],
            vec![
                OsStr::new("segment"),
                OsStr::new("set"),
                OsStr::new("s.g1"),
                OsStr::new("--name"),
                bad,
            ],
            vec![
                OsStr::new("segment"),
                OsStr::new("set"),
                OsStr::new("s.g1"),
                OsStr::new("--tag"),
                bad,
            ],
            vec![
                OsStr::new("import"),
                OsStr::new("--segment"),
                bad,
                OsStr::new("-"),
            ],
        ];
        for argv in usage {
            let out = cli(&dir, &argv, Some(b"k\n"));
            assert_eq!(code(&out), 2, "{argv:?}: {}", stderr(&out));
            assert!(stderr(&out).contains("UTF-8"), "{argv:?}: {}", stderr(&out));
        }
        assert!(segstore::verify(&dir).unwrap().is_empty());
    }

    #[test]
    fn cli_import_invalid_utf8_lines() {
        let (tmp, dir) = cli_store();
        // Without --hash-keys, a line is a key of raw bytes.
        let input = b"plain\n\xff\xfe\xfd\n\xc3\n";
        let out = cli(
            &dir,
            &args(&["import", "--segment", "raw.g1", "-"]),
            Some(input),
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let store = ReadOnlyStore::open(&dir, options()).unwrap();
        let snap = store.snapshot();
        for key in [&b"plain"[..], b"\xff\xfe\xfd", b"\xc3"] {
            assert_eq!(
                snap.check("raw.g1", key).unwrap(),
                Status::Included,
                "{key:?}"
            );
        }
        // With --hash-keys a key must be text: the line is named and nothing is imported.
        let file = tmp.path().join("keys.txt");
        std::fs::write(&file, b"user-1\nuser-\xff\n").unwrap();
        let out = cli(
            &dir,
            &[
                OsStr::new("import"),
                OsStr::new("--segment"),
                OsStr::new("hashed.g1"),
                OsStr::new("--hash-keys"),
                file.as_os_str(),
            ],
            None,
        );
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
        drop(store);
        let snap = ReadOnlyStore::open(&dir, options()).unwrap().snapshot();
        assert!(snap.segment("hashed.g1").is_none());
    }

    #[test]
    fn cli_apply_a_line_over_the_record_limit_fails_cleanly() {
        let (tmp, dir) = cli_store();
        // One updates line of 16,400 keys of 4,096 bytes: a valid line whose batch is over the
        // 64 MiB record limit. The line before it stays applied; nothing of it is.
        let mut input = br#"{"segment": "s.g1", "included": {"add": ["first"]}}"#.to_vec();
        input.extend_from_slice(b"\n{\"segment\": \"s.g1\", \"included\": {\"add\": [");
        for i in 0..16_400u32 {
            if i > 0 {
                input.push(b',');
            }
            input.push(b'"');
            let head = format!("{i:08}");
            input.extend_from_slice(head.as_bytes());
            input.extend(std::iter::repeat_n(b'k', MAX_KEY_LEN - head.len()));
            input.push(b'"');
        }
        input.extend_from_slice(b"]}}\n");
        let file = tmp.path().join("huge.jsonl");
        std::fs::write(&file, &input).unwrap();
        drop(input);
        let out = cli(&dir, &[OsStr::new("apply"), file.as_os_str()], None);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            err.contains("line 2") && err.contains("batch too large"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let snap = ReadOnlyStore::open(&dir, options()).unwrap().snapshot();
        assert_eq!(snap.check("s.g1", b"first").unwrap(), Status::Included);
        assert_eq!(snap.segment("s.g1").unwrap().included, 3);
        assert!(segstore::verify(&dir).unwrap().is_empty());
    }

    #[test]
    fn cli_apply_bad_refs_cursors_and_details() {
        let (tmp, dir) = cli_store();
        let long_version = "v".repeat(1025);
        let cases: [(&str, String, &str); 4] = [
            (
                "updates",
                r#"{"segment": "a\nb", "included": {"add": ["k"]}}"#.to_owned(),
                "/segment",
            ),
            (
                "updates",
                r#"{"segment": "s.g1", "kind": "", "included": {"add": ["k"]}}"#.to_owned(),
                "/kind",
            ),
            (
                "patches",
                format!(
                    r#"{{"segmentId": "s.g1", "version": "{long_version}", "previousVersion": ""}}"#
                ),
                "/version",
            ),
            (
                "patches",
                r#"{"segmentId": "", "version": "1", "previousVersion": ""}"#.to_owned(),
                "/segmentId",
            ),
        ];
        for (format, line, pointer) in cases {
            let file = tmp.path().join("in.jsonl");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            let out = cli(
                &dir,
                &[
                    OsStr::new("apply"),
                    OsStr::new("--format"),
                    OsStr::new(format),
                    file.as_os_str(),
                ],
                None,
            );
            assert_eq!(code(&out), 1, "{line}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains("line 1") && err.contains(pointer), "{err}");
            assert!(err.contains("nothing was applied"), "{err}");
        }
        // 257 tags through `segment set`: refused, the details unchanged.
        let mut argv = args(&["segment", "set", "s.g1"]);
        for i in 0..257 {
            argv.push(OsStr::new("--tag"));
            argv.push(OsStr::new(Box::leak(format!("t{i}").into_boxed_str())));
        }
        let out = cli(&dir, &argv, None);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains("257 tags"), "{}", stderr(&out));
        let snap = ReadOnlyStore::open(&dir, options()).unwrap().snapshot();
        assert!(snap.segment("s.g1").unwrap().details.tags.is_empty());
    }
}

// ------------------------------------------------------------------------------------------
// Names on disk

#[test]
fn a_stray_table_file_with_the_largest_id_does_not_stop_the_writer() {
    // The writer derives the next file id from the largest table name in the directory; a
    // stray file can make that u64::MAX (an overflow panic before the fix).
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::create(tmp.path(), options()).unwrap());
    std::fs::write(tmp.path().join("t-ffffffffffffffff.sstbl"), b"stray").unwrap();
    let store = Store::open(tmp.path(), options()).unwrap();
    assert!(
        !tmp.path().join("t-ffffffffffffffff.sstbl").exists(),
        "orphan removed"
    );
    for segment in ["a.g1", "b.g1"] {
        store
            .replace_list(segment, None, List::Included, [Ok(b"k".to_vec())])
            .unwrap();
        assert_eq!(
            store.snapshot().check(segment, b"k").unwrap(),
            Status::Included
        );
    }
    store.compact().unwrap();
    drop(store);
    assert!(segstore::verify(tmp.path()).unwrap().is_empty());
}
