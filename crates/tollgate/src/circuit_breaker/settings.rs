//! What trips a circuit and how it recovers: [`Trip`], [`SlowCalls`], [`CircuitBreakerBuilder`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::window::Window;
use crate::classify::Kind;
use crate::ConfigError;

/// The condition that opens a closed circuit.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Trip {
    /// This many failures in a row (pybreaker's model).
    ConsecutiveFailures(u32),
    /// A failure ratio over a window, once the window holds `min_calls` calls (resilience4j's and
    /// Polly's model).
    FailureRatio {
        /// Share of failures (0.0 to 1.0] that trips the circuit.
        ratio: f64,
        /// The window the ratio is computed over.
        window: Window,
        /// Calls the window must hold before the ratio counts.
        min_calls: u32,
    },
}

/// Trip also when too many calls are slow (LLM latency spikes often come before failures).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowCalls {
    /// A call taking at least this long is slow.
    pub threshold: Duration,
    /// Share of slow calls (0.0 to 1.0] that trips the circuit.
    pub ratio: f64,
}

/// A state change, as given to a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The breaker's name, if it has one.
    pub name: Option<Arc<str>>,
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
}

/// The observable state of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until the break is over.
    Open,
    /// A few probe calls test the provider.
    HalfOpen,
    /// Forced open by an operator until reset.
    Isolated,
}

impl BreakerState {
    /// A short lowercase name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Isolated => "isolated",
        }
    }
}

type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;

/// What a call's outcome means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    Ignored,
}

/// Every kind of verdict, for the failure table.
const KINDS: [Kind; 10] = [
    Kind::Success,
    Kind::RateLimited,
    Kind::Overloaded,
    Kind::ServerError,
    Kind::Timeout,
    Kind::Connection,
    Kind::ClientError,
    Kind::Auth,
    Kind::QuotaExhausted,
    Kind::Rejected,
];

fn kind_index(kind: Kind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

pub(crate) struct Settings {
    pub(crate) trip: Trip,
    pub(crate) slow: Option<SlowCalls>,
    pub(crate) break_duration: Duration,
    pub(crate) growth: Option<(f64, Duration)>,
    pub(crate) probes: u32,
    pub(crate) failures: [Outcome; KINDS.len()],
    pub(crate) name: Option<Arc<str>>,
    pub(crate) listener: Option<Listener>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("trip", &self.trip)
            .field("slow", &self.slow)
            .field("break_duration", &self.break_duration)
            .field("growth", &self.growth)
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub(crate) fn outcome(&self, kind: Kind) -> Outcome {
        self.failures[kind_index(kind)]
    }

    /// The break after `trips` trips in a row (1 for the first).
    pub(crate) fn break_for(&self, trips: u32) -> Duration {
        match self.growth {
            None => self.break_duration,
            Some((factor, cap)) => {
                let grown = self.break_duration.as_secs_f64()
                    * factor.powi(trips.saturating_sub(1).min(64) as i32);
                Duration::try_from_secs_f64(grown).unwrap_or(cap).min(cap)
            }
        }
    }

    /// The window slow calls (and ratios) are counted over.
    pub(crate) fn window(&self) -> (Window, u32) {
        match self.trip {
            Trip::FailureRatio {
                window, min_calls, ..
            } => (window, min_calls),
            // Consecutive mode counts failures without a window; slow calls still need one.
            Trip::ConsecutiveFailures(_) => (Window::Count(100), 20),
        }
    }
}

/// Builds a [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// Defaults: trips at a 50% failure ratio over the last 100 calls once 20 were made; a 30 s
/// break; one probe; failures are overloaded answers, transient 5xx, timeouts and connection
/// failures (not 429s, not client errors); local rejections are ignored.
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::{SlowCalls, Trip, Window};
/// use tollgate::classify::Kind;
/// use tollgate::CircuitBreakerLayer;
///
/// let layer = CircuitBreakerLayer::builder()
///     .trip(Trip::FailureRatio { ratio: 0.5, window: Window::time(Duration::from_secs(30)), min_calls: 10 })
///     .slow_calls(SlowCalls { threshold: Duration::from_secs(20), ratio: 0.8 })
///     .break_duration(Duration::from_secs(15))
///     .grow_break(2.0, Duration::from_secs(300))
///     .probes(3)
///     .count_as_failure(Kind::RateLimited, false)
///     .name("anthropic")
///     .on_state_change(|change| eprintln!("{:?} -> {:?}", change.from, change.to))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
pub struct CircuitBreakerBuilder {
    settings: Settings,
}

impl fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CircuitBreakerBuilder")
            .field(&self.settings)
            .finish()
    }
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        let mut failures = [Outcome::Success; KINDS.len()];
        for kind in KINDS {
            if kind.is_failure() {
                failures[kind_index(kind)] = Outcome::Failure;
            }
        }
        failures[kind_index(Kind::Rejected)] = Outcome::Ignored;
        CircuitBreakerBuilder {
            settings: Settings {
                trip: Trip::FailureRatio {
                    ratio: 0.5,
                    window: Window::Count(100),
                    min_calls: 20,
                },
                slow: None,
                break_duration: Duration::from_secs(30),
                growth: None,
                probes: 1,
                failures,
                name: None,
                listener: None,
            },
        }
    }
}

impl CircuitBreakerBuilder {
    /// What opens the circuit.
    pub fn trip(mut self, trip: Trip) -> Self {
        self.settings.trip = trip;
        self
    }

    /// Also trip when too many calls are slow.
    pub fn slow_calls(mut self, slow: SlowCalls) -> Self {
        self.settings.slow = Some(slow);
        self
    }

    /// How long the circuit stays open before probing (default 30 s).
    pub fn break_duration(mut self, duration: Duration) -> Self {
        self.settings.break_duration = duration;
        self
    }

    /// Multiply the break by `factor` on each trip in a row, up to `cap`.
    pub fn grow_break(mut self, factor: f64, cap: Duration) -> Self {
        self.settings.growth = Some((factor, cap));
        self
    }

    /// Probe calls admitted while half-open; all must succeed to close (default 1).
    pub fn probes(mut self, probes: u32) -> Self {
        self.settings.probes = probes;
        self
    }

    /// Whether outcomes of `kind` count as failures (`true`) or successes (`false`).
    pub fn count_as_failure(mut self, kind: Kind, failure: bool) -> Self {
        self.settings.failures[kind_index(kind)] = if failure {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        self
    }

    /// A name for errors, logs and listeners ("openai", "claude-sonnet"...).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Calls `listener` on every state change (to page on "provider X open").
    pub fn on_state_change(
        mut self,
        listener: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.settings.listener = Some(Arc::new(listener));
        self
    }

    /// The settings, unchecked (the defaults are valid).
    pub(crate) fn into_settings(self) -> Settings {
        self.settings
    }

    pub(crate) fn validate(self) -> Result<Settings, ConfigError> {
        let s = &self.settings;
        match s.trip {
            Trip::ConsecutiveFailures(0) => {
                return Err(ConfigError::new(
                    "trip.consecutive_failures",
                    "must be at least 1",
                ))
            }
            Trip::FailureRatio {
                ratio,
                window,
                min_calls,
            } => {
                check_ratio("trip.ratio", ratio)?;
                if min_calls == 0 {
                    return Err(ConfigError::new("trip.min_calls", "must be at least 1"));
                }
                match window {
                    Window::Count(0) => {
                        return Err(ConfigError::new("trip.window", "must hold at least 1 call"))
                    }
                    Window::Time { duration, buckets } if duration.is_zero() || buckets == 0 => {
                        return Err(ConfigError::new(
                            "trip.window",
                            "a time window needs a duration above zero and at least 1 bucket",
                        ))
                    }
                    _ => {}
                }
            }
            Trip::ConsecutiveFailures(_) => {}
        }
        if let Some(slow) = s.slow {
            check_ratio("slow_calls.ratio", slow.ratio)?;
            if slow.threshold.is_zero() {
                return Err(ConfigError::new(
                    "slow_calls.threshold",
                    "must be above zero",
                ));
            }
        }
        if s.break_duration.is_zero() {
            return Err(ConfigError::new(
                "break_duration",
                "must be above zero, e.g. \"30s\"",
            ));
        }
        if let Some((factor, cap)) = s.growth {
            if !(factor.is_finite() && factor >= 1.0) {
                return Err(ConfigError::new(
                    "grow_break.factor",
                    format!("must be at least 1.0, got {factor}"),
                ));
            }
            if cap < s.break_duration {
                return Err(ConfigError::new(
                    "grow_break.cap",
                    "must be at least the break duration",
                ));
            }
        }
        if s.probes == 0 {
            return Err(ConfigError::new("probes", "must be at least 1"));
        }
        Ok(self.settings)
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
