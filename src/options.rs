//! Options for opening a store.

use crate::io::{FaultInjector, Io};
use crate::table::{Residency, Verification};
use std::sync::Arc;
use std::time::Duration;

/// How a store is opened. `Options::default()` is the safe choice: fsync per write, tables
/// verified by checksum when first mapped, automatic compaction on.
#[derive(Debug, Clone)]
pub struct Options {
    /// fsync the log before a write returns (default `true`). With `false` a write is durable
    /// only at the next synced write, compaction or close; a crash may lose recent writes but
    /// never leaves a half write.
    pub sync: bool,
    /// How tables are checked when first mapped (default [`Verification::Checksum`], which
    /// reads each table file once; [`Verification::Structure`] checks each 16 KiB block on a
    /// lookup's first touch instead, so lookups may then fail on corrupt bytes).
    pub verification: Verification,
    /// Where this process keeps table files' bytes (default [`Residency::PageCache`]:
    /// mapped, shared, no anonymous memory). [`Residency::PageCacheHugeFolios`] advises the
    /// mappings for huge pages, so pages read back after reclaim come in 2 MiB folios (a
    /// cold first touch reads 2 MiB). [`Residency::AnonymousHugePages`] copies each table
    /// into huge-page-advised anonymous memory at open, so lookups keep 2 MiB TLB entries
    /// whatever the page cache does, at the cost of the tables' size in RSS.
    pub residency: Residency,
    /// Compact in a background thread when the policy says so (default `true`; writers only):
    /// when the log outgrows `compact_min_log_bytes` and `compact_log_ratio`; when 16 lists
    /// changed since the membership index was built (or, with no index yet, 16 bulk replaces
    /// wrote hashed tables), so `membership` is back to one index probe; and when 1,024 small
    /// bulk-replace files accumulated, which compaction packs (format-spec §5.9). After each
    /// compaction the compactor rests as long as it took, so it uses at most about half of a
    /// core.
    pub auto_compact: bool,
    /// Compact once the log holds at least this many bytes... (default 64 MiB)
    pub compact_min_log_bytes: u64,
    /// ...and at least this fraction of the tables' bytes (default 0.25).
    pub compact_log_ratio: f64,
    /// Memory for sorting keys of a bulk replace before spilling to disk (default 256 MiB).
    pub sort_memory_budget: usize,
    /// How often a read-only handle looks for new writes (default 50 ms). `None` turns the
    /// background poll off; call `refresh` yourself.
    pub poll_interval: Option<Duration>,
    /// Build the membership index at compaction only when at least this many lists are held
    /// in hashed tables (default 8). Below it `membership` probes each list (~0.1–0.5 µs
    /// apiece), about what the index's probe and its confirmation cost (the index takes 2–5
    /// bytes per (key, list) pair, format-spec §5.8.1).
    pub membership_index_min_lists: usize,
    /// Let a writer repair damage by dropping data (default `false`): today one case, a live
    /// log whose last record is whole but fails its checksum (a flipped bit, not a torn write).
    /// Without it the writer refuses to open such a store with [`crate::Error::Corrupt`]; with
    /// it the writer truncates the log before that record, losing the write it held. Readers
    /// and `verify` never repair.
    pub repair: bool,
    /// A hook that can make file operations fail, for fault-injection tests (default none).
    pub fault_injector: Option<Arc<dyn FaultInjector>>,
}

impl Options {
    /// The file-operation layer these options ask for.
    pub(crate) fn io(&self) -> Io {
        match &self.fault_injector {
            Some(injector) => Io::with_injector(injector.clone()),
            None => Io::default(),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: true,
            verification: Verification::Checksum,
            residency: Residency::PageCache,
            auto_compact: true,
            compact_min_log_bytes: 64 << 20,
            compact_log_ratio: 0.25,
            sort_memory_budget: 256 << 20,
            poll_interval: Some(Duration::from_millis(50)),
            membership_index_min_lists: 8,
            repair: false,
            fault_injector: None,
        }
    }
}
