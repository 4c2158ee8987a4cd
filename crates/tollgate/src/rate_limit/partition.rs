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
use super::quota::{Blocked, Corrections, Demand, Held, Holds, Outcome, Quota};
use super::shared::SharedQuota;
use super::store::StoreHold;
use crate::classify::LimitKind;

/// How a queued waiter at the head of the queue proceeds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Admitted by the local buckets: whether a concurrency permit was taken, and what the
    /// token limits hold.
    Taken(bool, Held),
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
        let told_nothing = !local.charges_tokens() && local.concurrency.is_none();
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
            charges_tokens: AtomicBool::new(local.charges_tokens()),
            settled: AtomicBool::new(adaptive.as_ref().is_some_and(Controller::settled)),
            adaptive: adaptive.is_some(),
            shared,
            state: Mutex::new(State {
                quota: Quota::new(*limits, &local, adaptive_start, now),
                queue: Queue::new(limits.low_lane_share),
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
            .store(limits.charges_tokens(), Ordering::Relaxed);
        let mut state = self.lock();
        state.quota.reconfigure(limits, &local, now);
        state.queue.wake_head();
    }

    /// Settles what an attempt's admission held to how it ended; a refund may let the head of
    /// the queue go.
    pub(crate) fn settle(&self, holds: &Holds, outcome: Outcome) -> Corrections {
        let mut state = self.lock();
        if let Some(shared) = &self.shared {
            // What the store held is settled in the store, without waiting for its answer.
            let (input, output, combined) = state.quota.used(holds, outcome);
            let charged = &state.quota.charged;
            for hold in holds.stored.iter().flatten() {
                let (rate, used) = match hold.which {
                    LimitKind::InputTokens => (charged.input_tokens, input),
                    LimitKind::OutputTokens => (charged.output_tokens, output),
                    _ => (None, combined),
                };
                if let Some(used) = used {
                    shared.settle(rate, *hold, used);
                }
            }
        }
        let corrections = state.quota.settle(holds, outcome, Instant::now());
        if corrections != Corrections::default() {
            state.queue.wake_head();
        }
        corrections
    }

    /// Returns a concurrency permit and wakes the head of the queue.
    pub(crate) fn release(&self) {
        let mut state = self.lock();
        state.quota.release();
        state.queue.wake_head();
    }
}

impl State {
    /// Takes from every limit for a request of `demand` (only the local bounds when the store
    /// took from the buckets); returns whether a concurrency permit was taken and the holds.
    fn take(&mut self, demand: &Demand, buckets: bool, now: Instant) -> (bool, Held) {
        if let Some(controller) = &mut self.adaptive {
            controller.sent(now);
        }
        self.quota.take(demand, buckets, now)
    }

    /// The fast path: admits at once when nobody is queued and every limit allows. Returns
    /// `Ok(None)` when the request must queue, else whether a concurrency permit was taken and
    /// the holds; a spent daily quota is `Err((time until it resets, which))`.
    pub(crate) fn try_admit_now(
        &mut self,
        demand: &Demand,
        now: Instant,
    ) -> Result<Option<(bool, Held)>, (Duration, LimitKind)> {
        // With others queued, FIFO order says join the queue behind them.
        let ahead = (0, Demand::default());
        match self.quota.check(demand, ahead, true, now) {
            Err(Blocked::Daily(resets_in, which)) => Err((resets_in, which)),
            Ok(()) if self.queue.is_empty() => Ok(Some(self.take(demand, true, now))),
            _ => Ok(None),
        }
    }

    /// How long a new request of `demand` in `lane` would wait behind the queue (for the
    /// max-wait bound).
    pub(crate) fn estimated_wait(
        &mut self,
        demand: &Demand,
        lane: u8,
        now: Instant,
    ) -> Option<(Duration, LimitKind)> {
        match self.quota.check(demand, self.queue.ahead(lane), true, now) {
            Ok(()) | Err(Blocked::Concurrency) => None,
            Err(Blocked::For(wait, which) | Blocked::Daily(wait, which)) => Some((wait, which)),
        }
    }

    /// Whether waiter `id` is at the head of the queue.
    pub(crate) fn is_head(&self, id: u64) -> bool {
        self.queue.is_head(id)
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn enqueue(
        &mut self,
        demand: Demand,
        lane: u8,
        tenant: Option<(std::sync::Arc<str>, u32)>,
        waker: Waker,
    ) -> u64 {
        self.queue.push(demand, lane, tenant, waker)
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
        if !self.queue.contains(id) {
            return Err(None);
        }
        let (true, Some(demand)) = (self.queue.is_head(id), self.queue.head_demand()) else {
            self.queue.set_waker(id, waker);
            return Err(None);
        };
        match self
            .quota
            .check(&demand, (0, Demand::default()), !ask_store, now)
        {
            Ok(()) if ask_store => Ok(Admit::AskStore),
            Ok(()) => {
                self.queue.admit(id);
                let (permit, holds) = self.take(&demand, true, now);
                self.queue.wake_head();
                Ok(Admit::Taken(permit, holds))
            }
            Err(blocked @ Blocked::Daily(..)) => {
                // A spent daily quota refuses the head, and with it the next in turn.
                self.queue.remove(id);
                self.queue.wake_head();
                Err(Some(blocked))
            }
            Err(blocked) => {
                self.queue.set_waker(id, waker);
                Err(Some(blocked))
            }
        }
    }

    /// The store admitted the head of the queue: it leaves the queue with a concurrency permit
    /// if one is needed (and its share of the local daily counts), and the next waiter's turn
    /// begins.
    pub(crate) fn admit_head(
        &mut self,
        id: u64,
        stored: [Option<StoreHold>; 3],
        now: Instant,
    ) -> (bool, Held) {
        let demand = self.queue.head_demand().unwrap_or(Demand::ONE);
        self.queue.admit(id);
        let (permit, _) = self.take(&demand, false, now);
        self.queue.wake_head();
        (permit, Holds::stored(demand.estimate, stored))
    }

    /// Removes a cancelled waiter; its place (and its claim on the tokens) goes to the next.
    pub(crate) fn cancel(&mut self, id: u64) {
        if self.queue.remove(id) {
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
        let levels = self.quota.levels(now);
        Snapshot {
            requests_available: levels.requests,
            tokens_available: levels.tokens,
            input_tokens_available: levels.input_tokens,
            output_tokens_available: levels.output_tokens,
            requests_left_today: levels.requests_today.map(|(left, _)| left),
            tokens_left_today: levels.tokens_today.map(|(left, _)| left),
            day_resets_in: levels
                .requests_today
                .or(levels.tokens_today)
                .map(|(_, resets_in)| resets_in),
            in_flight: levels.in_flight,
            queued: self.queue.len(),
            paused_for: levels.paused_for,
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
    /// Tokens that could be spent now against the combined limit (`None`: no such limit).
    pub tokens_available: Option<u64>,
    /// Input tokens that could be spent now (`None`: no input limit).
    pub input_tokens_available: Option<u64>,
    /// Output tokens that could be reserved now (`None`: no output limit).
    pub output_tokens_available: Option<u64>,
    /// Requests left today (`None`: no daily request quota).
    pub requests_left_today: Option<u64>,
    /// Tokens left today (`None`: no daily token quota).
    pub tokens_left_today: Option<u64>,
    /// Time until the daily quotas reset (`None`: no daily quota).
    pub day_resets_in: Option<Duration>,
    /// Requests holding a concurrency permit.
    pub in_flight: u32,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// How long admissions stay paused after a 429, if they are.
    pub paused_for: Option<Duration>,
    /// The adaptive request rate per second (`None` when the limit does not adapt).
    pub adaptive_rate: Option<f64>,
}
