//! [`RetryConfig`], every setting of the retry layer in one value, the builder that writes
//! it, and what a retry hook receives.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::backoff::Jitter;
use crate::classify::{Classification, HintSource};
use crate::config_error::reject_if;
use crate::ConfigError;

/// Every setting of a [`BackoffRetryLayer`](super::BackoffRetryLayer), with its default; the
/// builder, a [`Policy`](crate::stack::Policy) and a config file's `[providers.NAME.retry]` table
/// (feature `serde`, durations as `"500ms"`) all write into this value.
///
/// ```
/// use std::time::Duration;
/// use tollgate::retry::RetryConfig;
/// use tollgate::retry::BackoffRetryLayer;
///
/// let mut config = RetryConfig::default();
/// assert_eq!(config.max_attempts, 5);
/// config.deadline = Some(Duration::from_secs(120));
/// let layer = BackoffRetryLayer::from_config(config)?;
/// # let _ = layer;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RetryConfig {
    /// Attempts in total, the first included (default 5, at least 1).
    pub max_attempts: u32,
    /// The first retry's un-jittered delay (default 500 ms).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub base: Duration,
    /// Growth of the delay per retry (default 2.0, at least 1.0).
    pub factor: f64,
    /// The longest backoff delay (default 60 s, at least `base`).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub cap: Duration,
    /// How delays are randomised (default [`Jitter::Full`]).
    pub jitter: Jitter,
    /// The longest server-requested wait honoured (default 60 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub ceiling: Duration,
    /// What to do with a longer hint (default [`OverCeiling::GiveUp`]).
    pub over_ceiling: OverCeiling,
    /// Spread of hinted waits: up to this share of the hint is added at random when jitter is
    /// on (default 0.2; 0.0 waits exactly what the server said).
    pub hint_spread: f64,
    /// A deadline for the whole call, all attempts and waits included (default none).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::option_duration"))]
    pub deadline: Option<Duration>,
    /// A timeout for each attempt, counted as a (retryable) timeout (default none). It runs
    /// from when the attempt leaves a rate limiter's queue inside this layer, so it times the
    /// provider, not the wait for a permit.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::option_duration"))]
    pub attempt_timeout: Option<Duration>,
    /// The retry budget shared by every clone (default [`BudgetConfig::default`]); `None` (in a
    /// file, `budget = false`) retries every retryable failure up to `max_attempts`.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::switch"))]
    pub budget: Option<BudgetConfig>,
    /// Retry an attempt that timed out (default true). A timed-out completion may still have
    /// run, and been billed, at the provider: `false` spends a long generation once.
    pub retry_timeouts: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            base: Duration::from_millis(500),
            factor: 2.0,
            cap: Duration::from_secs(60),
            jitter: Jitter::Full,
            ceiling: Duration::from_secs(60),
            over_ceiling: OverCeiling::GiveUp,
            hint_spread: 0.2,
            deadline: None,
            attempt_timeout: None,
            budget: Some(BudgetConfig::default()),
            retry_timeouts: true,
        }
    }
}

impl RetryConfig {
    /// Checks every setting; the error names the field as the builder and the config file do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        reject_if(
            self.max_attempts == 0,
            "max_attempts",
            "must be at least 1 (the first attempt counts)",
        )?;
        reject_if(
            self.base.is_zero(),
            "base",
            "must be greater than zero, e.g. \"500ms\"",
        )?;
        reject_if(
            !(self.factor.is_finite() && self.factor >= 1.0),
            "factor",
            format!(
                "must be a finite number of at least 1.0, got {}",
                self.factor
            ),
        )?;
        reject_if(
            self.cap < self.base,
            "cap",
            format!(
                "must be at least the base ({:?}), got {:?}",
                self.base, self.cap
            ),
        )?;
        reject_if(
            !(self.hint_spread.is_finite() && (0.0..=1.0).contains(&self.hint_spread)),
            "hint_spread",
            format!("must be between 0.0 and 1.0, got {}", self.hint_spread),
        )?;
        for (field, value) in [
            ("deadline", self.deadline),
            ("attempt_timeout", self.attempt_timeout),
        ] {
            reject_if(
                value.is_some_and(|v| v.is_zero()),
                field,
                "must be greater than zero when set",
            )?;
        }
        if let Some(budget) = &self.budget {
            budget.validate()?;
        }
        Ok(())
    }
}

/// The retry budget: over a sliding window of `ttl`, retries may add `min_per_sec` per second
/// plus `ratio` of the requests (Finagle's and Linkerd's budget, tower's `TpsBudget`).
///
/// ```
/// use std::time::Duration;
/// use tollgate::retry::BudgetConfig;
///
/// assert_eq!(BudgetConfig::default(), BudgetConfig::new(Duration::from_secs(10), 10, 0.2));
/// assert!(BudgetConfig::new(Duration::from_secs(10), 10, 1.5).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct BudgetConfig {
    /// The window (1 to 60 s; default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub ttl: Duration,
    /// Retries per second always allowed (default 10).
    pub min_per_sec: u32,
    /// Share of the requests that may be retried, 0.0 to 1.0 (default 0.2).
    pub ratio: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl BudgetConfig {
    /// A budget over `ttl` allowing `min_per_sec` retries per second plus `ratio` of the
    /// requests (checked by [`validate`](Self::validate) and when a layer is built).
    pub const fn new(ttl: Duration, min_per_sec: u32, ratio: f64) -> Self {
        BudgetConfig {
            ttl,
            min_per_sec,
            ratio,
        }
    }

    /// Checks the window and the ratio.
    pub fn validate(&self) -> Result<(), ConfigError> {
        reject_if(
            !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.ttl),
            "budget.ttl",
            format!("must be between 1s and 60s, got {:?}", self.ttl),
        )?;
        reject_if(
            !(0.0..=1.0).contains(&self.ratio),
            "budget.ratio",
            format!(
                "must be between 0.0 and 1.0 (a share of requests), got {}",
                self.ratio
            ),
        )?;
        Ok(())
    }
}

/// What to do when the server asks for a wait longer than the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum OverCeiling {
    /// Stop and return the last answer or a
    /// [`StopReason::HintOverCeiling`](super::StopReason::HintOverCeiling) error (the default, as
    /// openai-python does above 120 s: Gemini's per-day quota answers "retry in 10h17m").
    #[default]
    GiveUp,
    /// Ignore the hint and use the normal backoff (as the Anthropic SDK does above 60 s).
    /// Written `backoff` in a config file.
    #[cfg_attr(feature = "serde", serde(rename = "backoff"))]
    UseBackoff,
}

/// One retry about to happen, as reported to an `on_retry` hook.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
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

pub(crate) type RetryHook = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// Builds a [`BackoffRetryLayer`](super::BackoffRetryLayer): setters over a [`RetryConfig`] (see
/// its fields for the defaults), plus what only code can give (a hook, a seed, a name);
/// [`build`](Self::build) checks them all.
///
/// ```
/// use std::time::Duration;
/// use tollgate::retry::{Jitter, OverCeiling};
/// use tollgate::retry::BackoffRetryLayer;
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
#[derive(Default)]
pub struct BackoffRetryBuilder {
    pub(super) config: RetryConfig,
    pub(super) seed: Option<u64>,
    pub(super) on_retry: Option<RetryHook>,
    pub(super) name: Option<Arc<str>>,
}

impl fmt::Debug for BackoffRetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffRetryBuilder")
            .field("config", &self.config)
            .field("seed", &self.seed)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BackoffRetryBuilder {
    /// Replaces every setting with `config`.
    pub fn config(mut self, config: RetryConfig) -> Self {
        self.config = config;
        self
    }

    crate::setters::config_setters!(RetryConfig {
        max_attempts: u32,
        base: Duration,
        factor: f64,
        cap: Duration,
        jitter: Jitter,
        ceiling: Duration,
        over_ceiling: OverCeiling,
        hint_spread: f64,
        deadline: Duration => Some,
        attempt_timeout: Duration => Some,
        budget: BudgetConfig => Some,
        retry_timeouts: bool,
    });

    /// No retry budget: every retryable failure is retried up to `max_attempts`.
    pub fn no_budget(mut self) -> Self {
        self.config.budget = None;
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
}
