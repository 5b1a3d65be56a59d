//! The cost of the C ABI over the Rust call: `membership` and `check` through
//! `segstore::ffi` beside the same calls on a `ReadOnlyStore`, in the same run, on the same
//! store.
//!
//! `cargo bench --bench ffi`. Two stores: 3 and 100 segments of 1,000 LaunchDarkly context
//! hashes each; the probed key is in three segments (two included, one excluded only), which
//! is what an SDK sees for a typical context. The 3-segment store makes the call itself cheap,
//! so the boundary's own cost shows; the 100-segment store is the SDK-shaped figure.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use segstore::ffi::{
    segstore_check, segstore_close, segstore_get_membership, segstore_membership_free,
    segstore_open_read_only, SegstoreMembershipEntry,
};
use segstore::{context_hash, Batch, List, Options, ReadOnlyStore, Store};
use std::ffi::{CStr, CString};

const KEYS_PER_SEGMENT: usize = 1_000;

fn build_store(dir: &std::path::Path, segments: usize) {
    let store = Store::create(
        dir,
        Options {
            auto_compact: false,
            ..Options::default()
        },
    )
    .unwrap();
    for s in 0..segments {
        let keys =
            (0..KEYS_PER_SEGMENT).map(|i| Ok(context_hash(&format!("user-{s}-{i}")).into_bytes()));
        store
            .replace_list(&format!("segment-{s:03}.g1"), None, List::Included, keys)
            .unwrap();
    }
    let probe = context_hash("probe");
    store
        .write(
            Batch::new()
                .add(&probe_segment(segments, 0), List::Included, probe.clone())
                .add(&probe_segment(segments, 1), List::Included, probe.clone())
                .add(&probe_segment(segments, 2), List::Excluded, probe),
        )
        .unwrap();
    store.compact().unwrap();
}

/// The `i`th (of three) segment holding the probed key.
fn probe_segment(segments: usize, i: usize) -> String {
    format!(
        "segment-{:03}.g1",
        (segments / 10 + i * segments * 4 / 10).min(segments - 1)
    )
}

fn bench_ffi(c: &mut Criterion) {
    for segments in [3, 100] {
        bench_store(c, segments);
    }
}

fn bench_store(c: &mut Criterion, segments: usize) {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), segments);
    let id = |name: &str| BenchmarkId::new(name, format!("{segments} segments"));
    let probe = context_hash("probe");
    let probe_c = CString::new(probe.clone()).unwrap();
    let segment = probe_segment(segments, 1);
    let segment_c = CString::new(segment.clone()).unwrap();

    let reader = ReadOnlyStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        reader
            .snapshot()
            .membership(probe.as_bytes())
            .unwrap()
            .len(),
        3
    );
    let dir_c = CString::new(dir.path().to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let handle = unsafe { segstore_open_read_only(dir_c.as_ptr()) };
    assert!(!handle.is_null());

    let mut group = c.benchmark_group("membership");
    group.bench_function(id("rust"), |b| {
        b.iter(|| {
            let m = reader
                .snapshot()
                .membership(black_box(probe.as_bytes()))
                .unwrap();
            black_box(m.len())
        })
    });
    group.bench_function(id("c_abi"), |b| {
        b.iter(|| {
            // SAFETY: a live handle and a NUL-terminated key; the result is freed once.
            unsafe {
                let m = segstore_get_membership(handle, black_box(probe_c.as_ptr()));
                let len = (*m).len;
                segstore_membership_free(m);
                black_box(len)
            }
        })
    });
    group.bench_function(id("c_abi_walk"), |b| {
        b.iter(|| {
            // SAFETY: as above; the entries are read before the free, and each segment is a
            // NUL-terminated string owned by the membership.
            unsafe {
                let m = segstore_get_membership(handle, black_box(probe_c.as_ptr()));
                let entries: &[SegstoreMembershipEntry] =
                    std::slice::from_raw_parts((*m).entries, (*m).len);
                let mut total = 0usize;
                for e in entries {
                    total += CStr::from_ptr(e.segment).to_bytes().len() + usize::from(e.included);
                }
                segstore_membership_free(m);
                black_box(total)
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("check");
    group.bench_function(id("rust"), |b| {
        b.iter(|| {
            reader
                .snapshot()
                .check(black_box(&segment), black_box(probe.as_bytes()))
                .unwrap()
        })
    });
    group.bench_function(id("c_abi"), |b| {
        b.iter(|| {
            // SAFETY: a live handle and NUL-terminated strings.
            unsafe { segstore_check(handle, black_box(segment_c.as_ptr()), probe_c.as_ptr()) }
        })
    });
    group.finish();

    // SAFETY: the handle is live and no longer used.
    unsafe { segstore_close(handle) };
}

criterion_group!(benches, bench_ffi);
criterion_main!(benches);
