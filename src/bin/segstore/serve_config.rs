//! `serve --config FILE`: several environments (each its own store) in one daemon, from a
//! TOML file of listeners, environments and limits.
//!
//! ```toml
//! [http]
//! listen = ["127.0.0.1:8080"]
//! tokens = "/etc/segstore/tokens"      # the access-token file (`segstore token --tokens`)
//! stale_after_secs = 120
//!
//! [limits]
//! max_body_bytes = 16777216
//! rate_limit = 50                        # requests a second per token; 0 or absent: none
//! request_timeout_secs = 30
//! redis_max_clients = 10000
//!
//! [[environment]]
//! client_side_id = "65a1f0c2b3d4e5f6a7b8c9d0"
//! project_key = "default"                # default "default"
//! environment_key = "production"         # default "production"
//! dir = "/var/lib/segstore/production"
//! keys = "raw"                           # or "hashed"; default "raw"
//! redis = ["127.0.0.1:6380"]             # this store's Redis door, optional
//! redis_prefix = "launchdarkly"          # default "launchdarkly"
//! init = true                            # create the store if missing
//! ```
//!
//! Passwords for the Redis doors come from `--redis-password-file` or
//! `SEGSTORE_REDIS_PASSWORD`, as without a config file; they are never in this file.

use crate::cmd_serve::{Plan, RedisDoor, ServeArgs};
use crate::common::{CmdResult, Failure};
use segstore::serve::http::{Environment, HttpConfig, HttpEndpoint};
use segstore::serve::redis::RedisEndpoint;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    environment: Vec<EnvironmentSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    #[serde(default)]
    listen: Vec<SocketAddr>,
    tokens: Option<PathBuf>,
    stale_after_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    max_body_bytes: Option<usize>,
    rate_limit: Option<f64>,
    request_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    redis_max_clients: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentSection {
    client_side_id: String,
    project_key: Option<String>,
    environment_key: Option<String>,
    dir: PathBuf,
    keys: Option<String>,
    #[serde(default)]
    redis: Vec<SocketAddr>,
    redis_prefix: Option<String>,
    #[serde(default)]
    init: bool,
}

fn bad(file: &Path, message: impl std::fmt::Display) -> Failure {
    Failure::usage(format!("{}: {message}", file.display()))
}

/// Reads the file and opens every environment's store.
pub fn plan(file: &Path, args: &ServeArgs) -> CmdResult<Plan> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::runtime(format!("reading {}: {e}", file.display())))?;
    let config: ConfigFile = toml::from_str(&text).map_err(|e| bad(file, e))?;
    if config.environment.is_empty() {
        return Err(bad(file, "no [[environment]]"));
    }
    let mut ids = BTreeSet::new();
    let mut routes = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for env in &config.environment {
        if env.client_side_id.is_empty() {
            return Err(bad(file, "an environment has an empty client_side_id"));
        }
        if !ids.insert(env.client_side_id.as_str()) {
            return Err(bad(
                file,
                format!("client_side_id {:?} is named twice", env.client_side_id),
            ));
        }
        let route = (
            env.project_key.as_deref().unwrap_or("default"),
            env.environment_key.as_deref().unwrap_or("production"),
        );
        if !routes.insert(route) {
            return Err(bad(
                file,
                format!(
                    "project {:?} environment {:?} is named twice",
                    route.0, route.1
                ),
            ));
        }
        if !dirs.insert(env.dir.as_path()) {
            return Err(bad(
                file,
                format!("the store {} is named twice", env.dir.display()),
            ));
        }
        if !matches!(env.keys.as_deref(), None | Some("raw" | "hashed")) {
            return Err(bad(file, "keys is \"raw\" or \"hashed\""));
        }
    }
    let limits = &config.limits;
    if limits
        .rate_limit
        .is_some_and(|r| !(r >= 0.0 && r.is_finite()))
    {
        return Err(bad(file, "rate_limit is a number of requests a second"));
    }
    if limits.request_timeout_secs == Some(0) {
        return Err(bad(file, "request_timeout_secs must be at least 1"));
    }
    let tokens_path = match (&config.http.tokens, config.http.listen.is_empty()) {
        (Some(path), _) => path.clone(),
        (None, true) => PathBuf::new(),
        (None, false) => {
            return Err(bad(
                file,
                "[http] needs tokens = \"FILE\" (the access-token file)",
            ))
        }
    };
    let mut redis_config = crate::cmd_serve::config(args)?;
    if let Some(max) = limits.redis_max_clients {
        redis_config.max_clients = max;
    }
    let mut plan = Plan {
        stores: Vec::new(),
        redis: Vec::new(),
        http: None,
    };
    let mut environments = Vec::new();
    for env in config.environment {
        let store = crate::cmd_serve::open_store(&env.dir, env.init || args.init, &args.writer)?;
        plan.stores.push(store.clone());
        if !env.redis.is_empty() {
            let mut door_config = redis_config.clone();
            if let Some(prefix) = &env.redis_prefix {
                door_config.prefix = prefix.clone();
            }
            plan.redis.push(RedisDoor {
                endpoint: RedisEndpoint::new(store.clone(), door_config),
                tcp: env.redis.clone(),
                tls: Vec::new(),
                unix: None,
            });
        }
        environments.push(
            Environment::new(
                env.client_side_id,
                env.project_key.unwrap_or_else(|| "default".into()),
                env.environment_key.unwrap_or_else(|| "production".into()),
                store,
                env.keys.as_deref() != Some("hashed"),
            )
            .map_err(|e| Failure::runtime(format!("starting the commit thread: {e}")))?,
        );
    }
    if !config.http.listen.is_empty() {
        let defaults = HttpConfig::default();
        let http_config = HttpConfig {
            tokens_path,
            max_body_bytes: limits.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            rate_limit: limits.rate_limit.filter(|r| *r > 0.0),
            request_timeout: limits
                .request_timeout_secs
                .map_or(defaults.request_timeout, Duration::from_secs),
            stale_after: config
                .http
                .stale_after_secs
                .map_or(defaults.stale_after, Duration::from_secs),
            max_connections: limits.max_connections.unwrap_or(defaults.max_connections),
        };
        let endpoint = HttpEndpoint::new(environments, http_config).map_err(Failure::runtime)?;
        plan.http = Some((endpoint, config.http.listen));
    }
    if plan.redis.is_empty() && plan.http.is_none() {
        return Err(bad(
            file,
            "no listener: give [http] listen or an environment's redis",
        ));
    }
    Ok(plan)
}
