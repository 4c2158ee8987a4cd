//! [`RetryPolicy`]: when to retry and how long to wait; built by [`BackoffRetryBuilder`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::backoff::{Backoff, Jitter};
use super::budget::RetryBudget;
use super::error::StopReason;
use super::layer::BackoffRetryLayer;
use crate::classify::{Classification, HintSource, Kind};
use crate::ConfigError;

/// What to do when the server asks for a wait longer than the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverCeiling {
    /// Stop and return the last answer or a [`StopReason::HintOverCeiling`] error (the default,
    /// as openai-python does above 120 s: Gemini's per-day quota answers "retry in 10h17m").
    #[default]
    GiveUp,
    /// Ignore the hint and use the normal backoff (as the Anthropic SDK does above 60 s).
    UseBackoff,
}

/// One retry about to happen, as reported to an `on_retry` hook.
#[derive(Debug, Clone, Copy)]
pub struct RetryEvent {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// How long the layer waits before the next attempt.
    pub delay: Duration,
    /// The failed attempt's verdict.
    pub verdict: Classification,
    /// Where the delay came from, when a server hint set it.
    pub hint: Option<HintSource>,
}

type RetryHook = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// The retry decision rules, shared (in an `Arc`) by every service one layer builds.
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) ceiling: Duration,
    pub(crate) over_ceiling: OverCeiling,
    pub(crate) hint_spread: f64,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) rng: Option<Mutex<SmallRng>>,
    pub(crate) on_retry: Option<RetryHook>,
    pub(crate) name: Option<Arc<str>>,
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
    /// Decides whether attempt number `attempts` (1-based), judged `verdict`, is followed by
    /// another, and after how long. Withdraws from the budget only when the answer is yes.
    pub(crate) fn decide(
        &self,
        verdict: &Classification,
        attempts: u32,
        previous_delay: Duration,
        deadline: Option<Instant>,
    ) -> Decision {
        if !verdict.is_retryable() {
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

/// Builds a [`BackoffRetryLayer`]; every setting has a default, and [`build`](Self::build)
/// checks them all.
///
/// Defaults: 5 attempts in total, 500 ms base doubling to a 60 s cap with full jitter, server
/// hints honoured up to 60 s (longer ones give up), hinted waits spread by up to 20%, no deadline,
/// no per-attempt timeout, Finagle's retry budget (10 s, 10/s, 20%).
///
/// ```
/// use std::time::Duration;
/// use tollgate::retry::{Jitter, OverCeiling};
/// use tollgate::BackoffRetryLayer;
///
/// let layer = BackoffRetryLayer::builder()
///     .max_attempts(4)
///     .base(Duration::from_millis(250))
///     .cap(Duration::from_secs(20))
///     .jitter(Jitter::Decorrelated)
///     .ceiling(Duration::from_secs(120))
///     .over_ceiling(OverCeiling::UseBackoff)
///     .deadline(Duration::from_secs(90))
///     .attempt_timeout(Duration::from_secs(30))
///     .on_retry(|event| eprintln!("retrying after {:?}", event.delay))
///     .build()
///     .expect("valid settings");
/// # let _ = layer;
/// ```
pub struct BackoffRetryBuilder {
    max_attempts: u32,
    backoff: Backoff,
    ceiling: Duration,
    over_ceiling: OverCeiling,
    hint_spread: f64,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    budget: Option<RetryBudget>,
    seed: Option<u64>,
    on_retry: Option<RetryHook>,
    name: Option<Arc<str>>,
}

impl fmt::Debug for BackoffRetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffRetryBuilder")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Default for BackoffRetryBuilder {
    fn default() -> Self {
        BackoffRetryBuilder {
            max_attempts: 5,
            backoff: Backoff::default(),
            ceiling: Duration::from_secs(60),
            over_ceiling: OverCeiling::GiveUp,
            hint_spread: 0.2,
            deadline: None,
            attempt_timeout: None,
            budget: Some(RetryBudget::default()),
            seed: None,
            on_retry: None,
            name: None,
        }
    }
}

impl BackoffRetryBuilder {
    /// Attempts in total, the first included (default 5, at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The first retry's un-jittered delay (default 500 ms).
    pub fn base(mut self, base: Duration) -> Self {
        self.backoff.base = base;
        self
    }

    /// Growth of the delay per retry (default 2.0, at least 1.0).
    pub fn factor(mut self, factor: f64) -> Self {
        self.backoff.factor = factor;
        self
    }

    /// The longest backoff delay (default 60 s, at least `base`).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.backoff.cap = cap;
        self
    }

    /// How delays are randomised (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff.jitter = jitter;
        self
    }

    /// The longest server-requested wait honoured (default 60 s).
    pub fn ceiling(mut self, ceiling: Duration) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// What to do with a longer hint (default [`OverCeiling::GiveUp`]).
    pub fn over_ceiling(mut self, policy: OverCeiling) -> Self {
        self.over_ceiling = policy;
        self
    }

    /// Spread of hinted waits: up to this share of the hint is added at random when jitter is on
    /// (default 0.2; 0.0 waits exactly what the server said).
    pub fn hint_spread(mut self, spread: f64) -> Self {
        self.hint_spread = spread;
        self
    }

    /// An overall deadline for the whole call, all attempts and waits included.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A timeout for each attempt; an attempt that exceeds it counts as a timeout (retryable).
    ///
    /// It runs from when the attempt leaves tollgate's own queue (a [`RateLimitLayer`]
    /// inside this layer), so it times the provider, not the wait for a permit; bound that wait
    /// with the limiter's `max_wait`, and the whole call with [`deadline`](Self::deadline).
    ///
    /// [`RateLimitLayer`]: crate::RateLimitLayer
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The retry budget shared by every clone (default [`RetryBudget::default`]).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// No retry budget: every retryable failure is retried up to `max_attempts`.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Draw jitter from a generator seeded with `seed`, so delays repeat exactly (for tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A name for metrics labels (the provider: "openai", "anthropic"...).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `hook` before every retry, to count or log retries your own way.
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<BackoffRetryLayer, ConfigError> {
        self.validate()?;
        Ok(BackoffRetryLayer::from_policy(self.into_policy()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                "must be at least 1 (the first attempt counts)",
            ));
        }
        if self.backoff.base.is_zero() {
            return Err(ConfigError::new(
                "base",
                "must be greater than zero, e.g. \"500ms\"",
            ));
        }
        if !(self.backoff.factor.is_finite() && self.backoff.factor >= 1.0) {
            return Err(ConfigError::new(
                "factor",
                format!(
                    "must be a finite number of at least 1.0, got {}",
                    self.backoff.factor
                ),
            ));
        }
        if self.backoff.cap < self.backoff.base {
            return Err(ConfigError::new(
                "cap",
                format!(
                    "must be at least the base ({:?}), got {:?}",
                    self.backoff.base, self.backoff.cap
                ),
            ));
        }
        if !(self.hint_spread.is_finite() && (0.0..=1.0).contains(&self.hint_spread)) {
            return Err(ConfigError::new(
                "hint_spread",
                format!("must be between 0.0 and 1.0, got {}", self.hint_spread),
            ));
        }
        for (field, value) in [
            ("deadline", self.deadline),
            ("attempt_timeout", self.attempt_timeout),
        ] {
            if value.is_some_and(|v| v.is_zero()) {
                return Err(ConfigError::new(
                    field,
                    "must be greater than zero when set",
                ));
            }
        }
        Ok(())
    }

    /// The policy these settings describe, without checking them (the defaults are valid).
    pub(crate) fn into_policy(self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            ceiling: self.ceiling,
            over_ceiling: self.over_ceiling,
            hint_spread: self.hint_spread,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            budget: self.budget,
            rng: self
                .seed
                .map(|seed| Mutex::new(SmallRng::seed_from_u64(seed))),
            on_retry: self.on_retry,
            name: self.name,
        }
    }
}
