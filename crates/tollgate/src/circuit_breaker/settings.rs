//! A built breaker's settings, its states and the table of what counts as a failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::config::{BreakGrowth, BreakerConfig};
use crate::classify::Kind;

/// A state change, as given to a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

pub(crate) type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;

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

/// A built breaker's settings: the checked [`BreakerConfig`] and what only code gives.
pub(crate) struct Settings {
    pub(crate) config: BreakerConfig,
    pub(crate) failures: FailureTable,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) listener: Option<Listener>,
}

impl From<BreakerConfig> for Settings {
    fn from(config: BreakerConfig) -> Self {
        Settings {
            config,
            failures: FailureTable::default(),
            name: None,
            listener: None,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub(crate) fn outcome(&self, kind: Kind) -> Outcome {
        self.failures.outcome(kind)
    }

    /// The break after `trips` trips in a row (1 for the first).
    pub(crate) fn break_for(&self, trips: u32) -> Duration {
        let base = self.config.break_duration;
        match self.config.break_growth {
            None => base,
            Some(BreakGrowth { factor, cap }) => {
                let grown = base.as_secs_f64() * factor.powi(trips.saturating_sub(1).min(64) as i32);
                Duration::try_from_secs_f64(grown).unwrap_or(cap).min(cap)
            }
        }
    }
}
