//! The Redis-protocol front door: LaunchDarkly's big-segment key layout over a segstore
//! store, so that every SDK's Redis big-segment store reads it, and the Relay Proxy's Redis
//! writer (or any writer that speaks the same transactions) writes it, unchanged.
//!
//! Reads come from the store's current snapshot and never wait for a write. Writes take the
//! writer's turn: one `MULTI`…`EXEC`, or one write command outside a transaction, is one atomic,
//! durable [`Batch`](crate::Batch), and its reply is sent only after the batch is on disk.
//! `WATCH` keeps its meaning: `EXEC` answers nil if a watched key was modified after the
//! `WATCH`. Only the layout's keys ([`keyspace`]) can be written; any other write is refused.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use segstore::serve::redis::{RedisConfig, RedisEndpoint};
//! use segstore::{Options, Store};
//! use std::sync::Arc;
//! let store = Arc::new(Store::open_or_create("/var/lib/segstore", Options::default())?);
//! let endpoint = RedisEndpoint::new(store, RedisConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6380").await?;
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! endpoint.serve_tcp(listener, stopped).await;
//! # Ok(()) }
//! ```

pub mod auth;
mod commands;
mod connection;
mod info;
pub mod keyspace;
pub mod reply;
pub mod request;
mod server;
mod session;
mod view;

pub use auth::{Access, Users};
pub use request::RequestLimits;
pub use server::RedisConfig;

use crate::store::Store;
use server::{Shared, Stats};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The Redis endpoint over one store. Cheap to clone; every listener of one endpoint shares
/// its state (counters, `WATCH`es, the writer's turn).
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    shared: Arc<Shared>,
    /// Runtimes to place connections on, in turn (none: the accepting task's runtime).
    workers: Arc<[tokio::runtime::Handle]>,
    next_worker: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long shutdown waits for connections to send their last replies.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A counted connection slot: released when the connection ends.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .stats
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl RedisEndpoint {
    /// An endpoint over `store`, which this process must hold as the writer.
    pub fn new(store: Arc<Store>, config: RedisConfig) -> RedisEndpoint {
        RedisEndpoint {
            shared: Arc::new(Shared::new(store, config)),
            workers: Arc::from(Vec::new()),
            next_worker: Arc::default(),
        }
    }

    /// Places each accepted connection on one of these runtimes, in turn (see
    /// [`Workers`](crate::serve::workers::Workers)), instead of the accepting task's runtime.
    pub fn with_workers(mut self, workers: &[tokio::runtime::Handle]) -> RedisEndpoint {
        self.workers = Arc::from(workers.to_vec());
        self
    }

    /// Takes a connection slot, or refuses the connection at `max_clients`.
    fn admit(&self) -> Option<Slot> {
        let stats = &self.shared.stats;
        Stats::bump(&stats.connections_received);
        let now = stats.connected_clients.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = Slot(self.shared.clone());
        if now > self.shared.config.max_clients as u64 {
            Stats::bump(&stats.rejected_connections);
            return None;
        }
        Some(slot)
    }

    /// Serves one accepted connection to its end.
    pub async fn serve_stream<S>(&self, mut stream: S, shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(_slot) = self.admit() else {
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            return;
        };
        connection::serve_connection(stream, self.shared.clone(), shutdown).await;
    }

    /// Accepts TCP connections until `shutdown` turns true, then waits for each connection
    /// to finish the command in hand, and for the write in flight.
    pub async fn serve_tcp(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: watch::Receiver<bool>,
    ) {
        self.accept_loop(
            || async {
                let (stream, _) = listener.accept().await?;
                // Replies are written whole; Nagle's delay would only add latency.
                let _ = stream.set_nodelay(true);
                stream.into_std()
            },
            |socket| async move { tokio::net::TcpStream::from_std(socket) },
            shutdown,
        )
        .await;
    }

    /// Accepts TLS connections (over TCP) until `shutdown`, as [`serve_tcp`](Self::serve_tcp).
    /// A handshake must finish within the request timeout.
    pub async fn serve_tls(
        &self,
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        shutdown: watch::Receiver<bool>,
    ) {
        let handshake_limit = self.shared.config.request_timeout;
        self.accept_loop(
            || async {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                stream.into_std()
            },
            move |socket| {
                let acceptor = acceptor.clone();
                async move {
                    let stream = tokio::net::TcpStream::from_std(socket)?;
                    tokio::time::timeout(handshake_limit, acceptor.accept(stream))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "TLS handshake timed out",
                            )
                        })?
                }
            },
            shutdown,
        )
        .await;
    }

    /// Accepts connections on a Unix socket until `shutdown`, as [`serve_tcp`](Self::serve_tcp).
    pub async fn serve_unix(
        &self,
        listener: tokio::net::UnixListener,
        shutdown: watch::Receiver<bool>,
    ) {
        self.accept_loop(
            || async { listener.accept().await?.0.into_std() },
            |socket| async move { tokio::net::UnixStream::from_std(socket) },
            shutdown,
        )
        .await;
    }

    /// The accept loop. `accept` yields each connection as a std socket, and `adopt` registers
    /// it with the runtime of the worker that serves it (so its I/O events wake that worker
    /// only) and does any handshake.
    async fn accept_loop<Std, S, F, Fut, A, AFut>(
        &self,
        mut accept: F,
        adopt: A,
        mut shutdown: watch::Receiver<bool>,
    ) where
        Std: Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<Std>>,
        A: Fn(Std) -> AFut,
        AFut: std::future::Future<Output = std::io::Result<S>> + Send + 'static,
    {
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = accept() => match accepted {
                    Ok(socket) => {
                        let endpoint = self.clone();
                        let stop = shutdown.clone();
                        let adopted = adopt(socket);
                        let task = async move {
                            match adopted.await {
                                Ok(stream) => endpoint.serve_stream(stream, stop).await,
                                Err(e) => tracing::warn!(error = %e, "a connection could not be registered"),
                            }
                        };
                        match self.workers.get(self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1)) {
                            Some(worker) => connections.spawn_on(task, worker),
                            None => connections.spawn(task),
                        };
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        self.shared.close_writes().await;
        // Each connection stops after the command in hand; one whose client does not read
        // its replies is cut off after a grace period.
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
            connections.abort_all();
        }
    }

    /// Set lookups answered so far (for the HTTP door's `/metrics`).
    pub fn lookups(&self) -> u64 {
        Stats::get(&self.shared.stats.lookups)
    }

    /// Waits for the write in flight, then refuses later ones (part of shutdown).
    pub async fn close_writes(&self) {
        self.shared.close_writes().await;
    }
}
