//! The C ABI: a read-only handle on a store, for SDKs written in other languages.
//!
//! The header is `include/segstore.h`; a test keeps it in step with this module. Build the
//! shared library with `cargo build` (`target/{debug,release}/libsegstore.so`).
//!
//! Conventions every function follows:
//!
//! - Strings in are NUL-terminated UTF-8. A NULL or non-UTF-8 argument is an error, never
//!   undefined behaviour, and so is an invalid key (empty or over [`crate::MAX_KEY_LEN`] bytes).
//! - A function that fails returns `NULL` or [`SEGSTORE_ERROR`] and leaves a message that
//!   [`segstore_last_error`] returns on the same thread. Every call (other than
//!   `segstore_last_error` itself) clears the previous message first.
//! - No panic crosses the boundary: each entry point catches one and reports it as an error.
//! - A handle may be used from any number of threads at once. It must not be used after
//!   [`segstore_close`], and must be closed exactly once.
//!
//! ```c
//! segstore_reader *r = segstore_open_read_only("/var/lib/segstore");
//! if (!r) { fprintf(stderr, "%s\n", segstore_last_error()); return 1; }
//! segstore_membership *m = segstore_get_membership(r, "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0=");
//! for (size_t i = 0; m && i < m->len; i++)
//!     printf("%s %s\n", m->entries[i].segment, m->entries[i].included ? "true" : "false");
//! segstore_membership_free(m);
//! segstore_close(r);
//! ```

use crate::key::validate_key;
use crate::{Membership, Options, ReadOnlyStore, Status, Verification};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Returned by a function that succeeded.
pub const SEGSTORE_OK: i32 = 0;
/// Returned by a function that failed; [`segstore_last_error`] says why.
pub const SEGSTORE_ERROR: i32 = -1;
/// [`segstore_check`]: neither list of the segment holds the key, or there is no such segment.
pub const SEGSTORE_UNKNOWN: i32 = 0;
/// [`segstore_check`]: the key is in the segment's included list.
pub const SEGSTORE_INCLUDED: i32 = 1;
/// [`segstore_check`]: the key is in the segment's excluded list only.
pub const SEGSTORE_EXCLUDED: i32 = 2;
/// [`segstore_open_read_only_flags`]: open without reading every table whole; check each
/// 16 KiB block against its sum the first time a lookup reads it (`Verification::Structure`).
/// A large store then opens in milliseconds; a lookup that reads a damaged block fails
/// (`SEGSTORE_ERROR` / NULL) instead of the open.
pub const SEGSTORE_OPEN_VERIFY_ON_READ: u32 = 1;

/// An open read-only handle (opaque to C). It follows the writer with the default poll
/// (every 50 ms).
#[derive(Debug)]
pub struct SegstoreReader {
    store: ReadOnlyStore,
}

/// The sync metadata, as [`segstore_get_metadata`] fills it in.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegstoreMetadata {
    /// False if the store was never synced (which counts as stale).
    pub has_synchronized_on: bool,
    /// Unix ms of the last successful sync; 0 when `has_synchronized_on` is false.
    pub synchronized_on: u64,
}

/// One segment that mentions the key.
#[repr(C)]
#[derive(Debug)]
pub struct SegstoreMembershipEntry {
    /// The segment ref, NUL-terminated UTF-8, owned by the membership that holds the entry.
    pub segment: *const c_char,
    /// True if the key is included (included beats excluded); false if excluded only.
    pub included: bool,
}

/// The segments that mention one key, in ref order. Free it with [`segstore_membership_free`].
#[repr(C)]
#[derive(Debug)]
pub struct SegstoreMembership {
    /// Number of entries (0 for a key no segment mentions).
    pub len: usize,
    /// `len` entries; NULL when `len` is 0.
    pub entries: *const SegstoreMembershipEntry,
}

/// What a [`SegstoreMembership`] pointer really points at: the public head, then the storage
/// its pointers refer to. `repr(C)` with the head first makes a pointer to this a valid
/// pointer to the head, and back.
#[repr(C)]
struct OwnedMembership {
    head: SegstoreMembership,
    /// The array `head.entries` points into (never resized after the head is built).
    entries: Vec<SegstoreMembershipEntry>,
    /// The segment refs, each followed by a NUL; the entries point into it (never resized
    /// after the entries are built).
    names: Vec<u8>,
}

impl OwnedMembership {
    fn build(membership: &Membership) -> Box<OwnedMembership> {
        let name_bytes: usize = membership.iter().map(|(s, _)| s.len() + 1).sum();
        let mut names = Vec::with_capacity(name_bytes);
        let mut starts = Vec::with_capacity(membership.len());
        for (segment, included) in membership.iter() {
            starts.push((names.len(), included));
            names.extend_from_slice(segment.as_bytes());
            names.push(0);
        }
        let base = names.as_ptr();
        let entries: Vec<SegstoreMembershipEntry> = starts
            .into_iter()
            .map(|(start, included)| SegstoreMembershipEntry {
                // `start` is below `names.len()`, so the pointer stays inside the buffer.
                segment: base.wrapping_add(start).cast::<c_char>(),
                included,
            })
            .collect();
        let head = SegstoreMembership {
            len: entries.len(),
            entries: if entries.is_empty() {
                std::ptr::null()
            } else {
                entries.as_ptr()
            },
        };
        // Moving the vectors into the box moves their headers, not their heap buffers, so
        // the pointers taken above stay valid.
        Box::new(OwnedMembership {
            head,
            entries,
            names,
        })
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: String) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // `try_with` fails only while the thread is being torn down; the message is then lost.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(text));
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = None);
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Runs one entry point: clears the last error, catches a panic, and turns an error or a
/// panic into `fallback` plus a last-error message.
fn guard<T>(fallback: T, body: impl FnOnce() -> Result<T, String>) -> T {
    clear_last_error();
    // AssertUnwindSafe: a handle's shared state is an immutable snapshot behind an atomic
    // pointer and a non-poisoning lock, so a panic part-way through leaves nothing torn.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(message)) => {
            set_last_error(message);
            fallback
        }
        Err(payload) => {
            set_last_error(format!("internal error (panic): {}", panic_text(&*payload)));
            fallback
        }
    }
}

/// Reads a string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays alive for `'a`.
unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, String> {
    if ptr.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string alive for 'a.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes
        .to_str()
        .map_err(|e| format!("{what} is not valid UTF-8: {e}"))
}

/// Reads a key argument: a string of 1..=MAX_KEY_LEN bytes.
///
/// # Safety
/// As for [`str_arg`].
unsafe fn key_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, String> {
    // SAFETY: forwarded from the caller.
    let key = unsafe { str_arg(ptr, what) }?;
    validate_key(key.as_bytes()).map_err(|e| format!("{what}: {e}"))?;
    Ok(key)
}

/// Reads the handle argument.
///
/// # Safety
/// `ptr` is NULL or a handle from [`segstore_open_read_only`] not yet closed.
unsafe fn reader_arg<'a>(ptr: *const SegstoreReader) -> Result<&'a SegstoreReader, String> {
    // SAFETY: the caller promises a live handle or NULL; `as_ref` maps NULL to None.
    unsafe { ptr.as_ref() }.ok_or_else(|| "reader is NULL".to_owned())
}

/// Opens the store in directory `dir` read-only. The handle follows the writer (another
/// process, typically) with a background poll every 50 ms.
///
/// Returns NULL on failure (no store there, unreadable or corrupt files, NULL or non-UTF-8
/// `dir`).
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn segstore_open_read_only(dir: *const c_char) -> *mut SegstoreReader {
    // SAFETY: forwarded from the caller.
    unsafe { segstore_open_read_only_flags(dir, 0) }
}

/// As [`segstore_open_read_only`], with `flags`: 0, or [`SEGSTORE_OPEN_VERIFY_ON_READ`].
/// Returns NULL for any other bit.
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn segstore_open_read_only_flags(
    dir: *const c_char,
    flags: u32,
) -> *mut SegstoreReader {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from the caller.
        let dir = unsafe { str_arg(dir, "dir") }?;
        if flags & !SEGSTORE_OPEN_VERIFY_ON_READ != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let verification = if flags & SEGSTORE_OPEN_VERIFY_ON_READ != 0 {
            Verification::Structure
        } else {
            Verification::Checksum
        };
        let options = Options {
            verification,
            ..Options::default()
        };
        let store = ReadOnlyStore::open(dir, options).map_err(|e| e.to_string())?;
        Ok(Box::into_raw(Box::new(SegstoreReader { store })))
    })
}

/// Closes a handle (stopping its poll thread) and frees it. NULL is ignored.
///
/// # Safety
/// `reader` is NULL or a handle from [`segstore_open_read_only`] that no other thread is
/// using and that has not been closed.
#[no_mangle]
pub unsafe extern "C" fn segstore_close(reader: *mut SegstoreReader) {
    guard((), || {
        if !reader.is_null() {
            // SAFETY: the caller hands back ownership of a pointer made by Box::into_raw in
            // segstore_open_read_only, exactly once.
            drop(unsafe { Box::from_raw(reader) });
        }
        Ok(())
    })
}

/// Fills in `out` with the sync metadata.
///
/// Returns [`SEGSTORE_OK`], or [`SEGSTORE_ERROR`] for a NULL argument or when the handle's
/// last attempt to follow the writer failed (it then serves its last good state, which may
/// be out of date; the error clears once following succeeds again).
///
/// # Safety
/// `reader` is NULL or a live handle; `out` is NULL or points to writable memory for one
/// `segstore_metadata`.
#[no_mangle]
pub unsafe extern "C" fn segstore_get_metadata(
    reader: *const SegstoreReader,
    out: *mut SegstoreMetadata,
) -> i32 {
    guard(SEGSTORE_ERROR, || {
        // SAFETY: forwarded from the caller.
        let reader = unsafe { reader_arg(reader) }?;
        if out.is_null() {
            return Err("out is NULL".to_owned());
        }
        if let Some(error) = reader.store.last_error() {
            return Err(format!("the store could not be followed: {error}"));
        }
        let meta = reader.store.snapshot().metadata();
        let value = SegstoreMetadata {
            has_synchronized_on: meta.synchronized_on.is_some(),
            synchronized_on: meta.synchronized_on.unwrap_or(0),
        };
        // SAFETY: non-null, and the caller promises it points to writable memory for one
        // SegstoreMetadata (alignment included, as any C object is).
        unsafe { out.write(value) };
        Ok(SEGSTORE_OK)
    })
}

/// The segments that mention `context_hash` (the key as LaunchDarkly SDKs query: the
/// 44-character base64 context hash), each with included (true) or excluded-only (false).
/// A key no segment mentions gives an empty membership (`len` 0), not an error.
///
/// Returns NULL on failure. Free the result with [`segstore_membership_free`]; it does not
/// depend on the handle and may outlive it.
///
/// # Safety
/// `reader` is NULL or a live handle; `context_hash` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn segstore_get_membership(
    reader: *const SegstoreReader,
    context_hash: *const c_char,
) -> *mut SegstoreMembership {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from the caller.
        let reader = unsafe { reader_arg(reader) }?;
        // SAFETY: forwarded from the caller.
        let key = unsafe { key_arg(context_hash, "context_hash") }?;
        let membership = reader
            .store
            .snapshot()
            .membership(key.as_bytes())
            .map_err(|e| e.to_string())?;
        let owned = OwnedMembership::build(&membership);
        Ok(Box::into_raw(owned).cast::<SegstoreMembership>())
    })
}

/// Frees a membership from [`segstore_get_membership`]. NULL is ignored.
///
/// # Safety
/// `membership` is NULL or a result of [`segstore_get_membership`] not yet freed; nothing
/// reads its entries afterwards.
#[no_mangle]
pub unsafe extern "C" fn segstore_membership_free(membership: *mut SegstoreMembership) {
    guard((), || {
        if !membership.is_null() {
            // SAFETY: the pointer came from Box::into_raw of an OwnedMembership (cast to its
            // repr(C) first field), and the caller hands it back exactly once.
            drop(unsafe { Box::from_raw(membership.cast::<OwnedMembership>()) });
        }
        Ok(())
    })
}

/// Answers "is `key` in `segment`?": [`SEGSTORE_INCLUDED`] (included beats excluded),
/// [`SEGSTORE_EXCLUDED`], [`SEGSTORE_UNKNOWN`] (neither list, or no such segment), or
/// [`SEGSTORE_ERROR`].
///
/// # Safety
/// `reader` is NULL or a live handle; `segment` and `key` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn segstore_check(
    reader: *const SegstoreReader,
    segment: *const c_char,
    key: *const c_char,
) -> i32 {
    guard(SEGSTORE_ERROR, || {
        // SAFETY: forwarded from the caller.
        let reader = unsafe { reader_arg(reader) }?;
        // SAFETY: forwarded from the caller.
        let segment = unsafe { str_arg(segment, "segment") }?;
        // SAFETY: forwarded from the caller.
        let key = unsafe { key_arg(key, "key") }?;
        Ok(
            match reader
                .store
                .snapshot()
                .check(segment, key.as_bytes())
                .map_err(|e| e.to_string())?
            {
                Status::Included => SEGSTORE_INCLUDED,
                Status::Excluded => SEGSTORE_EXCLUDED,
                Status::Unknown => SEGSTORE_UNKNOWN,
            },
        )
    })
}

/// The message of the last failed call on this thread, or NULL if the last call succeeded.
/// The text stays valid until the next segstore call on this thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn segstore_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|slot| {
                slot.borrow()
                    .as_ref()
                    .map_or(std::ptr::null(), |s| s.as_ptr())
            })
            .unwrap_or(std::ptr::null())
    })
    .unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let value = guard(SEGSTORE_ERROR, || -> Result<i32, String> {
            panic!("boom");
        });
        assert_eq!(value, SEGSTORE_ERROR);
        let text = last_error_text().unwrap();
        assert!(text.contains("panic") && text.contains("boom"), "{text}");
        assert_eq!(guard(7, || Ok(7)), 7);
        assert_eq!(last_error_text(), None);
    }

    #[test]
    fn an_error_message_with_a_nul_byte_is_kept() {
        set_last_error("a\0b".to_owned());
        assert_eq!(last_error_text().as_deref(), Some("a\\0b"));
    }

    fn last_error_text() -> Option<String> {
        let ptr = segstore_last_error();
        if ptr.is_null() {
            return None;
        }
        // SAFETY: non-null pointers from segstore_last_error are NUL-terminated and live
        // until the next segstore call on this thread.
        Some(unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned())
    }
}
