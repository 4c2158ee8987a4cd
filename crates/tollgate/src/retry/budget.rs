//! The retry budget: retries may add at most a share of the traffic, plus a small floor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::config::BudgetConfig;

/// Bounds retries to a share of recent traffic, shared by every clone of the service.
///
/// Over a sliding window (`ttl`, in ten slots), a retry is allowed while
/// `retries < min_per_sec * ttl + ratio * requests`. This is Finagle's and Linkerd's budget
/// (tower's `TpsBudget`): during an outage the retries stop adding load once they reach `ratio`
/// of it, instead of multiplying it by the number of attempts.
///
/// The success path costs one relaxed atomic increment; the window is only examined when a retry
/// is wanted.
#[derive(Debug, Clone)]
pub(crate) struct RetryBudget {
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
    /// A budget with `config`'s settings (checked by the caller).
    pub(crate) fn new(config: BudgetConfig) -> Self {
        RetryBudget {
            inner: Arc::new(BudgetInner {
                ttl: config.ttl,
                min_per_sec: config.min_per_sec,
                ratio: config.ratio,
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
    pub(crate) fn deposit(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if it has one.
    pub(crate) fn try_withdraw(&self) -> bool {
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
