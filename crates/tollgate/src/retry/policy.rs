//! The retry decision: when to retry and how long to wait, from a [`RetryConfig`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::backoff::{Backoff, Jitter};
use super::budget::RetryBudget;
use super::config::{OverCeiling, RetryConfig, RetryEvent, RetryHook};
use super::error::StopReason;
use crate::classify::{Classification, HintSource, Kind};

/// The retry decision rules, shared (in an `Arc`) by every service one layer builds.
pub(crate) struct RetryPolicy {
    pub(crate) max_attempts: u32,
    backoff: Backoff,
    ceiling: Duration,
    over_ceiling: OverCeiling,
    hint_spread: f64,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    retry_timeouts: bool,
    pub(crate) budget: Option<RetryBudget>,
    rng: Option<Mutex<SmallRng>>,
    on_retry: Option<RetryHook>,
    pub(crate) name: Option<Arc<str>>,
    /// `tollgate_attempts_total`, registered on the first attempt and kept.
    pub(crate) attempts: crate::telemetry::CachedCounter,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("ceiling", &self.ceiling)
            .field("over_ceiling", &self.over_ceiling)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    Retry {
        delay: Duration,
        hint: Option<HintSource>,
    },
    Stop(StopReason),
}

impl RetryPolicy {
    /// The rules `config` describes (checked by the caller), with jitter drawn from a generator
    /// seeded with `seed` if given.
    pub(crate) fn new(
        config: RetryConfig,
        seed: Option<u64>,
        on_retry: Option<RetryHook>,
        name: Option<Arc<str>>,
    ) -> Self {
        RetryPolicy {
            max_attempts: config.max_attempts,
            backoff: Backoff {
                base: config.base,
                factor: config.factor,
                cap: config.cap,
                jitter: config.jitter,
            },
            ceiling: config.ceiling,
            over_ceiling: config.over_ceiling,
            hint_spread: config.hint_spread,
            deadline: config.deadline,
            attempt_timeout: config.attempt_timeout,
            retry_timeouts: config.retry_timeouts,
            budget: config.budget.map(RetryBudget::new),
            rng: seed.map(|seed| Mutex::new(SmallRng::seed_from_u64(seed))),
            on_retry,
            name,
            attempts: crate::telemetry::CachedCounter::default(),
        }
    }

    /// Decides whether attempt number `attempts` (1-based), judged `verdict`, is followed by
    /// another, and after how long. Withdraws from the budget only when the answer is yes.
    pub(crate) fn decide(
        &self,
        verdict: &Classification,
        attempts: u32,
        previous_delay: Duration,
        deadline: Option<Instant>,
    ) -> Decision {
        if !verdict.is_retryable() || (verdict.kind() == Kind::Timeout && !self.retry_timeouts) {
            return Decision::Stop(StopReason::NotRetryable);
        }
        if attempts >= self.max_attempts {
            return Decision::Stop(StopReason::AttemptsExhausted);
        }
        let (delay, hint) = match verdict.retry_after() {
            Some(wait) if wait > self.ceiling => match self.over_ceiling {
                OverCeiling::GiveUp => return Decision::Stop(StopReason::HintOverCeiling),
                OverCeiling::UseBackoff => (self.backoff_delay(attempts - 1, previous_delay), None),
            },
            Some(wait) => (self.spread_hint(wait), verdict.hint_source()),
            None => (self.backoff_delay(attempts - 1, previous_delay), None),
        };
        if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
            return Decision::Stop(StopReason::Deadline);
        }
        // A 429 is the provider pacing us: its retry waits for the hint (and, in the standard
        // stack, for the rate limiter), so it adds no load. The budget stops retries from
        // multiplying the load on a failing server (5xx, overload, timeouts, resets).
        let paced = verdict.kind() == Kind::RateLimited;
        if !paced && self.budget.as_ref().is_some_and(|b| !b.try_withdraw()) {
            return Decision::Stop(StopReason::BudgetExhausted);
        }
        Decision::Retry { delay, hint }
    }

    fn backoff_delay(&self, retry: u32, previous: Duration) -> Duration {
        self.with_rng(|rng| self.backoff.delay(retry, previous, rng))
    }

    /// A server hint is a minimum: never retry earlier, but spread clients that got the same hint
    /// over up to `hint_spread` of it so they do not return together.
    fn spread_hint(&self, wait: Duration) -> Duration {
        if self.backoff.jitter == Jitter::None || self.hint_spread <= 0.0 {
            return wait;
        }
        let extra = wait.mul_f64(self.hint_spread);
        let extra_nanos = extra.as_nanos().min(u128::from(u64::MAX)) as u64;
        wait + Duration::from_nanos(self.with_rng(|rng| rng.random_range(0..=extra_nanos)))
    }

    fn with_rng<T>(&self, f: impl FnOnce(&mut dyn rand::RngCore) -> T) -> T {
        match &self.rng {
            Some(seeded) => f(&mut *seeded.lock().unwrap_or_else(|p| p.into_inner())),
            None => f(&mut rand::rng()),
        }
    }

    pub(crate) fn notify(&self, event: &RetryEvent) {
        crate::telemetry::retry(&self.name, event.verdict.kind().as_str());
        if let Some(hook) = &self.on_retry {
            hook(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(config: RetryConfig) -> RetryPolicy {
        config.validate().unwrap();
        RetryPolicy::new(config, Some(1), None, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_attempt_is_retried_unless_told_not_to() {
        let timeout = Classification::new(Kind::Timeout);
        let retried = policy(RetryConfig::default());
        assert!(matches!(
            retried.decide(&timeout, 1, Duration::ZERO, None),
            Decision::Retry { .. }
        ));
        // From a config file, as the builder's `retry_timeouts(false)` and the CLI's
        // `--no-retry-timeouts` set it.
        let config: RetryConfig =
            serde_json::from_value(serde_json::json!({ "retry_timeouts": false })).unwrap();
        let once = policy(config);
        assert_eq!(
            once.decide(&timeout, 1, Duration::ZERO, None),
            Decision::Stop(StopReason::NotRetryable)
        );
        let server_error = Classification::new(Kind::ServerError);
        assert!(
            matches!(
                once.decide(&server_error, 1, Duration::ZERO, None),
                Decision::Retry { .. }
            ),
            "other failures are still retried"
        );
    }
}
