//! Who is calling and what they may do: the access token (raw, as partner tools send it, or
//! `Bearer`), its policy, and a per-token rate limit.

use super::error::ApiError;
use super::HttpConfig;
use crate::serve::access::{token_from_header, Policy, Resource, TokenStore};
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A token bucket per token: `rate` requests a second, bursts of `2 × rate`.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimit {
    /// A limit of `rate` requests a second per token.
    pub fn new(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `who`'s bucket; false when it is empty.
    pub fn admit(&self, who: &str) -> bool {
        let burst = (self.rate * 2.0).max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Checks every request's token.
#[derive(Debug)]
pub struct Guard {
    path: PathBuf,
    tokens: Mutex<Arc<TokenStore>>,
    limit: Option<RateLimit>,
}

/// An authenticated caller: what its token's policy allows.
#[derive(Debug, Clone)]
pub struct Caller {
    policy: Policy,
}

impl Guard {
    /// Reads the token file named in `config`.
    pub fn new(config: &HttpConfig) -> Result<Guard, String> {
        let path = config.tokens_path.clone();
        let store = TokenStore::load(&path).map_err(|e| e.to_string())?;
        Ok(Guard {
            tokens: Mutex::new(Arc::new(store)),
            path,
            limit: config.rate_limit.map(RateLimit::new),
        })
    }

    /// The current tokens, re-read if the file changed (so `token revoke` takes effect at
    /// once). A file that cannot be read keeps the last good one, and says so in the log.
    fn tokens(&self) -> Arc<TokenStore> {
        let mut tokens = self.tokens.lock();
        if tokens.changed_since(&self.path) {
            match TokenStore::load(&self.path) {
                Ok(store) => *tokens = Arc::new(store),
                Err(e) => {
                    tracing::error!(error = %e, "the token file could not be re-read; keeping the tokens read before")
                }
            }
        }
        tokens.clone()
    }

    /// The caller of a request: 401 without a known token, 429 over the rate limit.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_from_header)
            .ok_or_else(ApiError::unauthorized)?;
        let tokens = self.tokens();
        let info = tokens
            .authenticate(presented)
            .ok_or_else(ApiError::unauthorized)?;
        if let Some(limit) = &self.limit {
            if !limit.admit(&info.name) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests for this access token; retry later",
                ));
            }
        }
        Ok(Caller {
            policy: info.policy.clone(),
        })
    }
}

impl Caller {
    /// 403 unless the policy allows `action` on the segment `segment` (its key) of the
    /// environment, with the segment's tags.
    pub fn require(
        &self,
        action: &str,
        project: &str,
        environment: &str,
        segment: &str,
        tags: &[String],
    ) -> Result<(), ApiError> {
        let resource = Resource::new(project, environment, segment, tags);
        if self.policy.allows(action, &resource) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                action,
                &format!("proj/{project}:env/{environment}:segment/{segment}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_a_burst_then_the_rate() {
        let limit = RateLimit::new(0.001);
        assert!(limit.admit("a"));
        assert!(!limit.admit("a"), "a burst of 1 at this rate");
        assert!(limit.admit("b"), "buckets are per token");
    }
}
