//! `Residency::AnonymousHugePages`: tables copied into anonymous memory answer exactly as
//! mapped ones, cost their size in anonymous memory, and are checked the same way.

mod scratch;

use segstore::{context_hash, List, Options, ReadOnlyStore, Residency, Status, Store};

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn options(residency: Residency) -> Options {
    Options {
        poll_interval: None,
        residency,
        ..Options::default()
    }
}

fn key(i: u64) -> String {
    context_hash(&format!("user-{i}"))
}

/// A store whose `big.g1` includes the first `n` keys, in a table of its own.
fn store_with_big_list(n: u64) -> tempfile::TempDir {
    let dir = scratch::dir();
    let store = Store::create(dir.path(), Options::default()).unwrap();
    store
        .replace_list(
            "big.g1",
            None,
            List::Included,
            (0..n).map(|i| Ok(key(i).into_bytes())),
        )
        .unwrap();
    drop(store);
    dir
}

#[test]
fn tables_in_anonymous_huge_pages_answer_as_mapped_ones() {
    const N: u64 = 300_000;
    let dir = store_with_big_list(N);
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store
            .replace_list("small.g1", None, List::Excluded, [Ok(key(7).into_bytes())])
            .unwrap();
    }
    let table_bytes = segstore::stats(dir.path()).unwrap().table_bytes;
    assert!(table_bytes > 9 << 20, "{table_bytes}");

    let mapped = ReadOnlyStore::open(dir.path(), options(Residency::PageCache)).unwrap();
    let before = rss_anon_kib();
    let copied = ReadOnlyStore::open(dir.path(), options(Residency::AnonymousHugePages)).unwrap();
    let grown = rss_anon_kib().saturating_sub(before) * 1024;
    // The big table is in anonymous memory now (the small one is read, as always).
    assert!(
        grown >= table_bytes * 9 / 10,
        "RssAnon grew by {grown} B for {table_bytes} B"
    );

    let (m, c) = (mapped.snapshot(), copied.snapshot());
    for i in (0..N + 1000).step_by(37) {
        let k = key(i);
        for segment in ["big.g1", "small.g1"] {
            assert_eq!(
                m.check(segment, k.as_bytes()).unwrap(),
                c.check(segment, k.as_bytes()).unwrap()
            );
        }
    }
    assert_eq!(
        c.check("big.g1", key(5).as_bytes()).unwrap(),
        Status::Included
    );
    assert_eq!(
        c.check("small.g1", key(7).as_bytes()).unwrap(),
        Status::Excluded
    );
    assert_eq!(
        c.export("big.g1", List::Included).unwrap().count() as u64,
        N
    );
    drop((m, c, mapped, copied));

    // The copy is checked as the mapping is: a damaged byte fails the open.
    let table = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 9 << 20)
        .unwrap();
    let mut bytes = std::fs::read(&table).unwrap();
    bytes[4096] ^= 1;
    std::fs::write(&table, &bytes).unwrap();
    let err = ReadOnlyStore::open(dir.path(), options(Residency::AnonymousHugePages)).unwrap_err();
    assert!(
        matches!(err, segstore::Error::ChecksumMismatch { .. }),
        "{err}"
    );
}

/// The VmFlags of each mapping of a file in `dir`, from `/proc/self/smaps`.
#[cfg(target_os = "linux")]
fn vm_flags_of_files_in(dir: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let dir = dir.canonicalize().unwrap().to_string_lossy().into_owned();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(path) = current.take() {
                found.push((path, flags.split_whitespace().map(str::to_owned).collect()));
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            current = line
                .split_whitespace()
                .nth(5)
                .filter(|p| p.starts_with(&dir))
                .map(str::to_owned);
        }
    }
    found
}

/// `Residency::PageCacheHugeFolios` maps tables from the page cache, advised for huge pages
/// (`hg` in the mapping's VmFlags), so the faults of later lookups read 2 MiB folios; the
/// default does not advise them; both answer alike.
#[cfg(target_os = "linux")]
#[test]
fn page_cache_huge_folios_advise_the_table_mappings() {
    const N: u64 = 100_000;
    let dir = store_with_big_list(N);
    let plain = ReadOnlyStore::open(dir.path(), options(Residency::PageCache)).unwrap();
    let plain_flags = vm_flags_of_files_in(dir.path());
    assert!(!plain_flags.is_empty(), "the table is mapped");
    assert!(
        plain_flags
            .iter()
            .all(|(_, f)| !f.contains(&"hg".to_owned())),
        "{plain_flags:?}"
    );
    drop(plain);
    let huge = ReadOnlyStore::open(dir.path(), options(Residency::PageCacheHugeFolios)).unwrap();
    let flags = vm_flags_of_files_in(dir.path());
    assert!(!flags.is_empty(), "the table is mapped");
    assert!(
        flags.iter().all(|(_, f)| f.contains(&"hg".to_owned())),
        "{flags:?}"
    );
    let snap = huge.snapshot();
    for i in (0..N + 1000).step_by(13) {
        let expected = if i < N {
            Status::Included
        } else {
            Status::Unknown
        };
        assert_eq!(snap.check("big.g1", key(i).as_bytes()).unwrap(), expected);
    }
}
