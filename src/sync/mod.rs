//! Keeping a store current from LaunchDarkly's big-segment feed: the job a Relay Proxy does
//! for Redis or DynamoDB, done for a local store directory.
//!
//! [`run`] catches up by polling `GET {base}/sdk/big-segments/revisions?after={cursor}` until a
//! page is empty, then listens to the SSE stream `GET {stream}/big-segments`, polling once more
//! after connecting to close the gap. Every patch obeys the cursor rule (see [`chain`]): a stream
//! event is one atomic batch with its cursor advance and `synchronized_on`; a mismatch applies
//! nothing of the event, drops the stream and starts over from the stored cursor. A heartbeat
//! sets `synchronized_on` while the stream is healthy. Failures back off with jitter (see
//! [`SyncConfig`]); the loop stops only when asked ([`Stopper::stop`]) or when the store
//! itself fails.
//!
//! # Choice of crates
//!
//! HTTP is [`ureq`] 3 (blocking, rustls with ring and the webpki roots, so no OpenSSL headers
//! are needed) and SSE parsing is [`eventsource_stream`], LaunchDarkly-independent and small
//! (nom + futures-core), driven synchronously over ureq's body reader. The alternatives were
//! weighed as follows:
//! - LaunchDarkly's `eventsource-client` and `reqwest` + `reqwest-eventsource` both bring tokio
//!   and hyper (plus, for the former, its own transport crate and reconnect policy, which would
//!   fight the retry rules this loop must keep). The sync needs one stream and a poll now and
//!   then: an async runtime would dominate the build on a 2-core machine for no gain.
//! - ureq's per-read timeout bounds a silent dead connection (LaunchDarkly's SDKs use 5 min),
//!   which is what a streaming client needs and what a total timeout cannot express.
//!
//! Blocking calls run on helper threads that report over one channel, so the engine can react
//! to a stop request, a heartbeat deadline or a stream event whatever the network is doing. A
//! thread left reading an abandoned stream exits at its next chunk or read timeout.

pub mod chain;

pub use chain::{applicable_prefix, check_chain, event_batches, BrokenChain};

// The daemon (HTTP, SSE, threads) only with the `sync` feature: the patch rules above are
// all that `apply` and an SDK build need.
#[cfg(feature = "sync")]
mod backoff;
#[cfg(feature = "sync")]
mod daemon;
#[cfg(feature = "sync")]
mod engine;
#[cfg(feature = "sync")]
mod feed;

#[cfg(feature = "sync")]
pub use backoff::BackoffPolicy;
#[cfg(feature = "sync")]
pub use daemon::*;
#[cfg(feature = "sync")]
pub use feed::{POLL_PATH, STREAM_PATH};
