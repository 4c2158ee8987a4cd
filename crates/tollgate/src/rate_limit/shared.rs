//! The limiter's side of a [`Store`]: which admissions go to it, and the switch to local
//! buckets (or to refusals) while it is down, logged once each way.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::limits::{Limits, Rate};
use super::store::{OnStoreError, Store, StoreError, StoreFuture, StoreHold};
use crate::classify::LimitKind;

/// While the store is down, one admission per this interval tries it again.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Where one admission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Ask the store.
    Store,
    /// The store is down and the policy fails open: the local fair-share buckets decide.
    Local,
    /// The store is down and the policy fails closed: refuse without a round trip.
    Refuse,
}

#[derive(Debug)]
struct Health {
    down_since: Option<Instant>,
    next_probe: Instant,
}

/// A store shared by every quota of one limiter.
#[derive(Debug)]
pub(crate) struct SharedStore {
    pub(crate) store: Box<dyn Store>,
    pub(crate) on_error: OnStoreError,
    health: Mutex<Health>,
}

impl SharedStore {
    pub(crate) fn new(store: Box<dyn Store>, on_error: OnStoreError) -> Self {
        SharedStore {
            store,
            on_error,
            health: Mutex::new(Health {
                down_since: None,
                next_probe: Instant::now(),
            }),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where an admission at `now` goes: to the store unless it is down and not due a probe.
    pub(crate) fn route(&self, now: Instant) -> Route {
        let mut health = self.health();
        if health.down_since.is_none() || now >= health.next_probe {
            // This admission is the probe; the others keep the fallback until it answers.
            health.next_probe = now + PROBE_EVERY;
            return Route::Store;
        }
        match self.on_error {
            OnStoreError::FailOpen { .. } => Route::Local,
            OnStoreError::FailClosed => Route::Refuse,
        }
    }

    /// The store answered: back to it if it was down.
    pub(crate) fn answered(&self, now: Instant) {
        let mut health = self.health();
        if let Some(since) = health.down_since.take() {
            tracing::info!(
                down_ms = (now - since).as_millis() as u64,
                "rate-limit store answers again: admissions go through the shared quota"
            );
        }
    }

    /// The store failed: switch to the fallback (logged once per outage).
    pub(crate) fn failed(&self, error: &StoreError, now: Instant) {
        let mut health = self.health();
        health.next_probe = now + PROBE_EVERY;
        if health.down_since.is_none() {
            health.down_since = Some(now);
            match self.on_error {
                OnStoreError::FailOpen { processes } => tracing::warn!(
                    %error,
                    processes,
                    "rate-limit store unreachable: failing open on this process's fair share"
                ),
                OnStoreError::FailClosed => tracing::warn!(
                    %error,
                    "rate-limit store unreachable: failing closed, requests are refused"
                ),
            }
        }
    }

    /// Whether the store is down right now.
    pub(crate) fn is_down(&self) -> bool {
        self.health().down_since.is_some()
    }

    /// The limits of the local fallback buckets: each limit divided among the processes.
    pub(crate) fn fair_share(&self, limits: &Limits) -> Limits {
        let OnStoreError::FailOpen { processes } = self.on_error else {
            return *limits;
        };
        let share = |rate: Rate| Rate {
            amount: rate.amount,
            interval: rate.interval.saturating_mul(processes.max(1)),
            capacity: (rate.capacity / u64::from(processes.max(1))).max(1),
            default_burst: false,
        };
        let day = |allowance: u64| (allowance / u64::from(processes.max(1))).max(1);
        Limits {
            requests: limits.requests.map(share),
            tokens: limits.tokens.map(share),
            input_tokens: limits.input_tokens.map(share),
            output_tokens: limits.output_tokens.map(share),
            requests_per_day: limits.requests_per_day.map(day),
            tokens_per_day: limits.tokens_per_day.map(day),
            ..*limits
        }
    }
}

/// A quota's place in the store: the store and the quota's name there.
#[derive(Debug, Clone)]
pub(crate) struct SharedQuota {
    pub(crate) store: Arc<SharedStore>,
    pub(crate) quota: Arc<str>,
}

impl SharedQuota {
    /// Pauses the quota in the store for every process, without waiting for the answer.
    pub(crate) fn pause(&self, duration: Duration) {
        tell(self.store.store.pause(&self.quota, duration));
    }

    /// Settles a charge the store held, without waiting for the answer.
    pub(crate) fn settle(&self, rate: Option<Rate>, hold: StoreHold, used: u64) {
        tell(self.store.store.settle(&self.quota, rate, hold, used));
    }

    /// Lowers the store's bucket for `which` to `remaining`, without waiting for the answer.
    pub(crate) fn lower(&self, which: LimitKind, rate: Rate, remaining: u64) {
        tell(self.store.store.lower(&self.quota, which, rate, remaining));
    }
}

/// Sends `call` to the store without waiting for it (a failure is logged, not fatal: the
/// store's own buckets still hold). Outside a runtime it is dropped, never a panic.
fn tell(call: StoreFuture<()>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(error) = call.await {
                tracing::debug!(%error, "could not tell the rate-limit store");
            }
        });
    }
}

/// A store shared with other processes, and how this limiter's keys are named in it.
pub(crate) struct StoreSettings {
    pub(crate) store: Arc<SharedStore>,
    /// `None` when the key changed after the store was set (a build error).
    pub(crate) name_of: Option<fn(&dyn std::any::Any) -> Option<String>>,
}

impl StoreSettings {
    /// The place in the store of the quota named `quota`.
    pub(crate) fn quota(&self, quota: &str) -> SharedQuota {
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
