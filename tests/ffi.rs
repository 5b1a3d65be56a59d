//! The C ABI (`segstore::ffi`) as a C caller sees it: results, error reporting for NULL,
//! non-UTF-8 and invalid arguments, thread-local errors, use from many threads at once.
//! (`scripts/test-bindings.sh` also compiles `bindings/c/smoke.c` against the header and the
//! shared library, which `cargo test` does not build.)

mod damaged_store;

use segstore::ffi::{
    segstore_check, segstore_close, segstore_get_membership, segstore_get_metadata,
    segstore_last_error, segstore_membership_free, segstore_open_read_only,
    segstore_open_read_only_flags, SegstoreMembership, SegstoreMetadata, SegstoreReader,
    SEGSTORE_ERROR, SEGSTORE_EXCLUDED, SEGSTORE_INCLUDED, SEGSTORE_OK,
    SEGSTORE_OPEN_VERIFY_ON_READ, SEGSTORE_UNKNOWN,
};
use segstore::{context_hash, Batch, List, Options, Store};
use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::time::{Duration, Instant};

/// The message `segstore_last_error` holds on this thread.
fn last_error() -> Option<String> {
    let ptr = segstore_last_error();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null result is a NUL-terminated string valid until the next call.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn c(text: &str) -> CString {
    CString::new(text).unwrap()
}

/// An open handle, closed on drop.
struct Handle(*mut SegstoreReader);

// SAFETY: the C ABI promises a handle may be used from any thread at once.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Handle {
    fn open(dir: &Path) -> Handle {
        let path = c(dir.to_str().unwrap());
        // SAFETY: a NUL-terminated path.
        let ptr = unsafe { segstore_open_read_only(path.as_ptr()) };
        assert!(!ptr.is_null(), "open failed: {:?}", last_error());
        Handle(ptr)
    }

    /// `(segment, included)` pairs, through the C structs.
    fn membership(&self, hash: &str) -> Vec<(String, bool)> {
        let key = c(hash);
        // SAFETY: a live handle and a NUL-terminated key.
        let m = unsafe { segstore_get_membership(self.0, key.as_ptr()) };
        assert!(!m.is_null(), "membership failed: {:?}", last_error());
        // SAFETY: a result not yet freed; freed once below.
        let pairs = unsafe { read_membership(m) };
        // SAFETY: as above.
        unsafe { segstore_membership_free(m) };
        pairs
    }

    fn check(&self, segment: &str, hash: &str) -> i32 {
        let (segment, key) = (c(segment), c(hash));
        // SAFETY: a live handle and NUL-terminated strings.
        unsafe { segstore_check(self.0, segment.as_ptr(), key.as_ptr()) }
    }

    fn metadata(&self) -> SegstoreMetadata {
        let mut out = SegstoreMetadata::default();
        // SAFETY: a live handle and a writable struct.
        let rc = unsafe { segstore_get_metadata(self.0, &mut out) };
        assert_eq!(rc, SEGSTORE_OK, "{:?}", last_error());
        out
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is live and closed once, here.
        unsafe { segstore_close(self.0) };
    }
}

/// # Safety
/// `m` is a membership not yet freed.
unsafe fn read_membership(m: *const SegstoreMembership) -> Vec<(String, bool)> {
    // SAFETY: promised by the caller.
    let head = unsafe { &*m };
    if head.len == 0 {
        assert!(head.entries.is_null());
        return Vec::new();
    }
    // SAFETY: `entries` points to `len` entries owned by the membership.
    let entries = unsafe { std::slice::from_raw_parts(head.entries, head.len) };
    entries
        .iter()
        .map(|e| {
            // SAFETY: each segment is a NUL-terminated string owned by the membership.
            let s = unsafe { CStr::from_ptr(e.segment) };
            (s.to_str().unwrap().to_owned(), e.included)
        })
        .collect()
}

fn writer(dir: &Path) -> Store {
    Store::create(dir, Options::default()).unwrap()
}

/// Waits (up to 5 s) for the handle's poll to reach a state `ready` accepts.
fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(Instant::now() < deadline, "never saw: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn membership_and_check_answer_as_the_store_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = writer(dir.path());
    let (u1, u2, u3, u4) = (
        context_hash("user1"),
        context_hash("user2"),
        context_hash("user3"),
        context_hash("user4"),
    );
    store
        .write(
            Batch::new()
                .add("beta.g1", List::Included, u1.clone())
                .add("beta.g1", List::Excluded, u2.clone())
                .add("beta.g1", List::Included, u3.clone())
                .add("beta.g1", List::Excluded, u3.clone())
                .add("alpha.g2", List::Excluded, u1.clone()),
        )
        .unwrap();
    let handle = Handle::open(dir.path());

    assert_eq!(
        handle.membership(&u1),
        vec![("alpha.g2".to_owned(), false), ("beta.g1".to_owned(), true)]
    );
    assert_eq!(handle.membership(&u2), vec![("beta.g1".to_owned(), false)]);
    assert_eq!(handle.membership(&u3), vec![("beta.g1".to_owned(), true)]);
    assert_eq!(handle.membership(&u4), vec![]);
    assert_eq!(last_error(), None);

    assert_eq!(handle.check("beta.g1", &u1), SEGSTORE_INCLUDED);
    assert_eq!(handle.check("beta.g1", &u2), SEGSTORE_EXCLUDED);
    assert_eq!(handle.check("beta.g1", &u3), SEGSTORE_INCLUDED);
    assert_eq!(handle.check("beta.g1", &u4), SEGSTORE_UNKNOWN);
    assert_eq!(handle.check("no-such.g1", &u1), SEGSTORE_UNKNOWN);
}

#[test]
fn a_membership_outlives_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = writer(dir.path());
    let hash = context_hash("user1");
    store
        .write(Batch::new().add("beta.g1", List::Included, hash.clone()))
        .unwrap();
    let handle = Handle::open(dir.path());
    let key = c(&hash);
    // SAFETY: a live handle and a NUL-terminated key.
    let m = unsafe { segstore_get_membership(handle.0, key.as_ptr()) };
    drop(handle);
    drop(store);
    // SAFETY: the membership is not yet freed; it owns its strings.
    assert_eq!(
        unsafe { read_membership(m) },
        vec![("beta.g1".to_owned(), true)]
    );
    // SAFETY: freed once.
    unsafe { segstore_membership_free(m) };
}

#[test]
fn metadata_reports_never_synced_then_the_sync_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = writer(dir.path());
    let handle = Handle::open(dir.path());
    assert_eq!(
        handle.metadata(),
        SegstoreMetadata {
            has_synchronized_on: false,
            synchronized_on: 0
        }
    );
    store.mark_synced(1_700_000_000_123).unwrap();
    eventually("the sync time", || handle.metadata().has_synchronized_on);
    assert_eq!(handle.metadata().synchronized_on, 1_700_000_000_123);
}

#[test]
fn the_handle_follows_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = writer(dir.path());
    let handle = Handle::open(dir.path());
    let hash = context_hash("late");
    assert_eq!(handle.check("beta.g1", &hash), SEGSTORE_UNKNOWN);
    store
        .write(Batch::new().add("beta.g1", List::Included, hash.clone()))
        .unwrap();
    eventually("the new key", || {
        handle.check("beta.g1", &hash) == SEGSTORE_INCLUDED
    });
    store.compact().unwrap();
    store
        .write(Batch::new().remove("beta.g1", List::Included, hash.clone()))
        .unwrap();
    eventually("the removal after a compaction", || {
        handle.check("beta.g1", &hash) == SEGSTORE_UNKNOWN
    });
}

#[test]
fn open_reports_a_missing_store_and_bad_paths() {
    let dir = tempfile::tempdir().unwrap();
    let missing = c(dir.path().join("nothing-here").to_str().unwrap());
    // SAFETY: a NUL-terminated path.
    assert!(unsafe { segstore_open_read_only(missing.as_ptr()) }.is_null());
    let message = last_error().unwrap();
    assert!(message.contains("nothing-here"), "{message}");

    // SAFETY: NULL is allowed and reported.
    assert!(unsafe { segstore_open_read_only(std::ptr::null()) }.is_null());
    assert_eq!(last_error().as_deref(), Some("dir is NULL"));

    let not_utf8 = CString::new(vec![b'/', 0xff, 0xfe]).unwrap();
    // SAFETY: a NUL-terminated (non-UTF-8) string.
    assert!(unsafe { segstore_open_read_only(not_utf8.as_ptr()) }.is_null());
    assert!(last_error().unwrap().contains("dir is not valid UTF-8"));
}

#[test]
fn null_and_invalid_arguments_are_errors_and_success_clears_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let _store = writer(dir.path());
    let handle = Handle::open(dir.path());
    let hash = c(&context_hash("user1"));
    let segment = c("beta.g1");
    let empty = c("");
    let not_utf8 = CString::new(vec![0xc3, 0x28]).unwrap();
    let too_long = c(&"k".repeat(segstore::MAX_KEY_LEN + 1));
    let null: *const c_char = std::ptr::null();

    // SAFETY (every call below): pointers are NULL or NUL-terminated strings, and the handle
    // is NULL or live.
    unsafe {
        assert!(segstore_get_membership(std::ptr::null(), hash.as_ptr()).is_null());
        assert_eq!(last_error().as_deref(), Some("reader is NULL"));
        assert!(segstore_get_membership(handle.0, null).is_null());
        assert_eq!(last_error().as_deref(), Some("context_hash is NULL"));
        assert!(segstore_get_membership(handle.0, not_utf8.as_ptr()).is_null());
        assert!(last_error().unwrap().contains("not valid UTF-8"));
        assert!(segstore_get_membership(handle.0, empty.as_ptr()).is_null());
        assert!(last_error().unwrap().contains("invalid key"));
        assert!(segstore_get_membership(handle.0, too_long.as_ptr()).is_null());
        assert!(last_error().unwrap().contains("invalid key"));

        assert_eq!(
            segstore_check(std::ptr::null(), segment.as_ptr(), hash.as_ptr()),
            SEGSTORE_ERROR
        );
        assert_eq!(last_error().as_deref(), Some("reader is NULL"));
        assert_eq!(
            segstore_check(handle.0, null, hash.as_ptr()),
            SEGSTORE_ERROR
        );
        assert_eq!(last_error().as_deref(), Some("segment is NULL"));
        assert_eq!(
            segstore_check(handle.0, not_utf8.as_ptr(), hash.as_ptr()),
            SEGSTORE_ERROR
        );
        assert!(last_error().unwrap().contains("segment is not valid UTF-8"));
        assert_eq!(
            segstore_check(handle.0, segment.as_ptr(), null),
            SEGSTORE_ERROR
        );
        assert_eq!(last_error().as_deref(), Some("key is NULL"));
        assert_eq!(
            segstore_check(handle.0, segment.as_ptr(), empty.as_ptr()),
            SEGSTORE_ERROR
        );
        assert!(last_error().unwrap().starts_with("key: invalid key"));

        let mut meta = SegstoreMetadata::default();
        assert_eq!(
            segstore_get_metadata(std::ptr::null(), &mut meta),
            SEGSTORE_ERROR
        );
        assert_eq!(last_error().as_deref(), Some("reader is NULL"));
        assert_eq!(
            segstore_get_metadata(handle.0, std::ptr::null_mut()),
            SEGSTORE_ERROR
        );
        assert_eq!(last_error().as_deref(), Some("out is NULL"));

        // A successful call clears the message.
        assert_eq!(
            segstore_check(handle.0, segment.as_ptr(), hash.as_ptr()),
            SEGSTORE_UNKNOWN
        );
        assert_eq!(last_error(), None);

        // Freeing and closing NULL are no-ops.
        segstore_membership_free(std::ptr::null_mut());
        segstore_close(std::ptr::null_mut());
        assert_eq!(last_error(), None);
    }
}

#[test]
fn errors_are_per_thread_and_one_handle_serves_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = writer(dir.path());
    let keys: Vec<String> = (0..200).map(|i| context_hash(&format!("u{i}"))).collect();
    let mut batch = Batch::new();
    for (i, key) in keys.iter().enumerate() {
        batch = batch.add(&format!("s{}.g1", i % 4), List::Included, key.clone());
    }
    store.write(batch).unwrap();
    let handle = Handle::open(dir.path());

    // SAFETY: NULL is reported as an error.
    assert!(unsafe { segstore_get_membership(handle.0, std::ptr::null()) }.is_null());
    assert_eq!(last_error().as_deref(), Some("context_hash is NULL"));

    std::thread::scope(|scope| {
        for t in 0..4 {
            let (handle, keys, store) = (&handle, &keys, &store);
            scope.spawn(move || {
                assert_eq!(last_error(), None, "another thread's error leaked here");
                for round in 0..50 {
                    for (i, key) in keys.iter().enumerate() {
                        let expected = vec![(format!("s{}.g1", i % 4), true)];
                        assert_eq!(handle.membership(key), expected);
                    }
                    if t == 0 && round % 10 == 0 {
                        store.mark_synced(round).unwrap();
                    }
                }
            });
        }
    });
    // This thread's error is still its own.
    assert_eq!(last_error().as_deref(), Some("context_hash is NULL"));
}

/// `SEGSTORE_OPEN_VERIFY_ON_READ`: a damaged table no longer stops the open; `segstore_check`
/// answers the keys of intact blocks and returns `SEGSTORE_ERROR` (with the reason) for the
/// keys of the damaged block, and `segstore_get_membership` NULL. Unknown flag bits fail.
#[test]
fn verify_on_read_fails_only_the_lookups_that_read_damage() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = damaged_store::create(dir.path());

    let path = c(dir.path().to_str().unwrap());
    // SAFETY: a NUL-terminated path.
    assert!(unsafe { segstore_open_read_only(path.as_ptr()) }.is_null());
    assert!(last_error().unwrap().contains("checksum"));
    // SAFETY: as above.
    assert!(unsafe { segstore_open_read_only_flags(path.as_ptr(), 2) }.is_null());
    assert!(last_error().unwrap().contains("unknown flags"));
    // SAFETY: as above.
    let ptr = unsafe { segstore_open_read_only_flags(path.as_ptr(), SEGSTORE_OPEN_VERIFY_ON_READ) };
    assert!(!ptr.is_null(), "{:?}", last_error());
    let handle = Handle(ptr);
    let (mut answered, mut failed) = (0, 0);
    for h in &hashes {
        match handle.check("big.g1", h) {
            SEGSTORE_INCLUDED => answered += 1,
            SEGSTORE_ERROR => {
                assert!(last_error()
                    .unwrap()
                    .contains("does not match its checksum"));
                let key = c(h);
                // SAFETY: a live handle and a NUL-terminated key.
                assert!(unsafe { segstore_get_membership(handle.0, key.as_ptr()) }.is_null());
                failed += 1;
            }
            other => panic!("{h}: {other}"),
        }
    }
    assert!(
        failed > 0 && answered > failed,
        "{answered} answered, {failed} failed"
    );
}
