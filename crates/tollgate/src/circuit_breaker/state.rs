//! The observable states of a circuit and the changes a listener is told of.

use std::sync::Arc;

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
