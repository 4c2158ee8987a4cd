//! [`RetryBudget`]: retries may add at most a share of the traffic, plus a small floor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;

/// Bounds retries to a share of recent traffic, shared by every clone of the service.
///
/// Over a sliding window (`ttl`, in ten slots), a retry is allowed while
/// `retries < min_per_sec * ttl + ratio * requests`. This is Finagle's and Linkerd's budget
/// (tower's `TpsBudget`): during an outage the retries stop adding load once they reach `ratio`
/// of it, instead of multiplying it by the number of attempts.
///
/// The success path costs one relaxed atomic increment; the window is only examined when a retry
/// is wanted.
///
/// ```
/// use std::time::Duration;
/// use tollgate::retry::RetryBudget;
///
/// // At most 20% extra load, and 10 retries per second whatever the traffic.
/// let budget = RetryBudget::new(Duration::from_secs(10), 10, 0.2).unwrap();
/// assert!(RetryBudget::new(Duration::from_secs(10), 10, 1.5).is_err());
/// # let _ = budget;
/// ```
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    ttl: Duration,
    min_per_sec: u32,
    ratio: f64,
    requests: AtomicU64,
    window: Mutex<Window>,
}

const SLOTS: usize = 10;

#[derive(Debug)]
struct Window {
    /// Start of the newest slot.
    newest: Instant,
    /// Index of the newest slot in the ring.
    head: usize,
    /// For each slot, the request counter when it started and the retries it allowed.
    slots: [(u64, u32); SLOTS],
}

impl RetryBudget {
    /// A budget over `ttl` (1 to 60 s) allowing `min_per_sec` retries per second plus `ratio`
    /// (0.0 to 1.0) of the requests.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f64) -> Result<Self, ConfigError> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(ConfigError::new(
                "budget.ttl",
                format!("must be between 1s and 60s, got {ttl:?}"),
            ));
        }
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::new(
                "budget.ratio",
                format!("must be between 0.0 and 1.0 (a share of requests), got {ratio}"),
            ));
        }
        Ok(Self::new_unchecked(ttl, min_per_sec, ratio))
    }

    fn new_unchecked(ttl: Duration, min_per_sec: u32, ratio: f64) -> Self {
        RetryBudget {
            inner: Arc::new(BudgetInner {
                ttl,
                min_per_sec,
                ratio,
                requests: AtomicU64::new(0),
                window: Mutex::new(Window {
                    newest: Instant::now(),
                    head: 0,
                    slots: [(0, 0); SLOTS],
                }),
            }),
        }
    }

    /// Records a first attempt: it earns `ratio` of a retry.
    pub fn deposit(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        let requests_now = inner.requests.load(Ordering::Relaxed);
        let mut window = inner.window.lock().unwrap_or_else(|p| p.into_inner());
        window.advance(Instant::now(), inner.ttl / SLOTS as u32, requests_now);
        let oldest = window.slots[(window.head + 1) % SLOTS].0;
        let requests = requests_now.saturating_sub(oldest) as f64;
        let retries: u64 = window.slots.iter().map(|(_, r)| u64::from(*r)).sum();
        let allowance =
            f64::from(inner.min_per_sec) * inner.ttl.as_secs_f64() + inner.ratio * requests;
        if (retries as f64) + 1.0 > allowance {
            return false;
        }
        let head = window.head;
        window.slots[head].1 += 1;
        true
    }
}

impl Default for RetryBudget {
    /// Finagle's defaults: 10 s window, 10 retries per second, 20% of requests.
    fn default() -> Self {
        RetryBudget::new_unchecked(Duration::from_secs(10), 10, 0.2)
    }
}

impl Window {
    fn advance(&mut self, now: Instant, slot: Duration, requests_now: u64) {
        let mut steps = 0;
        while now.saturating_duration_since(self.newest) >= slot && steps < SLOTS {
            self.newest += slot;
            self.head = (self.head + 1) % SLOTS;
            self.slots[self.head] = (requests_now, 0);
            steps += 1;
        }
        if now.saturating_duration_since(self.newest) >= slot {
            // Idle for longer than the window: every slot is stale.
            self.newest = now;
        }
    }
}
