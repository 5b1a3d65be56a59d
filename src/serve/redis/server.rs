//! What every connection of the Redis endpoint shares: the store, the configuration, the
//! counters, the `WATCH` registry and the writer's turn.

use super::auth::Users;
use super::keyspace::Keyspace;
use super::request::RequestLimits;
use super::view::{Changes, View};
use crate::error::Error;
use crate::store::Store;
use parking_lot::Mutex;
use redis_protocol::bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the Redis endpoint behaves.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The key prefix (LaunchDarkly's default: `launchdarkly`).
    pub prefix: String,
    /// Who may connect (empty: anyone, read-write).
    pub users: Users,
    /// Bounds on one request.
    pub request_limits: RequestLimits,
    /// The most connections at once; one more is answered with an error and closed.
    pub max_clients: usize,
    /// Close a connection idle this long (`None`: never, as Redis's default).
    pub idle_timeout: Option<Duration>,
    /// A request begun must be whole within this long, or the connection is closed (a slow
    /// client cannot hold a connection with a trickle of bytes).
    pub request_timeout: Duration,
    /// The most bytes of commands one `MULTI` may queue.
    pub max_transaction_bytes: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "launchdarkly".to_owned(),
            users: Users::none(),
            request_limits: RequestLimits::default(),
            max_clients: 10_000,
            idle_timeout: None,
            request_timeout: Duration::from_secs(30),
            max_transaction_bytes: 256 << 20,
        }
    }
}

/// The endpoint's counters, as `INFO` shows them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections open now.
    pub connected_clients: AtomicU64,
    /// Connections refused at `max_clients`.
    pub rejected_connections: AtomicU64,
    /// Commands answered.
    pub commands_processed: AtomicU64,
    /// Set lookups answered (`SMEMBERS`, `SISMEMBER`, `SCARD`, `SMISMEMBER` on big-segment keys).
    pub lookups: AtomicU64,
    /// Writes committed to the store (one per `EXEC` or write command that changed it).
    pub writes_committed: AtomicU64,
    /// Key operations in those writes.
    pub key_ops_applied: AtomicU64,
    /// `EXEC`s answered nil because a watched key changed.
    pub watch_conflicts: AtomicU64,
    /// Writes the store refused or failed.
    pub write_errors: AtomicU64,
    /// Connections closed for a protocol error.
    pub protocol_errors: AtomicU64,
    /// Connections closed by the idle or request timeout.
    pub timed_out: AtomicU64,
    /// Authentication failures.
    pub auth_failures: AtomicU64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One connection's `WATCH` state: set when a key it watches is modified.
#[derive(Debug, Default)]
pub struct WatchFlag {
    dirty: AtomicBool,
}

impl WatchFlag {
    /// True if a watched key changed since the `WATCH`.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Clears the flag (after `UNWATCH`, `EXEC` or `DISCARD`).
    pub fn clear(&self) {
        self.dirty.store(false, Ordering::Release);
    }
}

/// The writer's turn. Holding it, a connection is the only one changing the keyspace; `closed`
/// is set at shutdown, after the write in flight.
#[derive(Debug, Default)]
pub struct WriterTurn {
    closed: bool,
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// The server is shutting down; nothing was written.
    ShuttingDown,
    /// The store refused or failed the write; nothing of it applies.
    Store(Error),
}

/// The state shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The store (this process is its writer).
    pub store: Arc<Store>,
    /// The key layout.
    pub keys: Keyspace,
    /// The configuration.
    pub config: RedisConfig,
    /// Counters.
    pub stats: Stats,
    /// When the endpoint started.
    pub started: Instant,
    /// This server's run id, as `INFO` reports it.
    pub run_id: String,
    next_client_id: AtomicU64,
    turn: tokio::sync::Mutex<WriterTurn>,
    lock_value: Mutex<Option<Bytes>>,
    /// True while the cursor key exists holding `""` (set over Redis since this server
    /// started): the store keeps an empty cursor as none, and a Redis writer may tell the two
    /// apart.
    empty_cursor: AtomicBool,
    watches: Mutex<HashMap<Bytes, Vec<Arc<WatchFlag>>>>,
}

impl Shared {
    /// The shared state of an endpoint over `store`.
    pub fn new(store: Arc<Store>, config: RedisConfig) -> Shared {
        let started = Instant::now();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let run_id = format!(
            "{:032x}{:08x}",
            xxhash_rust::xxh3::xxh3_128(&seed.to_le_bytes()),
            std::process::id()
        );
        Shared {
            keys: Keyspace::new(config.prefix.clone()),
            store,
            config,
            stats: Stats::default(),
            started,
            run_id,
            next_client_id: AtomicU64::new(1),
            turn: tokio::sync::Mutex::new(WriterTurn::default()),
            lock_value: Mutex::new(None),
            empty_cursor: AtomicBool::new(false),
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// A new connection's id.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A view of the current state, for reads: never waits for a write.
    pub fn read_view(&self) -> View {
        View::new(
            self.store.snapshot(),
            self.lock_value.lock().clone(),
            self.empty_cursor.load(Ordering::Acquire),
        )
    }

    /// Registers `flag` as watching `keys`. Taken in the writer's turn, so a write either
    /// finished before the `WATCH` or marks it.
    pub async fn watch(&self, keys: &[Bytes], flag: &Arc<WatchFlag>) {
        let _turn = self.turn.lock().await;
        let mut watches = self.watches.lock();
        for key in keys {
            let watchers = watches.entry(key.clone()).or_default();
            if !watchers.iter().any(|w| Arc::ptr_eq(w, flag)) {
                watchers.push(flag.clone());
            }
        }
    }

    /// Removes `flag` from the registry for `keys`.
    pub fn unwatch(&self, keys: &[Bytes], flag: &Arc<WatchFlag>) {
        if keys.is_empty() {
            return;
        }
        let mut watches = self.watches.lock();
        for key in keys {
            if let Some(watchers) = watches.get_mut(key) {
                watchers.retain(|w| !Arc::ptr_eq(w, flag));
                if watchers.is_empty() {
                    watches.remove(key);
                }
            }
        }
        flag.clear();
    }

    /// Runs `work` in the writer's turn against a view of the latest state, then commits the
    /// view's changes durably before returning: `work`'s result is released only once its
    /// writes are on disk. `abort` is asked first, in the turn (a `WATCH` conflict); if it
    /// says so, nothing runs and `Ok(None)` is returned.
    pub async fn commit<T: Send + 'static>(
        &self,
        abort: impl FnOnce() -> bool,
        work: impl FnOnce(&mut View) -> T + Send + 'static,
    ) -> Result<Option<T>, CommitError> {
        let turn = self.turn.lock().await;
        if turn.closed {
            return Err(CommitError::ShuttingDown);
        }
        if abort() {
            return Ok(None);
        }
        // The transaction's commands and its write run off the connection's worker, so a
        // large EXEC does not hold up the other connections that worker serves.
        let view = self.read_view();
        let store = self.store.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let mut view = view;
            let result = work(&mut view);
            let mut changes = view.into_changes();
            let written = changes.batch.take().map(|batch| {
                let ops = batch.op_count() as u64;
                store.write(batch).map(|_| ops)
            });
            (result, changes, written)
        })
        .await
        .map_err(|e| {
            CommitError::Store(Error::io(
                self.store.dir(),
                std::io::Error::other(format!("the write task failed: {e}")),
            ))
        })?;
        let (
            result,
            Changes {
                lock,
                empty_cursor,
                touched,
                ..
            },
            written,
        ) = ran;
        match written {
            Some(Err(e)) => {
                Stats::bump(&self.stats.write_errors);
                return Err(CommitError::Store(e));
            }
            Some(Ok(ops)) => {
                Stats::bump(&self.stats.writes_committed);
                self.stats.key_ops_applied.fetch_add(ops, Ordering::Relaxed);
            }
            None => {}
        }
        if let Some(value) = lock {
            *self.lock_value.lock() = value;
        }
        if let Some(exists) = empty_cursor {
            self.empty_cursor.store(exists, Ordering::Release);
        }
        if !touched.is_empty() {
            let watches = self.watches.lock();
            for key in &touched {
                for flag in watches.get(key).into_iter().flatten() {
                    flag.dirty.store(true, Ordering::Release);
                }
            }
        }
        drop(turn);
        Ok(Some(result))
    }

    /// Waits for the write in flight, then refuses every later one.
    pub async fn close_writes(&self) {
        self.turn.lock().await.closed = true;
    }

    /// Connections watching any key (for `INFO`).
    pub fn watched_keys(&self) -> usize {
        self.watches.lock().len()
    }
}
