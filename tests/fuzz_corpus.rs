//! Replays every fuzz corpus and crash file through the fuzz targets' functions, so that a
//! plain `cargo test` checks them without a fuzzer (see `fuzz/README.md`).
//!
//! `fuzz/corpus/TARGET/` holds the seeds (real files written by the engine, the partner test
//! vectors and the sample input lines); `fuzz/artifacts/TARGET/` holds inputs that once made a
//! target fail, kept as regression inputs. Both are replayed through
//! `segstore::fuzzing::TARGETS`.
//!
//! The seeds are written by the ignored test `write_seed_corpus`:
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`.

use segstore::fuzzing::{store_image_of, write_store_image, TARGETS};
use segstore::ingest::partner::Tool;
use segstore::{context_hash, Batch, Details, List, Options, ReadOnlyStore, Store};
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_crash_file_passes() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let seeds = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "no seed corpus for target {name}");
        let crashes = files_in(&fuzz_dir().join("artifacts").join(name));
        for file in seeds.iter().chain(&crashes) {
            let data = std::fs::read(file).expect("read a corpus file");
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(file.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
    assert!(replayed >= TARGETS.len());
}

#[test]
fn every_target_has_a_fuzz_target_file_and_no_stray_corpus() {
    let names: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    for name in &names {
        let file = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&file).expect("fuzz target file");
        assert!(
            text.contains(&format!("segstore::fuzzing::{name}(data)")),
            "{} does not call segstore::fuzzing::{name}",
            file.display()
        );
    }
    for sub in ["corpus", "artifacts", "fuzz_targets"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(sub)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("dir entry").file_name();
            let name = name.to_string_lossy();
            let name = name.strip_suffix(".rs").unwrap_or(&name);
            assert!(names.contains(name), "fuzz/{sub}/{name} is not a target");
        }
    }
}

#[test]
fn store_seeds_rebuild_sound_stores() {
    // The image format round trip: every store seed, raw or repair form, rebuilds a store
    // that verify finds sound and that opens, so the fuzzer starts from real stores.
    let seeds = files_in(&fuzz_dir().join("corpus").join("store"));
    assert!(seeds.len() >= 2);
    for seed in seeds {
        let tmp = tempfile::tempdir().unwrap();
        let image = std::fs::read(&seed).unwrap();
        write_store_image(&image, tmp.path()).unwrap();
        let problems = segstore::verify(tmp.path()).unwrap();
        assert!(problems.is_empty(), "{}: {problems:?}", seed.display());
        let snap = ReadOnlyStore::open(tmp.path(), options())
            .unwrap()
            .snapshot();
        let name = seed.file_name().unwrap().to_string_lossy();
        if name.starts_with("full") {
            assert_eq!(snap.segments().len(), 4, "{name}");
            assert_eq!(snap.metadata().cursor, "v2");
            assert_eq!(snap.segment("logged.g1").unwrap().included, 6);
        }
        if name.starts_with("log-only") {
            assert_eq!(
                snap.check("fst.g1", b"c").unwrap(),
                segstore::Status::Included
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Seeds

fn options() -> Options {
    Options {
        auto_compact: false,
        poll_interval: None,
        // So the full store's image carries a membership index (its postings file) too.
        membership_index_min_lists: 1,
        ..Options::default()
    }
}

fn hashes(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| context_hash(&format!("{prefix}{i}")).into_bytes())
        .collect()
}

/// A store whose manifest names a hashed and an fst table, and whose log after the compaction
/// holds every kind of entry except a rotate.
fn build_full(dir: &Path) {
    let store = Store::create(dir, options()).unwrap();
    store
        .replace_list(
            "hashed.g1",
            None,
            List::Included,
            hashes("u", 24).into_iter().map(Ok),
        )
        .unwrap();
    let raw: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("org-{i:03}").into_bytes())
        .collect();
    store
        .replace_list(
            "keys.g2",
            Some("org"),
            List::Excluded,
            raw.into_iter().map(Ok),
        )
        .unwrap();
    store
        .write(
            Batch::new()
                .add("hashed.g1", List::Excluded, context_hash("x1"))
                .remove("hashed.g1", List::Included, context_hash("u3"))
                .add("keys.g2", List::Included, "org-100")
                .with_cursor("", "v1")
                .synchronized_on(1_700_000_000_000),
        )
        .unwrap();
    store
        .set_details(
            "hashed.g1",
            Details {
                name: Some("Hashed".into()),
                description: Some("seed".into()),
                tags: vec!["a".into(), "b".into()],
            },
        )
        .unwrap();
    store.compact().unwrap();
    // After the compaction: an overlay on each table, and one entry of each kind.
    store
        .write(
            Batch::new()
                .add("hashed.g1", List::Included, context_hash("new"))
                .remove("hashed.g1", List::Included, context_hash("u5"))
                .remove("keys.g2", List::Excluded, "org-007")
                .with_cursor("v1", "v2"),
        )
        .unwrap();
    store.create_segment("empty", "device").unwrap();
    store.create_segment("gone.g1", "user").unwrap();
    store.delete_segment("gone.g1").unwrap();
    store
        .set_details(
            "keys.g2",
            Details {
                name: Some("Keys".into()),
                ..Details::default()
            },
        )
        .unwrap();
    store
        .replace_list(
            "logged.g1",
            None,
            List::Included,
            hashes("l", 6).into_iter().map(Ok),
        )
        .unwrap();
    store.mark_synced(1_700_000_000_500).unwrap();
}

/// A store that was never compacted: its tables are named by the log only.
fn build_log_only(dir: &Path) {
    let store = Store::create(dir, options()).unwrap();
    store
        .replace_list(
            "fst.g1",
            None,
            List::Included,
            ["a", "ab", "b", "zz"].map(|k| Ok(k.as_bytes().to_vec())),
        )
        .unwrap();
    store
        .write(
            Batch::new()
                .add("fst.g1", List::Included, "c")
                .remove("fst.g1", List::Included, "a")
                .add("other.g1", List::Excluded, "k"),
        )
        .unwrap();
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn u16_chunks(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// The chunks of a store image: flags byte dropped, `u16` lengths.
fn image_chunks(image: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut rest = &image[1..];
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        chunks.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    chunks
}

fn seed_store_files(label: &str, dir: &Path) {
    let raw = store_image_of(dir, false).unwrap();
    let repair = store_image_of(dir, true).unwrap();
    write_seed("store", &format!("{label}-raw"), &raw);
    write_seed("store", &format!("{label}-repair"), &repair);
    let raw_chunks = image_chunks(&raw);
    let repair_chunks = image_chunks(&repair);
    // Chunks: 0 manifest, 1-2 logs, 3 postings, 4.. tables.
    write_seed("manifest", &format!("{label}-file"), &raw_chunks[0]);
    write_seed("manifest", &format!("{label}-payload"), &repair_chunks[0]);
    write_seed("log_records", &format!("{label}-log"), &raw_chunks[1]);
    write_seed("log_framed", &format!("{label}-entries"), &repair_chunks[1]);
    for (i, table) in raw_chunks.iter().skip(4).enumerate() {
        // The checksum the manifest records: the xxh3-64 of the whole file.
        let mut with_sum = xxhash_rust::xxh3::xxh3_64(table).to_le_bytes().to_vec();
        with_sum.extend_from_slice(table);
        write_seed("table", &format!("{label}-{i}"), &with_sum);
        if table[12] == 2 {
            write_seed("table_hashed", &format!("{label}-{i}"), &hashed_body(table));
        }
    }
}

/// `[bucket bits][codes][index]` of a hashed table file, the input form of `table_hashed`.
fn hashed_body(file: &[u8]) -> Vec<u8> {
    let footer = file.len() - 64;
    let field =
        |at: usize| u64::from_le_bytes(file[footer + at..footer + at + 8].try_into().unwrap());
    let (data_off, data_len) = (field(8) as usize, field(16) as usize);
    let (index_off, index_len) = (field(24) as usize, field(32) as usize);
    let mut out = vec![file[footer + 40]];
    out.extend_from_slice(&file[data_off..data_off + data_len]);
    out.extend_from_slice(&file[index_off..index_off + index_len]);
    out
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    build_full(&full);
    seed_store_files("full", &full);
    let log_only = tmp.path().join("log-only");
    build_log_only(&log_only);
    seed_store_files("log-only", &log_only);
    let empty = tmp.path().join("empty");
    drop(Store::create(&empty, options()).unwrap());
    seed_store_files("empty", &empty);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lines = |file: &str| -> Vec<String> {
        std::fs::read_to_string(root.join("samples").join(file))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    for (i, line) in lines("updates.jsonl").iter().enumerate() {
        write_seed("ingest_updates", &format!("sample-{i}"), line.as_bytes());
    }
    for (i, line) in lines("patches.jsonl").iter().enumerate() {
        write_seed("ingest_patches", &format!("sample-{i}"), line.as_bytes());
    }
    for (i, line) in lines("amplitude.jsonl").iter().enumerate() {
        let mut input = vec![0u8]; // Tool::ALL[0] is Amplitude
        input.extend_from_slice(line.as_bytes());
        write_seed("ingest_partner", &format!("sample-amplitude-{i}"), &input);
    }
    let vectors: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/data/partner-sync-examples.json")).unwrap(),
    )
    .unwrap();
    for (i, vector) in vectors.iter().enumerate() {
        let tool_name = vector["tool"].as_str().unwrap();
        let tool = Tool::ALL
            .iter()
            .position(|t| t.display_name() == tool_name)
            .unwrap();
        let mut input = vec![u8::try_from(tool).unwrap()];
        input.extend_from_slice(serde_json::to_string(&vector["body"]).unwrap().as_bytes());
        write_seed("ingest_partner", &format!("vector-{i}"), &input);
    }
    // Framing a few entries by hand: a log of one rotate, and an empty input.
    write_seed("log_framed", "empty", b"");
    write_seed(
        "log_framed",
        "rotate",
        &u16_chunks(&[{
            let mut e = vec![6u8];
            e.extend_from_slice(&2u64.to_le_bytes());
            e
        }]),
    );
}
