//! `segstore serve`: the daemon that holds the store as its writer and opens its network front
//! doors (today the Redis protocol) until SIGTERM or SIGINT.

use crate::common::{writer_options, CmdResult, Failure, WriterArgs};
use crate::serve_config;
use clap::Args;
use segstore::serve::access;
use segstore::serve::http::{Environment, HttpConfig, HttpEndpoint};
use segstore::serve::redis::{RedisConfig, RedisEndpoint, RequestLimits, Users};
use segstore::serve::tls;
use segstore::serve::workers::Workers;
use segstore::Store;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;
use tracing::level_filters::LevelFilter;

/// The environment variable that may hold the Redis password.
pub const REDIS_PASSWORD_ENV: &str = "SEGSTORE_REDIS_PASSWORD";

/// How keys arrive in HTTP bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpKeys {
    /// Context keys, hashed here (SHA-256, base64) as the SDKs query them.
    Raw,
    /// Context hashes already.
    Hashed,
}

/// Arguments of `serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each listener prints `serve: redis listening on ADDR` (or `http ...`) on stdout \
once it is bound (port 0 picks a free port). The process is the store's writer while it runs: `sync`, \
`apply` and `import` are kept out by the lock; read commands (check, membership, meta, ...) work \
beside it. SIGTERM or SIGINT stops it after the transaction in flight (exit 0).\n\
Redis keys, under the prefix P: P:big_segments_synchronized_on, P:big_segments_cursor, \
P:big_segments_lock, P:big_segment_include:HASH and P:big_segment_exclude:HASH (sets of segment \
refs). One MULTI..EXEC (or one write command) is one atomic, durable batch, answered after it is \
on disk. Writes to other keys are refused.\n\
Passwords: --redis-password-file holds one line (the password of the `default` user, read-write) \
or lines `NAME rw|ro PASSWORD`; or SEGSTORE_REDIS_PASSWORD holds the default user's password. \
Never pass a password as a flag value.\n\
HTTP (--http): partner syncs (POST /api/v2/segment-targets/{integrationKey}), REST target \
updates, bulk replace, segment details, GET /status and GET /metrics, for the environment \
--environment-id names; access tokens from `segstore token`. Several environments: --config \
FILE. Every route, the config file and a systemd unit: docs/serve.md.\n\
Logs go to stderr; SEGSTORE_LOG=error|warn|info|debug|trace sets the level (default info)."
)]
pub struct ServeArgs {
    /// Serve the Redis protocol on this TCP address (repeatable), e.g. 127.0.0.1:6380.
    #[arg(long = "redis", value_name = "ADDR")]
    pub redis: Vec<SocketAddr>,
    /// Serve the Redis protocol over TLS on this TCP address (repeatable); needs --tls-cert
    /// and --tls-key.
    #[arg(long = "redis-tls", value_name = "ADDR")]
    pub redis_tls: Vec<SocketAddr>,
    /// The TLS certificate chain, PEM (leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the Redis protocol on this Unix socket path.
    #[arg(long, value_name = "PATH")]
    pub redis_unix: Option<PathBuf>,
    /// The key prefix the SDKs and writers use.
    #[arg(long, default_value = "launchdarkly", value_name = "P")]
    pub redis_prefix: String,
    /// A file of passwords (mode 0600 recommended); see below.
    #[arg(long, value_name = "FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// The most Redis connections at once.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub redis_max_clients: usize,
    /// Close a Redis connection idle this many seconds (0: never).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub redis_idle_timeout: u64,
    /// A request begun must arrive whole within this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub redis_request_timeout: u64,
    /// The largest bulk string (argument) accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub redis_max_bulk_len: usize,
    /// The most bytes of commands one MULTI may queue.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub redis_max_transaction_bytes: usize,
    /// Serve the HTTP front door (partner syncs, REST target updates, /status, /metrics) on
    /// this TCP address (repeatable); needs --environment-id.
    #[arg(long = "http", value_name = "ADDR")]
    pub http: Vec<SocketAddr>,
    /// The client-side ID of the environment this store is (partner bodies name it).
    #[arg(long, value_name = "ID")]
    pub environment_id: Option<String>,
    /// The project key of the environment in REST routes.
    #[arg(long, default_value = "default", value_name = "KEY")]
    pub project_key: String,
    /// The environment key in REST routes.
    #[arg(long, default_value = "production", value_name = "KEY")]
    pub environment_key: String,
    /// Keys in HTTP bodies arrive `raw` (hashed here, as the SDKs hash them) or `hashed`.
    #[arg(long, default_value = "raw", value_name = "raw|hashed")]
    pub http_keys: HttpKeys,
    /// The access-token file (default: DIR.tokens, beside the store; see `segstore token`).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// The largest JSON body accepted, in bytes (bulk replace streams and is not bound).
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub http_max_body_bytes: usize,
    /// Requests per second per access token (bursts of twice that); 0: no limit.
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    pub http_rate_limit: f64,
    /// A request must arrive whole within this many seconds (headers included).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub http_request_timeout: u64,
    /// /status calls a store potentiallyStale when synchronized_on is older than this.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub stale_after: u64,
    /// Serve the environments, listeners and limits a TOML file names (see docs/serve.md)
    /// instead of one store from the flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["redis", "redis_tls", "redis_unix", "http", "environment_id"])]
    pub config: Option<PathBuf>,
    /// Create the store if the directory has none.
    #[arg(long)]
    pub init: bool,
    /// Options of every writing command.
    #[command(flatten)]
    pub writer: WriterArgs,
    /// Log level (error, warn, info, debug, trace).
    #[arg(
        long,
        env = "SEGSTORE_LOG",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: LevelFilter,
}

fn users(args: &ServeArgs) -> CmdResult<Users> {
    if let Some(path) = &args.redis_password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::runtime(format!("reading {}: {e}", path.display())))?;
        return Users::parse(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())));
    }
    match std::env::var(REDIS_PASSWORD_ENV) {
        Ok(password) if !password.is_empty() => Ok(Users::password(&password)),
        _ => Ok(Users::none()),
    }
}

pub fn config(args: &ServeArgs) -> CmdResult<RedisConfig> {
    if args.redis_prefix.is_empty() {
        return Err(Failure::usage("--redis-prefix must not be empty"));
    }
    if args.redis_request_timeout == 0 {
        return Err(Failure::usage(
            "--redis-request-timeout must be at least 1 second",
        ));
    }
    Ok(RedisConfig {
        prefix: args.redis_prefix.clone(),
        users: users(args)?,
        request_limits: RequestLimits {
            max_bulk_len: args.redis_max_bulk_len,
            ..RequestLimits::default()
        },
        max_clients: args.redis_max_clients,
        idle_timeout: (args.redis_idle_timeout > 0)
            .then(|| Duration::from_secs(args.redis_idle_timeout)),
        request_timeout: Duration::from_secs(args.redis_request_timeout),
        max_transaction_bytes: args.redis_max_transaction_bytes,
    })
}

/// The HTTP door's settings from the flags.
fn http_config(args: &ServeArgs, dir: &Path) -> CmdResult<HttpConfig> {
    if args.http_request_timeout == 0 {
        return Err(Failure::usage(
            "--http-request-timeout must be at least 1 second",
        ));
    }
    if !(args.http_rate_limit >= 0.0 && args.http_rate_limit.is_finite()) {
        return Err(Failure::usage(
            "--http-rate-limit must be a number of requests a second",
        ));
    }
    Ok(HttpConfig {
        tokens_path: args
            .tokens
            .clone()
            .unwrap_or_else(|| access::default_path(dir)),
        max_body_bytes: args.http_max_body_bytes,
        rate_limit: (args.http_rate_limit > 0.0).then_some(args.http_rate_limit),
        request_timeout: Duration::from_secs(args.http_request_timeout),
        stale_after: Duration::from_secs(args.stale_after),
        ..HttpConfig::default()
    })
}

/// Binds a Unix socket at `path`, replacing a stale socket file that nothing listens on.
fn bind_unix(path: &Path) -> CmdResult<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Failure::runtime(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Failure::runtime(format!(
                "{} is in use by another server",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| Failure::runtime(format!("removing stale {}: {e}", path.display())))?;
    }
    tokio::net::UnixListener::bind(path)
        .map_err(|e| Failure::runtime(format!("binding {}: {e}", path.display())))
}

/// Prints a "listening" line on stdout. A closed stdout is no reason for a daemon to stop:
/// the line is then only logged.
fn announce(what: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "serve: {what}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "stdout is closed; not announcing: {what}");
    }
}

/// The Redis door of one store, and where it listens.
pub struct RedisDoor {
    pub endpoint: RedisEndpoint,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<(SocketAddr, tokio_rustls::TlsAcceptor)>,
    pub unix: Option<PathBuf>,
}

/// Every door the daemon opens, over the stores it holds as their writer.
pub struct Plan {
    pub stores: Vec<Arc<Store>>,
    pub redis: Vec<RedisDoor>,
    pub http: Option<(HttpEndpoint, Vec<SocketAddr>)>,
}

pub fn open_store(dir: &Path, init: bool, writer: &WriterArgs) -> CmdResult<Arc<Store>> {
    let store = if init {
        Store::open_or_create(dir, writer_options(writer))?
    } else {
        Store::open(dir, writer_options(writer))?
    };
    Ok(Arc::new(store))
}

/// The plan the flags give: one store (`--dir`), its Redis door, its HTTP door.
fn plan_from_flags(dir: &Path, args: &ServeArgs) -> CmdResult<Plan> {
    if args.redis.is_empty()
        && args.redis_tls.is_empty()
        && args.redis_unix.is_none()
        && args.http.is_empty()
    {
        return Err(Failure::usage(
            "serve needs at least one front door: --redis ADDR, --redis-tls ADDR, --redis-unix PATH or --http ADDR (or --config FILE)",
        ));
    }
    if !args.http.is_empty() && args.environment_id.is_none() {
        return Err(Failure::usage(
            "--http needs --environment-id (the environment's client-side ID)",
        ));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key).map_err(Failure::usage)?),
        _ if !args.redis_tls.is_empty() => {
            return Err(Failure::usage("--redis-tls needs --tls-cert and --tls-key"))
        }
        _ => None,
    };
    let config = config(args)?;
    let http_config = http_config(args, dir)?;
    let store = open_store(dir, args.init, &args.writer)?;
    let redis = RedisDoor {
        endpoint: RedisEndpoint::new(store.clone(), config),
        tcp: args.redis.clone(),
        tls: match tls {
            Some(acceptor) => args
                .redis_tls
                .iter()
                .map(|a| (*a, acceptor.clone()))
                .collect(),
            None => Vec::new(),
        },
        unix: args.redis_unix.clone(),
    };
    let http = match &args.environment_id {
        Some(id) if !args.http.is_empty() => {
            let environment = Environment::new(
                id,
                args.project_key.clone(),
                args.environment_key.clone(),
                store.clone(),
                args.http_keys == HttpKeys::Raw,
            )
            .map_err(|e| Failure::runtime(format!("starting the commit thread: {e}")))?;
            let endpoint =
                HttpEndpoint::new(vec![environment], http_config).map_err(Failure::runtime)?;
            Some((endpoint, args.http.clone()))
        }
        _ => None,
    };
    Ok(Plan {
        stores: vec![store],
        redis: vec![redis],
        http,
    })
}

/// Runs `serve`.
pub fn run(dir: Option<&Path>, args: &ServeArgs) -> CmdResult {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .with_target(false)
        .try_init();
    let plan = match (&args.config, dir) {
        (Some(file), _) => serve_config::plan(file, args)?,
        (None, Some(dir)) => plan_from_flags(dir, args)?,
        (None, None) => {
            return Err(Failure::usage(
                "serve needs a store: --dir DIR (or SEGSTORE_DIR), or --config FILE",
            ))
        }
    };
    // This thread accepts connections and waits for signals; the workers (one per core) serve
    // the connections.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("starting the runtime: {e}")))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = Workers::start(cores)
        .map_err(|e| Failure::runtime(format!("starting the worker threads: {e}")))?;
    let stores = plan.stores.clone();
    let result = runtime.block_on(serve(plan, workers.handles()));
    drop(runtime);
    workers.stop();
    // Dropping the stores closes them: every batch was fsynced before it was answered.
    drop(stores);
    result
}

async fn bind(addr: &SocketAddr) -> CmdResult<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("binding {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::runtime(format!("binding {addr}: {e}")))?;
    Ok((listener, local))
}

async fn serve(plan: Plan, workers: &[tokio::runtime::Handle]) -> CmdResult {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Failure::runtime(format!("installing signal handlers: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Failure::runtime(format!("installing signal handlers: {e}")))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut doors = tokio::task::JoinSet::new();
    let mut unix_paths = Vec::new();
    let mut endpoints = Vec::new();
    for door in plan.redis {
        let endpoint = door.endpoint.with_workers(workers);
        for addr in &door.tcp {
            let (listener, local) = bind(addr).await?;
            announce(&format!("redis listening on {local}"));
            info!(address = %local, "redis endpoint listening");
            let (endpoint, stopped) = (endpoint.clone(), stopped.clone());
            doors.spawn(async move { endpoint.serve_tcp(listener, stopped).await });
        }
        for (addr, acceptor) in door.tls {
            let (listener, local) = bind(&addr).await?;
            announce(&format!("redis listening on tls:{local}"));
            info!(address = %local, "redis endpoint listening (TLS)");
            let (endpoint, stopped) = (endpoint.clone(), stopped.clone());
            doors.spawn(async move { endpoint.serve_tls(listener, acceptor, stopped).await });
        }
        if let Some(path) = door.unix {
            let listener = bind_unix(&path)?;
            announce(&format!("redis listening on unix:{}", path.display()));
            info!(path = %path.display(), "redis endpoint listening");
            let (endpoint, stopped) = (endpoint.clone(), stopped.clone());
            doors.spawn(async move { endpoint.serve_unix(listener, stopped).await });
            unix_paths.push(path);
        }
        endpoints.push(endpoint);
    }
    if let Some((http, addrs)) = plan.http {
        let redis = endpoints.clone();
        let http = http
            .with_redis_lookups(move || redis.iter().map(RedisEndpoint::lookups).sum())
            .with_workers(workers);
        for addr in &addrs {
            let (listener, local) = bind(addr).await?;
            announce(&format!("http listening on {local}"));
            info!(address = %local, "http endpoint listening");
            let (http, stopped) = (http.clone(), stopped.clone());
            doors.spawn(async move { http.serve_tcp(listener, stopped).await });
        }
    }
    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!("{signal_name} received: stopping after the transaction in flight");
    let _ = stop.send(true);
    for endpoint in &endpoints {
        endpoint.close_writes().await;
    }
    while doors.join_next().await.is_some() {}
    for path in unix_paths {
        let _ = std::fs::remove_file(path);
    }
    info!("stopped");
    Ok(())
}
