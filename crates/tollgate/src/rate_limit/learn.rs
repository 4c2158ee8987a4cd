//! Learning from the provider: its 429s and rate-limit headers turned into adjustments of one
//! quota (the adaptive rate, a pause, drained or lowered buckets, adopted limits), and of the
//! shared store's quota when there is one.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use http::Response;
use tokio::time::Instant;

use super::adaptive::{Change, Controller};
use super::bucket::Bucket;
use super::limiter::Settings;
use super::limits::{adaptive_bucket_rate, Rate, RESERVATION_BURST};
use super::partition::{Partition, State};
use crate::classify::{response_verdict, Classification, Kind, LimitKind, RateLimitState};

/// A provider's `remaining` at or below 1/this of the burst is told to a shared store.
const LOW_REMAINING: u64 = 4;

/// Reacts to the provider's answer to a request sent at `sent_at`: a 429 about our rate lowers
/// the adaptive rate, or pauses (or drains) a fixed quota, and rate-limit headers correct it.
pub(crate) fn learn<B>(
    settings: &Settings,
    partition: &Partition,
    response: &Response<B>,
    sent_at: Instant,
) {
    let server = match response.extensions().get::<RateLimitState>() {
        Some(state) => Some(*state),
        None => RateLimitState::from_headers_with(response.headers(), SystemTime::now),
    };
    learn_verdict(
        settings,
        partition,
        response_verdict(response),
        server,
        sent_at,
    );
}

/// Reacts to a verdict on a request sent at `sent_at`, with the provider's rate-limit headers
/// when there were any: from an answer's head, or from an error inside its stream.
pub(crate) fn learn_verdict(
    settings: &Settings,
    partition: &Partition,
    verdict: Classification,
    server: Option<RateLimitState>,
    sent_at: Instant,
) {
    let limited = verdict.kind() == Kind::RateLimited;
    if limited {
        crate::telemetry::rate_limited_response(&partition.name);
    }
    // A hint longer than the retry layer honours (a daily quota's "retry in 10 hours") neither
    // pauses the quota nor says anything about the rate: the retry layer gives up on it.
    let hint = verdict.retry_after();
    let over_ceiling = hint.is_some_and(|wait| wait > settings.max_pause);
    // A 429 about tokens is the token bucket's when there is one (it empties; the headers
    // correct it), else the request rate is the only lever. One while the provider says
    // requests remain is not about our request rate (load shedding).
    // A daily quota's 429 says nothing about the rate either.
    let which = verdict.limit();
    let daily = which.is_some_and(LimitKind::is_daily);
    let about_tokens = limited
        && !daily
        && which.is_some_and(LimitKind::is_tokens)
        && partition.charges_tokens.load(Ordering::Relaxed);
    let about_requests = !about_tokens
        && !daily
        && server.is_none_or(|s| s.requests.remaining.is_none_or(|r| r == 0));
    let refused = limited && about_requests && !over_ceiling;
    if let (true, Some(which), Some(wait)) = (limited && daily, which, hint) {
        // The provider's daily quota is spent: refuse at once until its hint, rather than send
        // every request for a 429 of its own.
        partition
            .lock()
            .quota
            .day_spent_until(which, Instant::now() + wait);
    }
    if partition.adaptive {
        // The rate adapts instead of everyone pausing: the refused request's own retry waits
        // for the hint, the others go on at the lowered rate.
        // A success on a settled rate changes nothing: no lock on the success path.
        let changed = if refused || about_tokens || !partition.settled.load(Ordering::Relaxed) {
            let mut state = partition.lock();
            let now = Instant::now();
            if about_tokens && !over_ceiling {
                state.quota.drain_tokens(which, now);
            }
            let changed = state.answered(refused, sent_at, now);
            partition
                .settled
                .store(state.adaptive_settled(), Ordering::Relaxed);
            changed
        } else {
            None
        };
        if let Some(change) = changed {
            crate::telemetry::limiter_adaptive_rate(&partition.name, change.rate());
            tracing::info!(
                rate_per_sec = change.rate(),
                ?change,
                "adaptive rate limit changed"
            );
        }
    } else if limited && !over_ceiling && !daily {
        let now = Instant::now();
        let mut state = partition.lock();
        match hint {
            Some(wait) => {
                state.pause_until(now + wait);
                // One process's 429 pauses every process that shares the quota.
                if let Some(shared) = &partition.shared {
                    shared.pause(wait);
                }
            }
            None => {
                state.quota.drain_requests(now);
                if let (Some(shared), Some(rate)) =
                    (&partition.shared, state.quota.charged.requests)
                {
                    shared.lower(LimitKind::Requests, rate, 0);
                }
            }
        }
    }
    if let (Some(server), Some(shared)) = (server, &partition.shared) {
        let charged = partition.lock().quota.charged;
        let windows = [
            (
                LimitKind::Requests,
                charged.requests,
                server.requests.remaining,
            ),
            (LimitKind::Tokens, charged.tokens, server.tokens.remaining),
            (
                LimitKind::InputTokens,
                charged.input_tokens,
                server.input_tokens.remaining,
            ),
            (
                LimitKind::OutputTokens,
                charged.output_tokens,
                server.output_tokens.remaining,
            ),
        ];
        for (which, rate, remaining) in windows {
            // Only a quota running low is worth a round trip: the store is already right unless
            // someone outside it spends from the same key.
            if let (Some(rate), Some(remaining)) = (rate, remaining) {
                if remaining.saturating_mul(LOW_REMAINING) <= rate.capacity {
                    shared.lower(which, rate, remaining);
                }
            }
        }
    } else if let Some(server) = server {
        let mut state = partition.lock();
        let changed = state.apply_headers(&server, settings.adopt_limits, Instant::now());
        partition
            .settled
            .store(state.adaptive_settled(), Ordering::Relaxed);
        if state.quota.has_token_bucket(None) {
            // A token limit adopted from the headers: requests are costed from now on.
            partition.charges_tokens.store(true, Ordering::Relaxed);
        }
        drop(state);
        if changed {
            tracing::info!(
                remaining_requests = server.requests.remaining,
                remaining_tokens = server.tokens.remaining,
                "rate limiter adjusted to the provider's headers"
            );
        }
    }
}

impl State {
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

    /// Sets the request bucket to the adaptive rate `per_sec`.
    fn apply_rate(&mut self, per_sec: f64, now: Instant) {
        let quota = &mut self.quota;
        let rate = adaptive_bucket_rate(per_sec, quota.configured_requests);
        match &mut quota.requests {
            Some(bucket) => bucket.reconfigure(rate, now),
            None => {
                let mut bucket = Bucket::new(rate, quota.headroom, now);
                bucket.drain(now);
                quota.requests = Some(bucket);
            }
        }
        self.queue.wake_head();
    }

    /// Applies the provider's rate-limit headers: lowers the buckets to what it says remains,
    /// and adopts a lower limit (or, with none configured, its limit). Returns whether anything
    /// changed.
    pub(crate) fn apply_headers(
        &mut self,
        server: &RateLimitState,
        adopt_limits: bool,
        now: Instant,
    ) -> bool {
        let mut changed = false;
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
        let quota = &mut self.quota;
        let headroom = quota.headroom;
        // Anthropic's combined `tokens` headers restate the stricter of its input and output
        // limits: when those are reported, they feed their own buckets and the combined one
        // learns nothing from them.
        let split = server.input_tokens.is_known() || server.output_tokens.is_known();
        let combined = if split {
            Default::default()
        } else {
            server.tokens
        };
        // An adopted input or output limit holds reservations as a configured one does.
        let reserving = Some(RESERVATION_BURST);
        let pairs = [
            (&mut quota.requests, server.requests, adopt_requests, None),
            (&mut quota.tokens, combined, adopt_limits, None),
            (
                &mut quota.input,
                server.input_tokens,
                adopt_limits,
                reserving,
            ),
            (
                &mut quota.output,
                server.output_tokens,
                adopt_limits,
                reserving,
            ),
        ];
        for (bucket, window, adopt_limits, burst) in pairs {
            let Some(bucket) = bucket else {
                // No limit configured here: the provider's, per minute, becomes the limit.
                if let Some(limit) = window.limit.filter(|l| adopt_limits && *l > 0) {
                    let rate = Rate::per_minute(limit);
                    let rate = burst.map_or(rate, |window| rate.or_burst_of(window));
                    let mut adopted = Bucket::new(rate, headroom, now);
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
}
