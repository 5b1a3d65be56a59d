//! `/metrics`: the daemon's counters in the Prometheus text format (version 0.0.4).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the batch-latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The HTTP door's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    key_ops: AtomicU64,
    batches: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_micros: AtomicU64,
}

/// One environment's figures at scrape time.
#[derive(Debug, Clone)]
pub struct EnvironmentGauges {
    /// The environment's client-side ID (the metric label).
    pub environment: String,
    /// Seconds since `synchronized_on`, if ever synced.
    pub sync_age_seconds: Option<f64>,
    /// Bytes of the store's files.
    pub store_bytes: u64,
    /// Segments in the store.
    pub segments: u64,
}

impl Metrics {
    /// Counts one answered request of `route` (the method and the route's pattern, never
    /// the values in it).
    pub fn request(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock();
        match requests.get_mut(&(route.to_owned(), status)) {
            Some(count) => *count += 1,
            None => {
                requests.insert((route.to_owned(), status), 1);
            }
        }
    }

    /// Counts one applied batch: its key operations and how long it took to be durable.
    pub fn batch(&self, key_ops: u64, took: Duration) {
        self.key_ops.fetch_add(key_ops, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Key operations applied so far.
    pub fn key_ops(&self) -> u64 {
        self.key_ops.load(Ordering::Relaxed)
    }

    /// The text exposition, with the environments' gauges and the Redis door's lookups.
    pub fn render(&self, environments: &[EnvironmentGauges], redis_lookups: Option<u64>) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        out.push_str(
            "# HELP segstore_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE segstore_http_requests_total counter\n");
        for ((route, status), count) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "segstore_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                label(route)
            );
        }
        out.push_str(
            "# HELP segstore_key_ops_applied_total Key operations applied to the stores.\n",
        );
        out.push_str("# TYPE segstore_key_ops_applied_total counter\n");
        let _ = writeln!(out, "segstore_key_ops_applied_total {}", self.key_ops());
        out.push_str(
            "# HELP segstore_batch_seconds Time from a request's batch to its being durable.\n",
        );
        out.push_str("# TYPE segstore_batch_seconds histogram\n");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "segstore_batch_seconds_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let batches = self.batches.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "segstore_batch_seconds_bucket{{le=\"+Inf\"}} {batches}"
        );
        let _ = writeln!(
            out,
            "segstore_batch_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "segstore_batch_seconds_count {batches}");
        out.push_str("# HELP segstore_sync_age_seconds Seconds since the store's synchronized_on (absent: never synced).\n");
        out.push_str("# TYPE segstore_sync_age_seconds gauge\n");
        for env in environments {
            if let Some(age) = env.sync_age_seconds {
                let _ = writeln!(
                    out,
                    "segstore_sync_age_seconds{{environment=\"{}\"}} {age}",
                    label(&env.environment)
                );
            }
        }
        out.push_str("# HELP segstore_store_bytes Bytes of the store's files on disk.\n");
        out.push_str("# TYPE segstore_store_bytes gauge\n");
        for env in environments {
            let _ = writeln!(
                out,
                "segstore_store_bytes{{environment=\"{}\"}} {}",
                label(&env.environment),
                env.store_bytes
            );
        }
        out.push_str("# HELP segstore_segments Segments in the store.\n");
        out.push_str("# TYPE segstore_segments gauge\n");
        for env in environments {
            let _ = writeln!(
                out,
                "segstore_segments{{environment=\"{}\"}} {}",
                label(&env.environment),
                env.segments
            );
        }
        if let Some(lookups) = redis_lookups {
            out.push_str(
                "# HELP segstore_redis_lookups_total Set lookups answered by the Redis endpoint.\n",
            );
            out.push_str("# TYPE segstore_redis_lookups_total counter\n");
            let _ = writeln!(out, "segstore_redis_lookups_total {lookups}");
        }
        out
    }
}

/// A label value, escaped as the text format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_and_buckets() {
        let m = Metrics::default();
        m.request("/status", 200);
        m.request("/status", 200);
        m.request("/api/v2/segment-targets/{integrationKey}", 401);
        m.batch(1000, Duration::from_millis(3));
        let text = m.render(
            &[EnvironmentGauges {
                environment: "env\"1".into(),
                sync_age_seconds: Some(1.5),
                store_bytes: 42,
                segments: 3,
            }],
            Some(7),
        );
        assert!(
            text.contains("segstore_http_requests_total{route=\"/status\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("segstore_key_ops_applied_total 1000\n"));
        assert!(text.contains("segstore_batch_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("segstore_batch_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("segstore_batch_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("segstore_sync_age_seconds{environment=\"env\\\"1\"} 1.5\n"));
        assert!(text.contains("segstore_redis_lookups_total 7\n"));
    }
}
