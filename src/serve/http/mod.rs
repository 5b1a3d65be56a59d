//! The HTTP front door: partner tools and a user's own jobs sync segments in with access
//! tokens; operators read `/status` and `/metrics`.
//!
//! Routes, shaped like the hosted service's so a tool's request works unchanged:
//!
//! | route | does |
//! |---|---|
//! | `POST /api/v2/segment-targets/{integrationKey}` | a partner tool's sync (the body names the environment by client-side ID); 204 |
//! | `POST /api/v2/segments/{proj}/{env}/{segmentKey}/users` (or `/contexts`) | `{included: {add, remove}, excluded: {add, remove}}`; 204 |
//! | `PUT /api/v2/segments/{proj}/{env}/{segmentKey}/targets/included` (or `excluded`) | bulk replace: a streamed body of keys, one a line; 200 |
//! | `GET`, `PATCH`, `DELETE /api/v2/segments/{proj}/{env}/{segmentKey}` | details (name, description, tags); the key is immutable |
//! | `GET /api/v2/segments/{proj}/{env}` | the segments with their counts |
//! | `GET /status` | per environment `{available, potentiallyStale, lastSynchronizedOn}`, overall `healthy` or `degraded` |
//! | `GET /metrics` | Prometheus text |
//!
//! Every 2xx answer to a write means the write is durable; a refused request changes nothing.
//! Errors are JSON `{code, message}` (with `pointer`, the JSON pointer at fault, for a body).
//! Logs never contain a token or a key.
//!
//! A `{segmentKey}` names the segment whose ref is `{segmentKey}.g{N}` (the highest N if
//! several), or is a ref itself when it ends in `.g{N}`; a write to a key with no segment
//! creates `{segmentKey}.g1` (which needs `createSegment`).

mod commit;
mod error;
mod guard;
mod metrics;
mod routes;

pub use error::ApiError;
pub use guard::RateLimit;
pub use metrics::Metrics;

use crate::store::Store;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One environment a server answers for: its store and how its routes name it.
#[derive(Debug)]
pub struct Environment {
    /// The client-side ID partner bodies name it by.
    pub client_side_id: String,
    /// The project key in REST routes (default `default`).
    pub project_key: String,
    /// The environment key in REST routes (default `production`).
    pub environment_key: String,
    /// The store (this process is its writer).
    pub store: Arc<Store>,
    /// True when keys arrive raw (REST bodies and partner payloads) and are stored as
    /// context hashes; false when they arrive hashed already.
    pub hash_keys: bool,
    /// Cleared once a write fails for I/O: the store then refuses writes until reopened.
    writable: AtomicBool,
    /// The group-commit writer of batched requests.
    committer: commit::Committer,
}

impl Environment {
    /// An environment over `store`; starts the thread that commits its writes.
    pub fn new(
        client_side_id: impl Into<String>,
        project_key: impl Into<String>,
        environment_key: impl Into<String>,
        store: Arc<Store>,
        hash_keys: bool,
    ) -> std::io::Result<Environment> {
        Ok(Environment {
            client_side_id: client_side_id.into(),
            project_key: project_key.into(),
            environment_key: environment_key.into(),
            committer: commit::Committer::start(store.clone())?,
            store,
            hash_keys,
            writable: AtomicBool::new(true),
        })
    }

    /// False after a write failed for I/O (the store refuses writes until it is reopened).
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed) && self.store.background_error().is_none()
    }

    fn mark_failed(&self) {
        self.writable.store(false, Ordering::Relaxed);
    }
}

/// How the HTTP door behaves.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The token file (see [`crate::serve::access`]).
    pub tokens_path: PathBuf,
    /// The largest JSON body accepted (bulk replace streams and is not bound by it).
    pub max_body_bytes: usize,
    /// Requests per second each token may make (with a burst of twice that); `None`: no
    /// limit.
    pub rate_limit: Option<f64>,
    /// A request must be read whole within this long (headers: this long from the first
    /// byte), or the connection is closed.
    pub request_timeout: Duration,
    /// `synchronized_on` older than this is `potentiallyStale` in `/status`.
    pub stale_after: Duration,
    /// The most connections at once.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            tokens_path: PathBuf::new(),
            max_body_bytes: 16 << 20,
            rate_limit: None,
            request_timeout: Duration::from_secs(30),
            stale_after: Duration::from_secs(120),
            max_connections: 10_000,
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub environments: Vec<Arc<Environment>>,
    pub config: HttpConfig,
    pub metrics: Metrics,
    pub guard: guard::Guard,
    pub redis_lookups: std::sync::OnceLock<LookupCounter>,
}

/// Reads the Redis endpoint's lookup count, for `/metrics`.
#[derive(Clone)]
pub(crate) struct LookupCounter(pub Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for LookupCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupCounter")
    }
}

impl AppState {
    pub fn by_client_id(&self, id: &str) -> Option<&Arc<Environment>> {
        self.environments.iter().find(|e| e.client_side_id == id)
    }

    pub fn by_keys(&self, project: &str, environment: &str) -> Option<&Arc<Environment>> {
        self.environments
            .iter()
            .find(|e| e.project_key == project && e.environment_key == environment)
    }
}

/// The HTTP endpoint over one or more environments. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpEndpoint {
    state: Arc<AppState>,
    workers: Arc<[tokio::runtime::Handle]>,
    next_worker: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl HttpEndpoint {
    /// An endpoint over `environments`. The token file is read now (a missing file is no
    /// tokens) and again whenever it changes.
    pub fn new(environments: Vec<Environment>, config: HttpConfig) -> Result<HttpEndpoint, String> {
        let guard = guard::Guard::new(&config)?;
        Ok(HttpEndpoint {
            state: Arc::new(AppState {
                environments: environments.into_iter().map(Arc::new).collect(),
                config,
                metrics: Metrics::default(),
                guard,
                redis_lookups: std::sync::OnceLock::new(),
            }),
            workers: Arc::from(Vec::new()),
            next_worker: Arc::default(),
            connections: Arc::default(),
        })
    }

    /// Reports the Redis endpoint's lookups in `/metrics` (the first counter given is kept).
    pub fn with_redis_lookups(
        self,
        lookups: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> HttpEndpoint {
        let _ = self
            .state
            .redis_lookups
            .set(LookupCounter(Arc::new(lookups)));
        self
    }

    /// Places connections on these runtimes in turn (see [`crate::serve::workers::Workers`]).
    pub fn with_workers(mut self, workers: &[tokio::runtime::Handle]) -> HttpEndpoint {
        self.workers = Arc::from(workers.to_vec());
        self
    }

    /// The router (for tests, or to serve it another way).
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// Accepts connections until `shutdown`, then lets each finish the request in hand
    /// (within a grace period).
    pub async fn serve_tcp(
        &self,
        listener: tokio::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let router = self.router();
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    let socket = match accepted.and_then(|(s, _)| { let _ = s.set_nodelay(true); s.into_std() }) {
                        Ok(socket) => socket,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if self.connections.load(Ordering::Relaxed) >= self.state.config.max_connections {
                        drop(socket);
                        continue;
                    }
                    let task = serve_connection(socket, router.clone(), self.state.config.request_timeout, self.connections.clone(), shutdown.clone());
                    let turn = self.next_worker.fetch_add(1, Ordering::Relaxed);
                    match self.workers.get(turn % self.workers.len().max(1)) {
                        Some(worker) => connections.spawn_on(task, worker),
                        None => connections.spawn(task),
                    };
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .is_err()
        {
            connections.abort_all();
        }
    }
}

/// One HTTP/1.1 connection, with a header-read timeout, shut down gracefully at `shutdown`.
async fn serve_connection(
    socket: std::net::TcpStream,
    router: Router,
    request_timeout: Duration,
    open: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(stream) = tokio::net::TcpStream::from_std(socket) else {
        return;
    };
    open.fetch_add(1, Ordering::Relaxed);
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut router = router.clone();
            async move {
                use tower::Service;
                router.call(request.map(axum::body::Body::new)).await
            }
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.as_mut().await;
        }
    }
    open.fetch_sub(1, Ordering::Relaxed);
}
