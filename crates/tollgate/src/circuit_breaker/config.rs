//! [`BreakerConfig`], every setting of the circuit breaker in one value, what counts as a
//! failure, and the builder that writes them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::state::{Listener, StateChange};
use super::window::Window;
use crate::classify::Kind;
use crate::config_error::reject_if;
use crate::key::{KeyType, NoKey};
use crate::ConfigError;

/// Every setting of a [`CircuitBreakerLayer`](super::CircuitBreakerLayer), with its default; the
/// builder, a [`Policy`](crate::stack::Policy) and a config file's `[providers.NAME.breaker]` table
/// (feature `serde`) all write into this value.
///
/// The circuit opens at `failure_ratio` of failures over `window` once it holds `min_calls`
/// calls (resilience4j's and Polly's model), or, with `consecutive_failures` set, after that
/// many failures in a row (pybreaker's model); and, with `slow_calls` set, when too many calls
/// over the same window are slow.
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::{BreakerConfig, Window};
/// use tollgate::circuit_breaker::CircuitBreakerLayer;
///
/// let mut config = BreakerConfig::default();
/// assert_eq!((config.failure_ratio, config.window, config.min_calls), (0.5, Window::Count(100), 20));
/// config.consecutive_failures = Some(5);
/// config.break_duration = Duration::from_secs(20);
/// let layer = CircuitBreakerLayer::from_config(config)?;
/// # let _ = layer;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row instead of on the ratio (default none).
    pub consecutive_failures: Option<u32>,
    /// Share of failures, above 0.0 and at most 1.0, that trips the circuit (default 0.5).
    pub failure_ratio: f64,
    /// The window ratios are computed over (default the last 100 calls; in a file, a number of
    /// calls or a duration such as `"30s"`).
    pub window: Window,
    /// Calls the window must hold before a ratio counts (default 20).
    pub min_calls: u32,
    /// Also trip when too many calls are slow (default off).
    pub slow_calls: Option<SlowCalls>,
    /// How long the circuit stays open before probing (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub break_duration: Duration,
    /// Grow the break on repeated trips (default off).
    pub break_growth: Option<BreakGrowth>,
    /// Probe calls admitted while half-open; all must succeed to close (default 1).
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: None,
            failure_ratio: 0.5,
            window: Window::Count(100),
            min_calls: 20,
            slow_calls: None,
            break_duration: Duration::from_secs(30),
            break_growth: None,
            probes: 1,
        }
    }
}

/// Trip also when too many calls are slow (LLM latency spikes often come before failures).
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::SlowCalls;
///
/// let slow = SlowCalls::new(Duration::from_secs(20), 0.8);
/// assert_eq!(slow.ratio, 0.8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct SlowCalls {
    /// A call taking at least this long is slow.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub threshold: Duration,
    /// Share of slow calls, above 0.0 and at most 1.0, that trips the circuit.
    pub ratio: f64,
}

impl SlowCalls {
    /// Calls of at least `threshold` are slow; `ratio` of them trips the circuit.
    pub const fn new(threshold: Duration, ratio: f64) -> Self {
        SlowCalls { threshold, ratio }
    }
}

/// The break grows by `factor` on each trip in a row, up to `cap`.
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::BreakGrowth;
///
/// let growth = BreakGrowth::new(2.0, Duration::from_secs(300));
/// assert_eq!(growth.cap, Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct BreakGrowth {
    /// Multiplier per trip in a row (at least 1.0).
    pub factor: f64,
    /// The longest break (at least `break_duration`).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub cap: Duration,
}

impl BreakGrowth {
    /// Multiply the break by `factor` on each trip in a row, up to `cap`.
    pub const fn new(factor: f64, cap: Duration) -> Self {
        BreakGrowth { factor, cap }
    }
}

impl BreakerConfig {
    /// Checks every setting; the error names the field as the builder and the config file do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        reject_if(
            self.consecutive_failures == Some(0),
            "consecutive_failures",
            "must be at least 1; leave it out to trip on the failure ratio",
        )?;
        check_ratio("failure_ratio", self.failure_ratio)?;
        reject_if(self.min_calls == 0, "min_calls", "must be at least 1")?;
        match self.window {
            Window::Count(0) => {
                return Err(ConfigError::new("window", "must hold at least 1 call"))
            }
            Window::Time { duration, buckets } if duration.is_zero() || buckets == 0 => {
                return Err(ConfigError::new(
                    "window",
                    "a time window needs a duration above zero and at least 1 bucket",
                ))
            }
            _ => {}
        }
        if let Some(slow) = self.slow_calls {
            check_ratio("slow_calls.ratio", slow.ratio)?;
            reject_if(
                slow.threshold.is_zero(),
                "slow_calls.threshold",
                "must be above zero",
            )?;
        }
        reject_if(
            self.break_duration.is_zero(),
            "break_duration",
            "must be above zero, e.g. \"30s\"",
        )?;
        if let Some(growth) = self.break_growth {
            reject_if(
                !(growth.factor.is_finite() && growth.factor >= 1.0),
                "break_growth.factor",
                format!("must be at least 1.0, got {}", growth.factor),
            )?;
            reject_if(
                growth.cap < self.break_duration,
                "break_growth.cap",
                "must be at least the break duration",
            )?;
        }
        reject_if(self.probes == 0, "probes", "must be at least 1")?;
        Ok(())
    }
}

fn check_ratio(field: &'static str, ratio: f64) -> Result<(), ConfigError> {
    if ratio.is_finite() && ratio > 0.0 && ratio <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be above 0.0 and at most 1.0, got {ratio}"),
        ))
    }
}

/// What a call's outcome means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    Ignored,
}

/// What each kind of verdict means to the breaker: by default a failure where
/// [`Kind::is_failure`] says so, ignored for local rejections, else a success; the builder may
/// override any kind. Slots are found by an exhaustive `match`, so a new kind cannot be missed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FailureTable([Option<Outcome>; 10]);

impl FailureTable {
    fn slot(kind: Kind) -> usize {
        match kind {
            Kind::Success => 0,
            Kind::RateLimited => 1,
            Kind::Overloaded => 2,
            Kind::ServerError => 3,
            Kind::Timeout => 4,
            Kind::Connection => 5,
            Kind::ClientError => 6,
            Kind::Auth => 7,
            Kind::QuotaExhausted => 8,
            Kind::Rejected => 9,
        }
    }

    pub(crate) fn set(&mut self, kind: Kind, failure: bool) {
        self.0[Self::slot(kind)] = Some(if failure {
            Outcome::Failure
        } else {
            Outcome::Success
        });
    }

    pub(crate) fn outcome(&self, kind: Kind) -> Outcome {
        self.0[Self::slot(kind)].unwrap_or(match kind {
            Kind::Rejected => Outcome::Ignored,
            kind if kind.is_failure() => Outcome::Failure,
            _ => Outcome::Success,
        })
    }
}

/// Builds a [`CircuitBreakerLayer`](super::CircuitBreakerLayer): setters over a [`BreakerConfig`]
/// (see its fields for the defaults), plus what only code can give: which verdicts count as
/// failures, a key extractor, a name and a listener. By default failures are overloaded answers,
/// transient 5xx, timeouts and connection failures (not 429s, not client errors); local rejections
/// are ignored.
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::{SlowCalls, Window};
/// use tollgate::classify::Kind;
/// use tollgate::circuit_breaker::CircuitBreakerLayer;
///
/// let layer = CircuitBreakerLayer::builder()
///     .failure_ratio(0.5)
///     .window(Window::time(Duration::from_secs(30)))
///     .min_calls(10)
///     .slow_calls(SlowCalls::new(Duration::from_secs(20), 0.8))
///     .break_duration(Duration::from_secs(15))
///     .break_growth(2.0, Duration::from_secs(300))
///     .probes(3)
///     .count_as_failure(Kind::RateLimited, false)
///     .name("anthropic")
///     .on_state_change(|change| eprintln!("{:?} -> {:?}", change.from, change.to))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
pub struct CircuitBreakerBuilder<K = NoKey> {
    pub(super) config: BreakerConfig,
    pub(super) failures: FailureTable,
    pub(super) key: K,
    pub(super) name: Option<Arc<str>>,
    pub(super) listener: Option<Listener>,
}

impl<K> fmt::Debug for CircuitBreakerBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("config", &self.config)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        CircuitBreakerBuilder {
            config: BreakerConfig::default(),
            failures: FailureTable::default(),
            key: NoKey,
            name: None,
            listener: None,
        }
    }
}

impl<K> CircuitBreakerBuilder<K> {
    /// Replaces every setting of [`BreakerConfig`] with `config`.
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }

    crate::setters::config_setters!(BreakerConfig {
        consecutive_failures: u32 => Some,
        failure_ratio: f64,
        window: Window,
        min_calls: u32,
        slow_calls: SlowCalls => Some,
        break_duration: Duration,
        probes: u32,
    });

    /// Multiply the break by `factor` on each trip in a row, up to `cap` (see [`BreakGrowth`]).
    pub fn break_growth(mut self, factor: f64, cap: Duration) -> Self {
        self.config.break_growth = Some(BreakGrowth::new(factor, cap));
        self
    }

    /// Whether outcomes of `kind` count as failures (`true`) or successes (`false`).
    pub fn count_as_failure(mut self, kind: Kind, failure: bool) -> Self {
        self.failures.set(kind, failure);
        self
    }

    /// A name for errors, logs and listeners ("openai", "claude-sonnet"...).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `listener` on every state change (to page on "provider X open").
    pub fn on_state_change(
        mut self,
        listener: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Gives each key its own circuit (per host, per model; see [`key`](crate::key)).
    pub fn key<K2: KeyType>(self, key: K2) -> CircuitBreakerBuilder<K2> {
        CircuitBreakerBuilder {
            config: self.config,
            failures: self.failures,
            key,
            name: self.name,
            listener: self.listener,
        }
    }
}
