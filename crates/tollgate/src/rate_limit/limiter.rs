//! The shared state of one [`RateLimitLayer`](super::RateLimitLayer): its quotas by key, its
//! settings, and the [`RateLimitHandle`] that reads and changes them at runtime.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::limits::Limits;
use super::partition::{Partition, Snapshot};
use super::shared::{SharedQuota, SharedStore};
use crate::key::Registry;
use crate::ConfigError;

/// How waiting is bounded and whether the limiter learns from the provider.
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

/// A store shared with other processes, and how this limiter's keys are named in it.
pub(crate) struct StoreSettings {
    pub(crate) store: Arc<SharedStore>,
    /// `None` when the key changed after the store was set (a build error).
    pub(crate) name_of: Option<fn(&dyn std::any::Any) -> Option<String>>,
}

impl StoreSettings {
    /// The place in the store of the quota named `quota`.
    fn quota(&self, quota: &str) -> SharedQuota {
        SharedQuota {
            store: Arc::clone(&self.store),
            quota: Arc::from(quota),
        }
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Limiter<K> {
    pub(crate) settings: Settings,
    name: Option<Arc<str>>,
    limits: Mutex<Limits>,
    default: Arc<Partition>,
    keyed: Mutex<Registry<K, Partition>>,
    store: Option<StoreSettings>,
}

impl<K> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("settings", &self.settings)
            .field("limits", &*lock(&self.limits))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Hash + Eq + Clone + 'static> Limiter<K> {
    pub(crate) fn new(
        limits: Limits,
        settings: Settings,
        name: Option<Arc<str>>,
        store: Option<StoreSettings>,
    ) -> Self {
        let shared = store.as_ref().map(|s| s.quota("default"));
        Limiter {
            settings,
            name: name.clone(),
            default: Arc::new(Partition::new(&limits, name, shared, Instant::now())),
            limits: Mutex::new(limits),
            keyed: Mutex::new(Registry::new()),
            store,
        }
    }

    /// The quota for `key` (the default one for `None`), created on first use.
    pub(crate) fn partition(&self, key: Option<K>) -> Arc<Partition> {
        let Some(key) = key else {
            return Arc::clone(&self.default);
        };
        let now = Instant::now();
        let limits = *lock(&self.limits);
        // A quota that is idle and full again is the same as a new one: dropping it loses nothing.
        lock(&self.keyed).get_or_insert(
            key,
            |key| {
                let shared = self.store.as_ref().map(|s| {
                    let name = s.name_of.and_then(|name_of| name_of(key));
                    s.quota(name.as_deref().unwrap_or_default())
                });
                Partition::new(&limits, self.name.clone(), shared, now)
            },
            |partition| partition.lock().is_idle(now),
        )
    }

    fn each_partition(&self, mut f: impl FnMut(&Partition)) {
        f(&self.default);
        for partition in lock(&self.keyed).values() {
            f(partition);
        }
    }
}

/// Reads and changes a rate limiter at runtime, shared with every service the layer builds.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tollgate::rate_limit::{Limits, Rate};
/// use tollgate::RateLimitLayer;
///
/// let layer = RateLimitLayer::builder().requests(Rate::per_minute(500)).build().unwrap();
/// let handle = layer.handle();
/// // The account moved to a higher tier: no rebuild, no over-admission during the change.
/// handle.set_limits(Limits { requests: Some(Rate::per_minute(5_000)), ..Limits::default() }).unwrap();
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

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        *lock(&self.limiter.limits)
    }

    /// Changes the limits of every quota. Available tokens never grow beyond the new capacity,
    /// so the change cannot over-admit; waiters are re-examined at once.
    pub fn set_limits(&self, limits: Limits) -> Result<(), ConfigError> {
        limits.validate()?;
        *lock(&self.limiter.limits) = limits;
        let now = Instant::now();
        self.limiter.each_partition(|p| p.reconfigure(&limits, now));
        Ok(())
    }

    /// The default quota right now.
    pub fn snapshot(&self) -> Snapshot {
        self.limiter.default.lock().snapshot(Instant::now())
    }

    /// The quota of `key` right now, if it exists.
    pub fn snapshot_of(&self, key: &K) -> Option<Snapshot> {
        let partition = lock(&self.limiter.keyed).get(key).cloned()?;
        let snapshot = partition.lock().snapshot(Instant::now());
        Some(snapshot)
    }

    /// How many keyed quotas are held (idle ones are dropped as new keys arrive).
    pub fn keys(&self) -> usize {
        lock(&self.limiter.keyed).len()
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
        self.limiter.each_partition(|p| p.lock().pause_until(until));
    }
}
