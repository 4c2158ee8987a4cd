//! The arithmetic of one quota: its buckets, its concurrency count and its pause after a 429.
//!
//! Pure: no queue, no lock, no learning; the caller passes `now`. A request is checked against
//! every limit at once and takes from all of them together, so one held back by a limit
//! consumes nothing from the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::bucket::Bucket;
use super::limits::{Limits, Rate};
use super::store::Charge;
use crate::classify::LimitKind;

/// Why a request cannot be admitted right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// A bucket (or a pause) frees up after this long.
    For(Duration, LimitKind),
    /// All concurrency permits are held; a release wakes the queue.
    Concurrency,
}

#[derive(Debug)]
pub(crate) struct Quota {
    /// The full limits, charged in the store (the local buckets may hold a fair share).
    pub(crate) charged: Limits,
    /// The configured request rate the adaptive mode scales (its burst shrinks and grows with
    /// the rate adopted).
    pub(crate) configured_requests: Option<Rate>,
    pub(crate) headroom: Duration,
    pub(crate) requests: Option<Bucket>,
    pub(crate) tokens: Option<Bucket>,
    concurrency: Option<u32>,
    in_flight: u32,
    paused_until: Option<Instant>,
}

impl Quota {
    /// A quota charging `charged` whose local buckets hold `local` (the same, or a fair share
    /// with a store), the request bucket starting as `requests` when given.
    pub(crate) fn new(
        charged: Limits,
        local: &Limits,
        requests: Option<Bucket>,
        now: Instant,
    ) -> Self {
        let bucket = |rate| Bucket::new(rate, local.headroom, now);
        Quota {
            charged,
            configured_requests: local.requests,
            headroom: local.headroom,
            requests: local.requests.map(bucket).or(requests),
            tokens: local.tokens.map(bucket),
            concurrency: local.concurrency,
            in_flight: 0,
            paused_until: None,
        }
    }

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
    pub(crate) fn charge(&self, quota: &Arc<str>, cost: u64) -> Charge {
        Charge::new(
            Arc::clone(quota),
            self.charged.requests,
            self.charged.tokens.map(|rate| (rate, cost)),
            self.charged.headroom,
        )
    }

    /// Forgets a pause that is over.
    fn end_pause_if_over(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// Checks every limit for a request of `cost` with `ahead` (requests, tokens) queued before
    /// it; with `buckets` false, only the pause and the concurrency bound (the store holds the
    /// buckets). Takes nothing.
    pub(crate) fn check(
        &mut self,
        cost: u64,
        ahead: (u64, u64),
        buckets: bool,
        now: Instant,
    ) -> Result<(), Blocked> {
        self.end_pause_if_over(now);
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
    pub(crate) fn take(&mut self, cost: u64, now: Instant) -> bool {
        if let Some(bucket) = &mut self.requests {
            bucket.take(1, now);
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.take(cost, now);
        }
        self.take_permit()
    }

    /// Takes a concurrency permit if there is a bound (the store charged the buckets).
    pub(crate) fn take_permit(&mut self) -> bool {
        if self.concurrency.is_some() {
            self.in_flight += 1;
        }
        self.concurrency.is_some()
    }

    /// Gives a concurrency permit back.
    pub(crate) fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Pauses every admission until `until`; returns whether the pause grew.
    pub(crate) fn pause_until(&mut self, until: Instant) -> bool {
        let grows = self.paused_until.is_none_or(|current| current < until);
        if grows {
            self.paused_until = Some(until);
        }
        grows
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

    /// Replaces the limits; `local` is `limits` as the local buckets hold them.
    pub(crate) fn reconfigure(&mut self, limits: &Limits, local: &Limits, now: Instant) {
        self.charged = *limits;
        self.configured_requests = local.requests;
        reconfigure_bucket(&mut self.requests, local.requests, local.headroom, now);
        reconfigure_bucket(&mut self.tokens, local.tokens, local.headroom, now);
        self.concurrency = local.concurrency;
    }

    /// Whether nothing is in flight or paused and every bucket is full (a new quota would
    /// start the same).
    pub(crate) fn is_at_rest(&mut self, now: Instant) -> bool {
        self.end_pause_if_over(now);
        self.in_flight == 0
            && self.paused_until.is_none()
            && [&self.requests, &self.tokens]
                .into_iter()
                .flatten()
                .all(|bucket| bucket.is_full(now))
    }

    /// Requests and tokens available now, requests in flight, and the pause left.
    pub(crate) fn levels(
        &mut self,
        now: Instant,
    ) -> (Option<u64>, Option<u64>, u32, Option<Duration>) {
        self.end_pause_if_over(now);
        (
            self.requests.as_ref().map(|b| b.level(now)),
            self.tokens.as_ref().map(|b| b.level(now)),
            self.in_flight,
            self.paused_until.map(|until| until - now),
        )
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
