//! One quota: the buckets, the concurrency count and the FIFO queue of waiters behind one lock.
//!
//! Admission checks every limit and takes from all of them under the same lock, so a request
//! kept waiting by one limit consumes nothing from the others. Only the head of the queue holds
//! a timer, set for the instant its tokens are due; when it is admitted it wakes the next waiter,
//! which computes its own instant. Nobody polls in a loop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::{Change, Controller};
use super::bucket::Bucket;
use super::limits::Limits;
use super::limits::Rate;
use super::shared::SharedQuota;
use super::store::Charge;
use crate::classify::{LimitKind, RateLimitState};

/// Why a request cannot be admitted right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// A bucket (or a pause) frees up after this long.
    For(Duration, LimitKind),
    /// All concurrency permits are held; a release wakes the queue.
    Concurrency,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    cost: u64,
    waker: Option<Waker>,
}

/// How a queued waiter at the head of the queue proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Admitted by the local buckets; whether a concurrency permit was taken.
    Taken(bool),
    /// The local bounds allow: ask the store, then [`State::admit_head`].
    AskStore,
}

#[derive(Debug)]
pub(crate) struct State {
    /// The full limits, charged in the store (the local buckets may hold a fair share).
    charged: Limits,
    adaptive: Option<Controller>,
    /// The configured request rate the adaptive mode scales (its burst shrinks and grows with
    /// the rate adopted).
    configured_requests: Option<Rate>,
    headroom: Duration,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    concurrency: Option<u32>,
    in_flight: u32,
    paused_until: Option<Instant>,
    queue: VecDeque<Waiter>,
    queued_tokens: u64,
    next_id: u64,
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
        let charged = *limits;
        let local = local_limits(shared.as_ref(), limits);
        let limits = &local;
        let bucket = |rate| Bucket::new(rate, limits.headroom, now);
        // The adaptive mode is about the request rate: it adapts below a configured request
        // limit, or finds one when no limit is configured at all. A token limit or a
        // concurrency bound alone is what the user knows; the request rate then stays
        // unlimited (learning from headers).
        let told_nothing = limits.tokens.is_none() && limits.concurrency.is_none();
        let adapts = limits.requests.is_some() || told_nothing;
        let adaptive = limits.adaptive.filter(|_| adapts).map(|settings| {
            let configured = limits.requests.map(|rate| rate.per_sec());
            let settings = super::Adaptive {
                ceiling: settings.ceiling.or(configured),
                ..settings
            };
            Controller::new(settings, configured, now)
        });
        // An adaptive limit with no configured rate starts at the controller's initial rate.
        let adaptive_start = adaptive
            .as_ref()
            .map(Controller::rate)
            .filter(|_| limits.requests.is_none())
            .map(|per_sec| bucket(adaptive_bucket_rate(per_sec, None)));
        Partition {
            name,
            charges_tokens: AtomicBool::new(limits.tokens.is_some()),
            settled: AtomicBool::new(adaptive.as_ref().is_some_and(Controller::settled)),
            adaptive: adaptive.is_some(),
            shared,
            state: Mutex::new(State {
                charged,
                adaptive,
                configured_requests: limits.requests,
                headroom: limits.headroom,
                requests: limits.requests.map(bucket).or(adaptive_start),
                tokens: limits.tokens.map(bucket),
                concurrency: limits.concurrency,
                in_flight: 0,
                paused_until: None,
                queue: VecDeque::new(),
                queued_tokens: 0,
                next_id: 0,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything can panic, so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the limits (see [`RateLimitHandle::set_limits`](super::RateLimitHandle::set_limits)).
    pub(crate) fn reconfigure(&self, limits: &Limits, now: Instant) {
        let local = local_limits(self.shared.as_ref(), limits);
        self.charges_tokens
            .store(limits.tokens.is_some(), Ordering::Relaxed);
        self.lock().reconfigure(limits, &local, now);
    }

    /// Returns a concurrency permit and wakes the head of the queue.
    pub(crate) fn release(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.wake_head();
    }
}

impl State {
    /// Whether a request of `cost` could ever be admitted: its cost fits the token bucket.
    /// With a store, the full limit decides, not the local fair share.
    pub(crate) fn too_large(&self, cost: u64, shared: bool) -> Option<u64> {
        if shared {
            let tokens = self.charged.tokens?;
            let most = tokens.capacity.max(tokens.amount);
            return (cost > most).then_some(most);
        }
        let tokens = self.tokens.as_ref()?;
        (!tokens.fits(cost)).then_some(tokens.max_cost())
    }

    /// What to ask the store for a request of `cost`.
    pub(crate) fn charge(&self, quota: &std::sync::Arc<str>, cost: u64) -> Charge {
        Charge {
            quota: std::sync::Arc::clone(quota),
            requests: self.charged.requests,
            tokens: self.charged.tokens.map(|rate| (rate, cost)),
            headroom: self.charged.headroom,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// Checks every limit for a request of `cost` with `ahead` (requests, tokens) queued before
    /// it; with `buckets` false, only the pause and the concurrency bound (the store holds the
    /// buckets). Takes nothing.
    fn check(
        &mut self,
        cost: u64,
        ahead: (u64, u64),
        buckets: bool,
        now: Instant,
    ) -> Result<(), Blocked> {
        self.refill(now);
        let mut wait = (Duration::ZERO, LimitKind::Requests);
        if let Some(until) = self.paused_until {
            wait = (until - now, LimitKind::Paused);
        }
        if let Some(bucket) = self.requests.as_ref().filter(|_| buckets) {
            let w = bucket.wait_for(ahead.0, 1, now);
            if w > wait.0 {
                wait = (w, LimitKind::Requests);
            }
        }
        if let Some(bucket) = self.tokens.as_ref().filter(|_| buckets) {
            let w = bucket.wait_for(ahead.1, cost, now);
            if w > wait.0 {
                wait = (w, LimitKind::Tokens);
            }
        }
        if !wait.0.is_zero() {
            return Err(Blocked::For(wait.0, wait.1));
        }
        if self.concurrency.is_some_and(|max| self.in_flight >= max) {
            return Err(Blocked::Concurrency);
        }
        Ok(())
    }

    /// Takes from every limit; returns whether a concurrency permit was taken.
    fn take(&mut self, cost: u64, now: Instant) -> bool {
        if let Some(bucket) = &mut self.requests {
            bucket.take(1, now);
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.take(cost, now);
        }
        if let Some(controller) = &mut self.adaptive {
            controller.sent(now);
        }
        if self.concurrency.is_some() {
            self.in_flight += 1;
        }
        self.concurrency.is_some()
    }

    /// The fast path: admits at once when nobody is queued and every limit allows. Returns
    /// `None` when the request must queue, else whether a concurrency permit was taken.
    pub(crate) fn try_admit_now(&mut self, cost: u64, now: Instant) -> Option<bool> {
        // With others queued, FIFO order says join the queue behind them.
        if !self.queue.is_empty() || self.check(cost, (0, 0), true, now).is_err() {
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
        let ahead = (self.queue.len() as u64, self.queued_tokens);
        match self.check(cost, ahead, true, now) {
            Ok(()) | Err(Blocked::Concurrency) => None,
            Err(Blocked::For(wait, which)) => Some((wait, which)),
        }
    }

    /// Whether waiter `id` is at the head of the queue.
    pub(crate) fn is_head(&self, id: u64) -> bool {
        self.queue.front().is_some_and(|w| w.id == id)
    }

    /// Whether a token limit is in force (configured or adopted from the provider).
    pub(crate) fn has_token_limit(&self) -> bool {
        self.tokens.is_some()
    }

    /// The full limits (what a store charges).
    pub(crate) fn charged(&self) -> Limits {
        self.charged
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn enqueue(&mut self, cost: u64, waker: Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queued_tokens += cost;
        self.queue.push_back(Waiter {
            id,
            cost,
            waker: Some(waker),
        });
        id
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
        let Some(position) = self.queue.iter().position(|w| w.id == id) else {
            return Err(None);
        };
        if position > 0 {
            let slot = &mut self.queue[position];
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                slot.waker = Some(waker.clone());
            }
            return Err(None);
        }
        let cost = self.queue[0].cost;
        match self.check(cost, (0, 0), !ask_store, now) {
            Ok(()) if ask_store => Ok(Admit::AskStore),
            Ok(()) => {
                self.queue.pop_front();
                self.queued_tokens -= cost;
                let permit = self.take(cost, now);
                self.wake_head();
                Ok(Admit::Taken(permit))
            }
            Err(blocked) => {
                self.queue[0].waker = Some(waker.clone());
                Err(Some(blocked))
            }
        }
    }

    /// The store admitted the head of the queue: it leaves the queue with a concurrency permit
    /// if one is needed, and the next waiter's turn begins.
    pub(crate) fn admit_head(&mut self, id: u64) -> bool {
        if let Some(position) = self.queue.iter().position(|w| w.id == id) {
            if let Some(waiter) = self.queue.remove(position) {
                self.queued_tokens -= waiter.cost;
            }
        }
        let permit = self.concurrency.is_some();
        if permit {
            self.in_flight += 1;
        }
        self.wake_head();
        permit
    }

    /// Removes a cancelled waiter; its place (and its claim on the tokens) goes to the next.
    pub(crate) fn cancel(&mut self, id: u64) {
        if let Some(position) = self.queue.iter().position(|w| w.id == id) {
            if let Some(waiter) = self.queue.remove(position) {
                self.queued_tokens -= waiter.cost;
            }
            if position == 0 {
                self.wake_head();
            }
        }
    }

    pub(crate) fn wake_head(&mut self) {
        if let Some(waker) = self.queue.front_mut().and_then(|w| w.waker.take()) {
            waker.wake();
        }
    }

    /// Whether the adaptive controller is settled (see [`Partition::settled`]).
    pub(crate) fn adaptive_settled(&self) -> bool {
        self.adaptive.as_ref().is_some_and(Controller::settled)
    }

    /// The adaptive rate in requests per second, once known.
    pub(crate) fn adaptive_rate(&self) -> Option<f64> {
        self.adaptive.as_ref().map(Controller::rate)
    }

    /// The provider answered a request sent at `sent_at`, refusing it for its rate or not: the
    /// adaptive rate learns from it. Returns what changed.
    pub(crate) fn answered(
        &mut self,
        refused: bool,
        sent_at: Instant,
        now: Instant,
    ) -> Option<Change> {
        let backlog = !self.queue.is_empty();
        let change = self
            .adaptive
            .as_mut()?
            .answered(refused, sent_at, now, backlog)?;
        self.apply_rate(change.rate(), now);
        Some(change)
    }

    fn apply_rate(&mut self, per_sec: f64, now: Instant) {
        let rate = adaptive_bucket_rate(per_sec, self.configured_requests);
        match &mut self.requests {
            Some(bucket) => bucket.reconfigure(rate, now),
            None => {
                let mut bucket = Bucket::new(rate, self.headroom, now);
                bucket.drain(now);
                self.requests = Some(bucket);
            }
        }
        self.wake_head();
    }

    /// Pauses every admission until `until` (a 429 with a wait hint).
    pub(crate) fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
            // The head's timer must move later; it recomputes when woken.
            self.wake_head();
        }
    }

    /// A 429 without a hint: empty the request bucket so the next admission waits for a refill.
    pub(crate) fn drain_requests(&mut self, now: Instant) {
        if let Some(bucket) = &mut self.requests {
            bucket.drain(now);
        }
    }

    /// A 429 about tokens: empty the token bucket so the next admission waits for a refill.
    pub(crate) fn drain_tokens(&mut self, now: Instant) {
        if let Some(bucket) = &mut self.tokens {
            bucket.drain(now);
        }
    }

    /// Lowers the buckets to what the provider says remains, and adopts a lower limit.
    /// Returns whether anything changed.
    pub(crate) fn adapt(
        &mut self,
        server: &RateLimitState,
        adopt_limits: bool,
        now: Instant,
    ) -> bool {
        self.refill(now);
        let mut changed = false;
        let headroom = self.headroom;
        if adopt_limits {
            if let (Some(controller), Some(limit)) = (&mut self.adaptive, server.requests.limit) {
                // The provider's own word takes precedence over what the adaptive mode infers.
                if let Some(rate) = controller.cap(limit as f64 / 60.0, now) {
                    self.apply_rate(rate, now);
                    changed = true;
                }
            }
        }
        // The adaptive controller sets the request bucket's rate itself.
        let adopt_requests = adopt_limits && self.adaptive.is_none();
        let pairs = [
            (&mut self.requests, server.requests, adopt_requests),
            (&mut self.tokens, server.tokens, adopt_limits),
        ];
        for (bucket, window, adopt_limits) in pairs {
            let Some(bucket) = bucket else {
                // No limit configured here: the provider's, per minute, becomes the limit.
                if let Some(limit) = window.limit.filter(|l| adopt_limits && *l > 0) {
                    let mut adopted = Bucket::new(Rate::per_minute(limit), headroom, now);
                    if let Some(remaining) = window.remaining {
                        adopted.lower_to(remaining, now);
                    }
                    *bucket = Some(adopted);
                    changed = true;
                }
                continue;
            };
            if let Some(remaining) = window.remaining {
                if remaining < bucket.level(now) {
                    bucket.lower_to(remaining, now);
                    changed = true;
                }
            }
            if let Some(limit) = window.limit.filter(|_| adopt_limits) {
                // Providers report their limit per minute: adopt it when it is below ours.
                let rate = bucket.rate();
                if limit > 0 && (limit as f64) < rate.per_sec() * 60.0 - 0.5 {
                    let adopted = Rate::per_minute(limit).with_burst(rate.capacity.min(limit));
                    bucket.reconfigure(adopted, now);
                    changed = true;
                }
            }
        }
        changed
    }

    /// `local` is `limits` as the local buckets hold them (a fair share of them with a store).
    pub(crate) fn reconfigure(&mut self, limits: &Limits, local: &Limits, now: Instant) {
        self.charged = *limits;
        self.configured_requests = local.requests;
        let limits = local;
        reconfigure_bucket(&mut self.requests, limits.requests, limits.headroom, now);
        reconfigure_bucket(&mut self.tokens, limits.tokens, limits.headroom, now);
        self.concurrency = limits.concurrency;
        self.wake_head();
    }

    /// Whether dropping this partition loses nothing: no one waiting or in flight, no pause,
    /// and every bucket full (a new partition would start the same).
    pub(crate) fn is_idle(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.queue.is_empty()
            && self.in_flight == 0
            && self.paused_until.is_none()
            && [&self.requests, &self.tokens]
                .into_iter()
                .flatten()
                .all(|bucket| bucket.is_full(now))
    }

    pub(crate) fn snapshot(&mut self, now: Instant) -> Snapshot {
        self.refill(now);
        Snapshot {
            requests_available: self.requests.as_ref().map(|b| b.level(now)),
            tokens_available: self.tokens.as_ref().map(|b| b.level(now)),
            in_flight: self.in_flight,
            queued: self.queue.len(),
            paused_for: self.paused_until.map(|until| until - now),
            adaptive_rate: self.adaptive_rate(),
        }
    }
}

/// The limits the local buckets hold: all of them, or with a store (where they only stand in
/// while it is down) this process's fair share.
fn local_limits(shared: Option<&SharedQuota>, limits: &Limits) -> Limits {
    shared.map_or(*limits, |s| s.store.fair_share(limits))
}

/// The request bucket of an adaptive rate: a tenth of a second's worth (the default burst), or
/// the configured burst scaled by the rate adopted when that is smaller.
fn adaptive_bucket_rate(per_sec: f64, configured: Option<Rate>) -> Rate {
    // Millirequests per second, so fractional rates keep their precision.
    let amount = (per_sec * 1000.0).round().max(1.0) as u64;
    let tenth = (per_sec / 10.0).ceil();
    let capacity = match configured {
        Some(rate) => (rate.capacity as f64 * per_sec / rate.per_sec())
            .round()
            .min(tenth),
        None => tenth,
    }
    .max(1.0) as u64;
    Rate {
        amount,
        interval: Duration::from_secs(1000),
        capacity,
    }
}

fn reconfigure_bucket(
    bucket: &mut Option<Bucket>,
    rate: Option<Rate>,
    headroom: Duration,
    now: Instant,
) {
    match (bucket.as_mut(), rate) {
        (Some(b), Some(rate)) => b.reconfigure(rate, now),
        (None, Some(rate)) => *bucket = Some(Bucket::new(rate, headroom, now)),
        (_, None) => *bucket = None,
    }
}

/// What a quota looks like right now, from [`RateLimitHandle::snapshot`](super::RateLimitHandle::snapshot).
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
