//! Retry delays: doubling from an initial delay up to a ceiling, with random jitter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A delay schedule: the first retry waits `initial`, each further one twice the last, never
/// more than `max`; jitter then takes up to a fraction of each delay off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The ceiling.
    pub max: Duration,
}

/// One failure class's position in its schedule.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    jitter: f64,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy, jitter: f64) -> Self {
        Backoff {
            policy,
            jitter: jitter.clamp(0.0, 1.0),
            failures: 0,
        }
    }

    /// The delay before the next attempt, counting one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let doublings = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let base = self
            .policy
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.policy.max);
        base.mul_f64(1.0 - self.jitter * unit_random())
    }

    /// Back to the first delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A random number in `[0, 1)`. The jitter needs no cryptographic quality, only different
/// values in different processes and calls: std's `RandomState` is seeded randomly per
/// process and per instance, which is enough and costs no dependency.
fn unit_random() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    // The top 53 bits make an exactly representable fraction.
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_without_jitter() {
        let policy = BackoffPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(30),
        };
        let mut b = Backoff::new(policy, 0.0);
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 10);
    }

    #[test]
    fn jitter_takes_at_most_half_off() {
        let policy = BackoffPolicy {
            initial: Duration::from_secs(300),
            max: Duration::from_secs(3600),
        };
        let mut b = Backoff::new(policy, 0.5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            b.reset();
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(150) && d <= Duration::from_secs(300),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 1, "jitter varies the delay");
        // Many failures later the ceiling still holds.
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(3600));
        }
    }
}
