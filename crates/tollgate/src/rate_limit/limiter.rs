//! The shared state of one [`RateLimitLayer`](super::RateLimitLayer): its quotas by key and its
//! settings.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::config::LimitConfig;
use super::partition::Partition;
use super::shared::StoreSettings;
use crate::key::Keyed;

/// The settings every admission reads, taken from the [`LimitConfig`] once (they do not change
/// at runtime; the limits do).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) max_wait: Option<Duration>,
    pub(crate) max_queue: Option<usize>,
    pub(crate) learn: bool,
    pub(crate) adopt_limits: bool,
    pub(crate) slow_wait: Duration,
    /// The longest 429 hint that pauses a fixed quota (the retry layer's ceiling): a longer one
    /// is a quota that resets in hours, which the retry layer gives up on.
    pub(crate) max_pause: Duration,
}

impl From<&LimitConfig> for Settings {
    fn from(config: &LimitConfig) -> Self {
        Settings {
            max_wait: config.max_wait,
            max_queue: config.max_queue,
            learn: config.learn_from_provider,
            adopt_limits: config.adopt_provider_limits,
            slow_wait: config.slow_wait,
            max_pause: config.max_pause,
        }
    }
}

pub(crate) struct Limiter<K> {
    pub(crate) settings: Settings,
    name: Option<Arc<str>>,
    /// The configuration in force: the one built, with the limits the handle last set.
    pub(crate) config: Mutex<LimitConfig>,
    pub(crate) quotas: Keyed<K, Partition>,
    pub(crate) store: Option<StoreSettings>,
}

impl<K> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("settings", &self.settings)
            .field("config", &*lock(&self.config))
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Hash + Eq + Clone + 'static> Limiter<K> {
    pub(crate) fn new(
        config: LimitConfig,
        name: Option<Arc<str>>,
        store: Option<StoreSettings>,
    ) -> Self {
        let shared = store.as_ref().map(|s| s.quota("default"));
        let limits = config.limits();
        Limiter {
            settings: Settings::from(&config),
            quotas: Keyed::new(Partition::new(
                &limits,
                name.clone(),
                shared,
                Instant::now(),
            )),
            name,
            config: Mutex::new(config),
            store,
        }
    }

    /// The quota for `key` (the default one for `None`), created on first use.
    pub(crate) fn partition(&self, key: Option<K>, now: Instant) -> Arc<Partition> {
        // A quota that is idle and full again is the same as a new one: dropping it loses nothing.
        self.quotas.get(
            key,
            |key| {
                let shared = self.store.as_ref().map(|s| {
                    let name = s.name_of.and_then(|name_of| name_of(key));
                    s.quota(name.as_deref().unwrap_or_default())
                });
                // The handle never holds this lock while it walks the quotas.
                let limits = lock(&self.config).limits();
                Partition::new(&limits, self.name.clone(), shared, now)
            },
            |partition| partition.lock().is_idle(now),
        )
    }
}
