//! The crate's error type.
//!
//! Every failure that a caller can act on has its own variant with the fields that say how to
//! act on it: which file, which record, what was expected and what was found.

use std::path::PathBuf;

/// A specialised `Result` for segstore operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. `path` names the file or directory it was about.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another writer holds the store's lock.
    #[error("store {path} is locked by another writer")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// `create` found a store already there.
    #[error("a store already exists at {path}")]
    AlreadyExists {
        /// The store directory.
        path: PathBuf,
    },
    /// `open` found no store.
    #[error("no store at {path} (no MANIFEST file)")]
    NotFound {
        /// The store directory.
        path: PathBuf,
    },
    /// Bytes on disk are not what the format says they must be.
    #[error("corrupt file {path}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it, and where (byte offset, record number).
        detail: String,
    },
    /// A checksum did not match.
    #[error("checksum mismatch in {path}: expected {expected:#x}, found {found:#x}")]
    ChecksumMismatch {
        /// The damaged file.
        path: PathBuf,
        /// The checksum recorded for it.
        expected: u64,
        /// The checksum of the bytes present.
        found: u64,
    },
    /// A file the store refers to is missing.
    #[error("missing file {path}, referenced by {referenced_by}")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
        /// The file that names it.
        referenced_by: String,
    },
    /// A path where the store keeps a file (MANIFEST, a log, a table, LOCK) holds something
    /// other than a regular file: a FIFO, socket, device or directory. Reported at once; the
    /// store never blocks on such a file.
    #[error("{path} is a {file_type}, not a regular file")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is: `"FIFO"`, `"socket"`, `"character device"`, ...
        file_type: &'static str,
    },
    /// The writer lost its lock: the `LOCK` file it holds was deleted or replaced while it
    /// ran, so another writer may have opened the store. The writer stops: it writes nothing
    /// more, and every later mutating call fails the same way. Reopen the store (after making
    /// sure no other writer runs).
    #[error("lost the writer lock: {path} was deleted or replaced while this writer held it; nothing was written")]
    LockLost {
        /// The lock file.
        path: PathBuf,
    },
    /// A file was written by a newer (or unknown) format version.
    #[error("{path} has format version {found}; this build reads up to {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A file belongs to another store (its store id differs from the manifest's).
    #[error("{path} belongs to another store")]
    ForeignFile {
        /// The file.
        path: PathBuf,
    },
    /// A key is empty or longer than [`crate::MAX_KEY_LEN`].
    #[error("invalid key ({len} bytes): keys are 1..=4096 bytes")]
    InvalidKey {
        /// The length of the rejected key.
        len: usize,
    },
    /// A segment ref, context kind or detail string is not acceptable.
    #[error("invalid {what}: {detail}")]
    InvalidArgument {
        /// What was being checked (e.g. "segment ref").
        what: &'static str,
        /// Why it was rejected.
        detail: String,
    },
    /// The segment does not exist.
    #[error("no segment {0:?}")]
    UnknownSegment(String),
    /// `create_segment` for a ref that already exists.
    #[error("segment {0:?} already exists")]
    SegmentExists(String),
    /// A cursor-guarded write found another cursor.
    #[error("cursor mismatch: the batch expects previous version {expected:?}, the store is at {found:?}")]
    CursorMismatch {
        /// The `previousVersion` the batch required.
        expected: String,
        /// The cursor stored.
        found: String,
    },
    /// A batch is larger than one log record may be.
    #[error("batch too large: {size} bytes encoded, the limit is {limit}")]
    BatchTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit ([`crate::MAX_RECORD_LEN`]).
        limit: usize,
    },
    /// An earlier write failed in a way that leaves its durability unknown (for example a
    /// failed fsync). The writer refuses further writes; reopen the store.
    #[error("the writer failed earlier ({0}); reopen the store to continue")]
    PreviousIo(String),
    /// The handle is read-only.
    #[error("this handle is read-only")]
    ReadOnly,
}

impl Error {
    /// Wraps an I/O error with the path it concerns. An error saying the path is not a
    /// regular file becomes [`Error::NotRegularFile`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let not_regular = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::io::NotRegularFile>())
            .copied();
        match not_regular {
            Some(found) => Error::NotRegularFile {
                path: path.into(),
                file_type: found.file_type,
            },
            None => Error::Io {
                path: path.into(),
                source,
            },
        }
    }

    /// A corruption error for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
