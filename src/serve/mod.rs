//! `segstore serve`: one daemon, the store's single writer, with network front doors over the
//! library's public API. Each door is a thin adapter: the data and its rules stay in
//! [`Store`](crate::Store) and [`Snapshot`](crate::Snapshot).
//!
//! - [`redis`]: the Redis protocol, with LaunchDarkly's big-segment key layout, for every SDK's
//!   Redis big-segment store and for writers that speak Redis (the Relay Proxy).

pub mod redis;

pub mod access;
pub mod http;
pub mod tls;
pub mod workers;
