//! [`RateLimitHandle`]: a rate limiter's limits and quotas at runtime.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::config::LimitConfig;
use super::limiter::{lock, Limiter, Settings};
use super::partition::Snapshot;
use crate::ConfigError;

/// Reads and changes a rate limiter at runtime, shared with every service the layer builds. It
/// answers like [`CircuitBreakerHandle`](crate::circuit_breaker::CircuitBreakerHandle): the
/// default quota, a keyed one by key, how many keys are held.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tollgate::rate_limit::Rate;
/// use tollgate::rate_limit::RateLimitLayer;
///
/// let layer = RateLimitLayer::builder().requests(Rate::per_minute(500)).build().unwrap();
/// let handle = layer.handle();
/// // The account moved to a higher tier: no rebuild, no over-admission during the change.
/// let mut limits = handle.limits();
/// limits.requests = Some(Rate::per_minute(5_000));
/// handle.set_limits(limits).unwrap();
/// assert_eq!(handle.limits().requests, Some(Rate::per_minute(5_000)));
/// assert_eq!(handle.snapshot().queued, 0);
/// # }
/// ```
pub struct RateLimitHandle<K = ()> {
    limiter: Arc<Limiter<K>>,
}

impl<K> Clone for RateLimitHandle<K> {
    fn clone(&self) -> Self {
        RateLimitHandle {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<K> fmt::Debug for RateLimitHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RateLimitHandle")
            .field(&self.limiter)
            .finish()
    }
}

impl<K: Hash + Eq + Clone + 'static> RateLimitHandle<K> {
    pub(crate) fn new(limiter: Arc<Limiter<K>>) -> Self {
        RateLimitHandle { limiter }
    }

    /// The configuration in force.
    pub fn limits(&self) -> LimitConfig {
        *lock(&self.limiter.config)
    }

    /// Changes the limits of every quota: `requests`, `tokens`, `concurrency`, `headroom` and
    /// `adaptive`. Available tokens never grow beyond the new capacity, so the change cannot
    /// over-admit; waiters are re-examined at once. The other settings are fixed when the layer
    /// is built: a change to one of them is refused with an error naming it.
    pub fn set_limits(&self, config: LimitConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let built = self.limits();
        if let Some(field) = fixed_field_changed(&built, &config) {
            return Err(ConfigError::new(
                field,
                "is fixed when the layer is built; build a new layer to change it",
            ));
        }
        *lock(&self.limiter.config) = config;
        let limits = config.limits();
        let now = Instant::now();
        self.limiter.quotas.each(|p| p.reconfigure(&limits, now));
        Ok(())
    }

    /// The default quota right now.
    pub fn snapshot(&self) -> Snapshot {
        self.limiter
            .quotas
            .default()
            .lock()
            .snapshot(Instant::now())
    }

    /// The quota of `key` right now, if it exists.
    pub fn snapshot_of(&self, key: &K) -> Option<Snapshot> {
        let partition = self.limiter.quotas.find(key)?;
        let snapshot = partition.lock().snapshot(Instant::now());
        Some(snapshot)
    }

    /// How many keyed quotas are held (idle ones are dropped as new keys arrive).
    pub fn keys(&self) -> usize {
        self.limiter.quotas.len()
    }

    /// Whether the shared [`Store`](super::Store) is down right now, so the limiter fails open
    /// or closed (`false` without a store).
    pub fn store_down(&self) -> bool {
        self.limiter
            .store
            .as_ref()
            .is_some_and(|s| s.store.is_down())
    }

    /// Pauses every admission of every quota for `duration` (as a 429 with a hint does).
    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        self.limiter.quotas.each(|p| p.lock().pause_until(until));
    }
}

/// The first setting outside the runtime limits that differs between `built` and `asked`.
fn fixed_field_changed(built: &LimitConfig, asked: &LimitConfig) -> Option<&'static str> {
    let (b, a) = (Settings::from(built), Settings::from(asked));
    [
        ("max_wait", b.max_wait != a.max_wait),
        ("max_queue", b.max_queue != a.max_queue),
        ("learn_from_provider", b.learn != a.learn),
        ("adopt_provider_limits", b.adopt_limits != a.adopt_limits),
        ("slow_wait", b.slow_wait != a.slow_wait),
        ("max_pause", b.max_pause != a.max_pause),
        (
            "sum_token_estimate",
            built.sum_token_estimate != asked.sum_token_estimate,
        ),
        // The days already counted keep their reset time.
        ("day_starts_at", built.day_starts_at != asked.day_starts_at),
        // Each quota's queue took its lanes' share when it was made.
        (
            "low_lane_share",
            built.low_lane_share != asked.low_lane_share,
        ),
    ]
    .into_iter()
    .find_map(|(field, changed)| changed.then_some(field))
}
