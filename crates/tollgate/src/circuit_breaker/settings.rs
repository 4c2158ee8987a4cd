//! A built breaker's settings: its [`BreakerConfig`] and what only code gives.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::config::{BreakGrowth, BreakerConfig, FailureTable, Outcome};
use super::state::Listener;
use crate::classify::Kind;

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
                let grown =
                    base.as_secs_f64() * factor.powi(trips.saturating_sub(1).min(64) as i32);
                Duration::try_from_secs_f64(grown).unwrap_or(cap).min(cap)
            }
        }
    }
}
