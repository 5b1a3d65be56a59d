//! segstore: an embedded membership store for synced ("big") segments.
#![deny(missing_docs)]

pub mod change;
pub mod error;
pub mod extsort;
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod key;
#[cfg(feature = "serve")]
pub mod serve;
pub mod sync;
pub mod table;

pub use change::{Batch, List, ListChange, Patch, SegmentChange};
pub use error::{Error, Result};
pub use key::{context_hash, validate_key, MAX_KEY_LEN};
pub use keys::{Keys, KeysIter};

mod codec;
mod compact;
mod entry;
mod files;
mod fsutil;
mod index;
pub mod io;
mod keys;
mod log;
mod manifest;
mod options;
mod overlay;
mod reader;
mod recovery;
mod segment_map;
mod snapshot;
mod store;
mod verify;

pub use entry::Details;
pub use options::Options;
pub use reader::ReadOnlyStore;
pub use snapshot::{ListKeys, Membership, Mentions, Metadata, SegmentInfo, Snapshot, Status};
pub use store::{CompactionStats, ReplaceStats, Store};
pub use table::{Residency, TableKind, Verification};
pub use verify::{stats, verify, FileStats, Problem, StoreStats};
