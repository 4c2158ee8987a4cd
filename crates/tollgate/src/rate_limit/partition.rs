//! One quota as the limiter shares it: its [`Quota`] arithmetic, its [`Queue`] of waiters and
//! its adaptive controller behind one lock, and the flags read without the lock.
//!
//! Admission checks every limit and takes from all of them under the same lock. Learning from
//! the provider's answers lives in `learn.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::{Adaptive, Controller};
use super::bucket::Bucket;
use super::limits::adaptive_bucket_rate;
use super::limits::Limits;
use super::queue::Queue;
use super::quota::{Blocked, Quota};
use super::shared::SharedQuota;
use crate::classify::LimitKind;

/// How a queued waiter at the head of the queue proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Admitted by the local buckets; whether a concurrency permit was taken.
    Taken(bool),
    /// The local bounds allow: ask the store, then [`State::admit_head`].
    AskStore,
}

/// What the lock guards.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) quota: Quota,
    pub(crate) queue: Queue,
    pub(crate) adaptive: Option<Controller>,
}

#[derive(Debug)]
pub(crate) struct Partition {
    state: Mutex<State>,
    /// The limiter's name, for metrics labels.
    pub(crate) name: Option<std::sync::Arc<str>>,
    /// Whether the request rate adapts (fixed when the quota is created), readable without
    /// the lock so that a success on a non-adaptive quota takes no lock at all.
    pub(crate) adaptive: bool,
    /// The quota's place in a shared store, if the limiter has one.
    pub(crate) shared: Option<SharedQuota>,
    /// Whether requests must be costed: a token limit is configured or was adopted from the
    /// provider's headers. Read without the lock on every call.
    pub(crate) charges_tokens: AtomicBool,
    /// Whether the adaptive rate is settled, so that a success changes nothing and takes no
    /// lock (see `Controller::settled`); written under the lock whenever the controller changes.
    pub(crate) settled: AtomicBool,
}

impl Partition {
    pub(crate) fn new(
        limits: &Limits,
        name: Option<std::sync::Arc<str>>,
        shared: Option<SharedQuota>,
        now: Instant,
    ) -> Self {
        let local = local_limits(shared.as_ref(), limits);
        // The adaptive mode is about the request rate: it adapts below a configured request
        // limit, or finds one when no limit is configured at all. A token limit or a
        // concurrency bound alone is what the user knows; the request rate then stays
        // unlimited (learning from headers).
        let told_nothing = local.tokens.is_none() && local.concurrency.is_none();
        let adapts = local.requests.is_some() || told_nothing;
        let adaptive = local.adaptive.filter(|_| adapts).map(|settings| {
            let configured = local.requests.map(|rate| rate.per_sec());
            let settings = Adaptive {
                ceiling: settings.ceiling.or(configured),
                ..settings
            };
            Controller::new(settings, configured, now)
        });
        // An adaptive limit with no configured rate starts at the controller's initial rate.
        let adaptive_start = adaptive
            .as_ref()
            .map(Controller::rate)
            .filter(|_| local.requests.is_none())
            .map(|per_sec| Bucket::new(adaptive_bucket_rate(per_sec, None), local.headroom, now));
        Partition {
            name,
            charges_tokens: AtomicBool::new(local.tokens.is_some()),
            settled: AtomicBool::new(adaptive.as_ref().is_some_and(Controller::settled)),
            adaptive: adaptive.is_some(),
            shared,
            state: Mutex::new(State {
                quota: Quota::new(*limits, &local, adaptive_start, now),
                queue: Queue::default(),
                adaptive,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything can panic, so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the limits (see
    /// [`RateLimitHandle::set_limits`](super::RateLimitHandle::set_limits)).
    pub(crate) fn reconfigure(&self, limits: &Limits, now: Instant) {
        let local = local_limits(self.shared.as_ref(), limits);
        self.charges_tokens
            .store(limits.tokens.is_some(), Ordering::Relaxed);
        let mut state = self.lock();
        state.quota.reconfigure(limits, &local, now);
        state.queue.wake_head();
    }

    /// Returns a concurrency permit and wakes the head of the queue.
    pub(crate) fn release(&self) {
        let mut state = self.lock();
        state.quota.release();
        state.queue.wake_head();
    }
}

impl State {
    /// Takes from every limit for a request of `cost`; returns whether a concurrency permit
    /// was taken.
    fn take(&mut self, cost: u64, now: Instant) -> bool {
        if let Some(controller) = &mut self.adaptive {
            controller.sent(now);
        }
        self.quota.take(cost, now)
    }

    /// The fast path: admits at once when nobody is queued and every limit allows. Returns
    /// `None` when the request must queue, else whether a concurrency permit was taken.
    pub(crate) fn try_admit_now(&mut self, cost: u64, now: Instant) -> Option<bool> {
        // With others queued, FIFO order says join the queue behind them.
        if !self.queue.is_empty() || self.quota.check(cost, (0, 0), true, now).is_err() {
            return None;
        }
        Some(self.take(cost, now))
    }

    /// How long a new request of `cost` would wait behind the queue (for the max-wait bound).
    pub(crate) fn estimated_wait(
        &mut self,
        cost: u64,
        now: Instant,
    ) -> Option<(Duration, LimitKind)> {
        match self.quota.check(cost, self.queue.ahead(), true, now) {
            Ok(()) | Err(Blocked::Concurrency) => None,
            Err(Blocked::For(wait, which)) => Some((wait, which)),
        }
    }

    /// Whether waiter `id` is at the head of the queue.
    pub(crate) fn is_head(&self, id: u64) -> bool {
        self.queue.position(id) == Some(0)
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn enqueue(&mut self, cost: u64, waker: Waker) -> u64 {
        self.queue.push(cost, waker)
    }

    /// For a queued waiter: admits it if it is at the head and every limit allows (or, with
    /// `ask_store`, says to ask the store), else says what it waits for (and keeps its waker).
    pub(crate) fn poll_queued(
        &mut self,
        id: u64,
        waker: &Waker,
        ask_store: bool,
        now: Instant,
    ) -> Result<Admit, Option<Blocked>> {
        let Some(position) = self.queue.position(id) else {
            return Err(None);
        };
        let (0, Some(cost)) = (position, self.queue.head_cost()) else {
            self.queue.set_waker(position, waker);
            return Err(None);
        };
        match self.quota.check(cost, (0, 0), !ask_store, now) {
            Ok(()) if ask_store => Ok(Admit::AskStore),
            Ok(()) => {
                self.queue.remove(id);
                let permit = self.take(cost, now);
                self.queue.wake_head();
                Ok(Admit::Taken(permit))
            }
            Err(blocked) => {
                self.queue.set_waker(0, waker);
                Err(Some(blocked))
            }
        }
    }

    /// The store admitted the head of the queue: it leaves the queue with a concurrency permit
    /// if one is needed, and the next waiter's turn begins.
    pub(crate) fn admit_head(&mut self, id: u64) -> bool {
        self.queue.remove(id);
        let permit = self.quota.take_permit();
        self.queue.wake_head();
        permit
    }

    /// Removes a cancelled waiter; its place (and its claim on the tokens) goes to the next.
    pub(crate) fn cancel(&mut self, id: u64) {
        if self.queue.remove(id) == Some(0) {
            self.queue.wake_head();
        }
    }

    /// Pauses every admission until `until` (a 429 with a wait hint).
    pub(crate) fn pause_until(&mut self, until: Instant) {
        if self.quota.pause_until(until) {
            // The head's timer must move later; it recomputes when woken.
            self.queue.wake_head();
        }
    }

    /// Whether dropping this partition loses nothing: no one waiting or in flight, no pause,
    /// and every bucket full (a new partition would start the same).
    pub(crate) fn is_idle(&mut self, now: Instant) -> bool {
        self.queue.is_empty() && self.quota.is_at_rest(now)
    }

    pub(crate) fn snapshot(&mut self, now: Instant) -> Snapshot {
        let (requests_available, tokens_available, in_flight, paused_for) = self.quota.levels(now);
        Snapshot {
            requests_available,
            tokens_available,
            in_flight,
            queued: self.queue.len(),
            paused_for,
            adaptive_rate: self.adaptive_rate(),
        }
    }
}

/// The limits the local buckets hold: all of them, or with a store (where they only stand in
/// while it is down) this process's fair share.
fn local_limits(shared: Option<&SharedQuota>, limits: &Limits) -> Limits {
    shared.map_or(*limits, |s| s.store.fair_share(limits))
}

/// What a quota looks like right now, from
/// [`RateLimitHandle::snapshot`](super::RateLimitHandle::snapshot).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Requests that could be admitted now (`None`: no request limit).
    pub requests_available: Option<u64>,
    /// Tokens that could be spent now (`None`: no token limit).
    pub tokens_available: Option<u64>,
    /// Requests holding a concurrency permit.
    pub in_flight: u32,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// How long admissions stay paused after a 429, if they are.
    pub paused_for: Option<Duration>,
    /// The adaptive request rate per second (`None` when the limit does not adapt).
    pub adaptive_rate: Option<f64>,
}
