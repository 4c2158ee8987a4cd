//! The arithmetic of one quota: its buckets, its daily counts, its concurrency count and its
//! pause after a 429.
//!
//! Pure: no queue, no lock, no learning; the caller passes `now`. A request is checked against
//! every limit at once and takes from all of them together, so one held back by a limit
//! consumes nothing from the others. What it took is a [`Holds`], settled to the real usage
//! when the answer reports it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::bucket::{Bucket, Hold};
use super::cost::TokenEstimate;
use super::daily::{DayCounter, DayHold};
use super::limits::{Limits, Metering, Rate};
use super::store::{Charge, StoreHold};
use super::usage::Usage;
use crate::classify::LimitKind;

/// Why a request cannot be admitted right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// A bucket (or a pause) frees up after this long.
    For(Duration, LimitKind),
    /// All concurrency permits are held; a release wakes the queue.
    Concurrency,
    /// A daily quota is spent until its reset, this long from now.
    Daily(Duration, LimitKind),
}

/// What one request takes from each token limit: its estimate, and the estimate's charge
/// against the combined limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Demand {
    pub(crate) estimate: TokenEstimate,
    pub(crate) combined: u64,
}

impl Demand {
    pub(crate) fn new(estimate: TokenEstimate, metering: &Metering) -> Self {
        Demand {
            estimate,
            combined: estimate.combined(metering.sum),
        }
    }

    /// One request's worth when no token limit is set.
    pub(crate) const ONE: Demand = Demand {
        estimate: TokenEstimate::new(1, 0),
        combined: 1,
    };

    /// The sum of two demands, for the tokens queued ahead of a newcomer.
    pub(crate) fn plus(self, other: Demand) -> Demand {
        Demand {
            estimate: TokenEstimate::new(
                self.estimate.input.saturating_add(other.estimate.input),
                self.estimate.output.saturating_add(other.estimate.output),
            ),
            combined: self.combined.saturating_add(other.combined),
        }
    }

    pub(crate) fn minus(self, other: Demand) -> Demand {
        Demand {
            estimate: TokenEstimate::new(
                self.estimate.input.saturating_sub(other.estimate.input),
                self.estimate.output.saturating_sub(other.estimate.output),
            ),
            combined: self.combined.saturating_sub(other.combined),
        }
    }
}

/// What an admitted request took from the token limits, to settle when its usage is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Holds {
    estimate: TokenEstimate,
    input: Option<Hold>,
    output: Option<Hold>,
    day_tokens: Option<DayHold>,
    /// What a shared store held instead (input, output, daily tokens).
    pub(crate) stored: [Option<StoreHold>; 3],
}

/// What an admission holds for settling, boxed when there is anything: most requests hold
/// nothing, and a pointer keeps their futures small.
pub(crate) type Held = Option<Box<Holds>>;

impl Holds {
    /// What a shared store held for a request of `estimate`.
    pub(crate) fn stored(estimate: TokenEstimate, stored: [Option<StoreHold>; 3]) -> Held {
        stored.iter().any(Option::is_some).then(|| {
            Box::new(Holds {
                estimate,
                stored,
                ..Holds::default()
            })
        })
    }

    /// What each token limit holds, by limit name.
    pub(crate) fn amounts(&self) -> [(&'static str, u64); 2] {
        let amount = |hold: Option<Hold>| hold.map_or(0, |hold| hold.amount);
        [
            ("input", amount(self.input)),
            ("output", amount(self.output)),
        ]
    }
}

/// How an attempt ended, for its token charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The answer reported its usage.
    Used(Usage),
    /// The provider refused it (429): no token was metered.
    Refused,
    /// It failed: no output was produced; the prompt's charge stands.
    Failed,
}

/// The corrections a settlement made, in tokens (negative: given back), for telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Corrections {
    pub(crate) input: i64,
    pub(crate) output: i64,
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
    pub(crate) input: Option<Bucket>,
    pub(crate) output: Option<Bucket>,
    requests_per_day: Option<DayCounter>,
    tokens_per_day: Option<DayCounter>,
    concurrency: Option<u32>,
    in_flight: u32,
    paused_until: Option<Instant>,
    /// A daily quota the provider said is spent (a 429 about it), until its hint.
    day_spent: Option<(Instant, LimitKind)>,
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
        let day = |allowance| DayCounter::new(allowance, local.day_starts_at, now);
        Quota {
            charged,
            configured_requests: local.requests,
            headroom: local.headroom,
            requests: local.requests.map(bucket).or(requests),
            tokens: local.tokens.map(bucket),
            input: local.input_tokens.map(bucket),
            output: local.output_tokens.map(bucket),
            requests_per_day: local.requests_per_day.map(day),
            tokens_per_day: local.tokens_per_day.map(day),
            concurrency: local.concurrency,
            in_flight: 0,
            paused_until: None,
            day_spent: None,
        }
    }

    /// The provider refused a request for a daily quota of `which`, spent until `until`: every
    /// request is refused at once until then, configured daily quota or not.
    pub(crate) fn day_spent_until(&mut self, which: LimitKind, until: Instant) {
        if self.day_spent.is_none_or(|(current, _)| current < until) {
            self.day_spent = Some((until, which));
        }
    }

    /// The token buckets with what `demand` asks of each and the limit each is.
    fn token_buckets(&self, demand: &Demand) -> [(Option<&Bucket>, u64, LimitKind); 3] {
        [
            (self.tokens.as_ref(), demand.combined, LimitKind::Tokens),
            (
                self.input.as_ref(),
                demand.estimate.input,
                LimitKind::InputTokens,
            ),
            (
                self.output.as_ref(),
                demand.estimate.output,
                LimitKind::OutputTokens,
            ),
        ]
    }

    /// Whether a request of `demand` could ever be admitted: `Some((limit, cost, capacity))`
    /// when it costs more than a limit ever holds. With a store, the full limit decides, not
    /// the local fair share.
    pub(crate) fn too_large(&self, demand: &Demand, shared: bool) -> Option<(LimitKind, u64, u64)> {
        let days = [
            (
                self.charged.tokens_per_day,
                demand.combined,
                LimitKind::TokensPerDay,
            ),
            (self.charged.requests_per_day, 1, LimitKind::RequestsPerDay),
        ];
        for (allowance, cost, which) in days {
            if let Some(allowance) = allowance.filter(|allowance| cost > *allowance) {
                return Some((which, cost, allowance));
            }
        }
        if shared {
            let rates = [
                (self.charged.tokens, demand.combined, LimitKind::Tokens),
                (
                    self.charged.input_tokens,
                    demand.estimate.input,
                    LimitKind::InputTokens,
                ),
                (
                    self.charged.output_tokens,
                    demand.estimate.output,
                    LimitKind::OutputTokens,
                ),
            ];
            return rates.into_iter().find_map(|(rate, cost, which)| {
                let most = rate.map(|rate| rate.capacity.max(rate.amount))?;
                (cost > most).then_some((which, cost, most))
            });
        }
        self.token_buckets(demand)
            .into_iter()
            .find_map(|(bucket, cost, which)| {
                let bucket = bucket?;
                (!bucket.fits(cost)).then(|| (which, cost, bucket.max_cost()))
            })
    }

    /// What to ask the store for a request of `demand`.
    pub(crate) fn charge(&self, quota: &Arc<str>, demand: &Demand) -> Charge {
        let limits = &self.charged;
        let mut charge = Charge::new(
            Arc::clone(quota),
            limits.requests,
            limits.tokens.map(|rate| (rate, demand.combined)),
            limits.headroom,
        );
        charge.input_tokens = limits
            .input_tokens
            .map(|rate| (rate, demand.estimate.input));
        charge.output_tokens = limits
            .output_tokens
            .map(|rate| (rate, demand.estimate.output));
        charge.requests_per_day = limits.requests_per_day;
        charge.tokens_per_day = limits.tokens_per_day.map(|day| (day, demand.combined));
        charge.day_starts_at = limits.day_starts_at;
        charge.held = limits.metering.reconcile;
        charge
    }

    /// Forgets a pause that is over.
    fn end_pause_if_over(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// Checks every limit for a request of `demand` with `ahead` (requests, demand) queued
    /// before it; with `buckets` false, only the pause and the concurrency bound (the store
    /// holds the buckets and the daily counts). Takes nothing.
    pub(crate) fn check(
        &mut self,
        demand: &Demand,
        ahead: (u64, Demand),
        buckets: bool,
        now: Instant,
    ) -> Result<(), Blocked> {
        let days = [
            (&mut self.requests_per_day, 1, LimitKind::RequestsPerDay),
            (
                &mut self.tokens_per_day,
                demand.combined,
                LimitKind::TokensPerDay,
            ),
        ];
        if let Some((until, which)) = self.day_spent {
            if until > now {
                return Err(Blocked::Daily(until - now, which));
            }
            self.day_spent = None;
        }
        for (day, cost, which) in days.into_iter().filter(|_| buckets) {
            if let Some(Err((resets_in, first))) = day.as_mut().map(|day| day.check(cost, now)) {
                if first {
                    tracing::warn!(
                        limit = which.as_str(),
                        resets_in_secs = resets_in.as_secs(),
                        "daily quota spent: requests are refused until it resets"
                    );
                }
                return Err(Blocked::Daily(resets_in, which));
            }
        }
        self.end_pause_if_over(now);
        let mut wait = (Duration::ZERO, LimitKind::Requests);
        if let Some(until) = self.paused_until {
            wait = (until - now, LimitKind::Paused);
        }
        if buckets {
            if let Some(bucket) = &self.requests {
                let w = bucket.wait_for(ahead.0, 1, now);
                if w > wait.0 {
                    wait = (w, LimitKind::Requests);
                }
            }
            let queued = self.token_buckets(&ahead.1);
            for ((bucket, cost, which), (_, queued, _)) in
                self.token_buckets(demand).into_iter().zip(queued)
            {
                let Some(bucket) = bucket else { continue };
                let w = bucket.wait_for(queued, cost, now);
                if w > wait.0 {
                    wait = (w, which);
                }
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

    /// Takes from every limit (with `buckets` false, the store took from the buckets); returns
    /// whether a concurrency permit was taken and what the token limits hold.
    pub(crate) fn take(&mut self, demand: &Demand, buckets: bool, now: Instant) -> (bool, Held) {
        if !buckets {
            return (self.take_permit(), None);
        }
        let _ = self.requests.as_mut().map(|b| b.take(1, now));
        // The combined limit is OpenAI's, which counts the admission charge and never corrects
        // it: it is not held for settling.
        let _ = self.tokens.as_mut().map(|b| b.take(demand.combined, now));
        if let Some(day) = &mut self.requests_per_day {
            let _ = day.take(1, now);
        }
        let input = self
            .input
            .as_mut()
            .map(|b| b.take(demand.estimate.input, now));
        let output = self
            .output
            .as_mut()
            .map(|b| b.take(demand.estimate.output, now));
        let day_tokens = self
            .tokens_per_day
            .as_mut()
            .map(|day| day.take(demand.combined, now));
        let settles = input.is_some() || output.is_some() || day_tokens.is_some();
        let held = (settles && self.charged.metering.reconcile).then(|| {
            Box::new(Holds {
                estimate: demand.estimate,
                input,
                output,
                day_tokens,
                stored: [None; 3],
            })
        });
        (self.take_permit(), held)
    }

    /// What the attempt really used, per limit that settles: (input, output, daily tokens).
    pub(crate) fn used(
        &self,
        holds: &Holds,
        outcome: Outcome,
    ) -> (Option<u64>, Option<u64>, Option<u64>) {
        let (input, output) = match outcome {
            Outcome::Used(usage) => {
                let cached = usage
                    .cache_read_tokens
                    .filter(|_| !self.charged.metering.cache_reads_count)
                    .unwrap_or(0);
                (
                    usage.input_tokens.map(|input| input.saturating_sub(cached)),
                    usage.output_tokens,
                )
            }
            Outcome::Refused => (Some(0), Some(0)),
            Outcome::Failed => (None, Some(0)),
        };
        // The daily token quota needs the output; a missing input is the estimate.
        let combined =
            output.map(|output| input.unwrap_or(holds.estimate.input).saturating_add(output));
        (input, output, combined)
    }

    /// Corrects what `holds` took locally to what the attempt really used.
    pub(crate) fn settle(&mut self, holds: &Holds, outcome: Outcome, now: Instant) -> Corrections {
        let (input, output, combined) = self.used(holds, outcome);
        let settle = |bucket: &mut Option<Bucket>, hold: Option<Hold>, used: Option<u64>| match (
            bucket.as_mut(),
            hold,
            used,
        ) {
            (Some(bucket), Some(hold), Some(used)) => bucket.settle(&hold, used, now),
            _ => 0,
        };
        let corrections = Corrections {
            input: settle(&mut self.input, holds.input, input),
            output: settle(&mut self.output, holds.output, output),
        };
        if let (Some(day), Some(hold), Some(used)) =
            (&mut self.tokens_per_day, holds.day_tokens, combined)
        {
            day.settle(&hold, used, now);
        }
        corrections
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

    /// A 429 about tokens: empty the bucket of `which` (every token bucket when the provider
    /// did not say which) so the next admission waits for a refill.
    pub(crate) fn drain_tokens(&mut self, which: Option<LimitKind>, now: Instant) {
        let buckets = [
            (&mut self.tokens, LimitKind::Tokens),
            (&mut self.input, LimitKind::InputTokens),
            (&mut self.output, LimitKind::OutputTokens),
        ];
        for (bucket, kind) in buckets {
            let named = which.is_none_or(|which| which == kind || which == LimitKind::Tokens);
            if let Some(bucket) = bucket.as_mut().filter(|_| named) {
                bucket.drain(now);
            }
        }
    }

    /// Whether a token bucket of `which` is set (any, for `None`).
    pub(crate) fn has_token_bucket(&self, which: Option<LimitKind>) -> bool {
        match which {
            Some(LimitKind::InputTokens) => self.input.is_some(),
            Some(LimitKind::OutputTokens) => self.output.is_some(),
            Some(LimitKind::TokensPerDay) => self.tokens_per_day.is_some(),
            _ => self.tokens.is_some() || self.input.is_some() || self.output.is_some(),
        }
    }

    /// Replaces the limits; `local` is `limits` as the local buckets hold them.
    pub(crate) fn reconfigure(&mut self, limits: &Limits, local: &Limits, now: Instant) {
        self.charged = *limits;
        self.configured_requests = local.requests;
        reconfigure_bucket(&mut self.requests, local.requests, local.headroom, now);
        reconfigure_bucket(&mut self.tokens, local.tokens, local.headroom, now);
        reconfigure_bucket(&mut self.input, local.input_tokens, local.headroom, now);
        reconfigure_bucket(&mut self.output, local.output_tokens, local.headroom, now);
        let days = [
            (&mut self.requests_per_day, local.requests_per_day),
            (&mut self.tokens_per_day, local.tokens_per_day),
        ];
        for (day, allowance) in days {
            match (day.as_mut(), allowance) {
                (Some(day), Some(allowance)) => day.set_allowance(allowance),
                (None, Some(allowance)) => {
                    *day = Some(DayCounter::new(allowance, local.day_starts_at, now))
                }
                (_, None) => *day = None,
            }
        }
        self.concurrency = local.concurrency;
    }

    /// Whether nothing is in flight or paused, every bucket is full and nothing was spent of
    /// a daily quota (a new quota would start the same).
    pub(crate) fn is_at_rest(&mut self, now: Instant) -> bool {
        self.end_pause_if_over(now);
        self.in_flight == 0
            && self.paused_until.is_none()
            && self.day_spent.is_none_or(|(until, _)| until <= now)
            && [&self.requests, &self.tokens, &self.input, &self.output]
                .into_iter()
                .flatten()
                .all(|bucket| bucket.is_full(now))
            && [&mut self.requests_per_day, &mut self.tokens_per_day]
                .into_iter()
                .flatten()
                .all(|day| day.is_unused(now))
    }

    /// What is available now, requests in flight, and the pause left.
    pub(crate) fn levels(&mut self, now: Instant) -> Levels {
        self.end_pause_if_over(now);
        let level = |bucket: &Option<Bucket>| bucket.as_ref().map(|b| b.level(now));
        Levels {
            requests: level(&self.requests),
            tokens: level(&self.tokens),
            input_tokens: level(&self.input),
            output_tokens: level(&self.output),
            requests_today: self.requests_per_day.as_mut().map(|day| day.left(now)),
            tokens_today: self.tokens_per_day.as_mut().map(|day| day.left(now)),
            in_flight: self.in_flight,
            paused_for: self.paused_until.map(|until| until - now),
        }
    }
}

/// What [`Quota::levels`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Levels {
    pub(crate) requests: Option<u64>,
    pub(crate) tokens: Option<u64>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) requests_today: Option<(u64, Duration)>,
    pub(crate) tokens_today: Option<(u64, Duration)>,
    pub(crate) in_flight: u32,
    pub(crate) paused_for: Option<Duration>,
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
