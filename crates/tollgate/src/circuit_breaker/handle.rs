//! [`CircuitBreakerHandle`]: a breaker's state at runtime.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::breakers::Breakers;
use super::circuit::{Circuit, Metrics};
use super::state::BreakerState;

/// Reads a breaker's state and counts, and lets an operator isolate or reset it. It answers
/// like [`RateLimitHandle`](crate::rate_limit::RateLimitHandle): the default circuit, a keyed
/// one by key, how many keys are held.
///
/// ```
/// use tollgate::circuit_breaker::BreakerState;
/// use tollgate::CircuitBreakerLayer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let handle = CircuitBreakerLayer::new().handle();
/// handle.isolate();
/// assert_eq!(handle.state(), BreakerState::Isolated);
/// handle.reset();
/// assert_eq!(handle.state(), BreakerState::Closed);
/// assert_eq!(handle.keys(), 0);
/// # }
/// ```
pub struct CircuitBreakerHandle<Key = ()> {
    breakers: Arc<Breakers<Key>>,
}

impl<Key> Clone for CircuitBreakerHandle<Key> {
    fn clone(&self) -> Self {
        CircuitBreakerHandle {
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<Key> fmt::Debug for CircuitBreakerHandle<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CircuitBreakerHandle")
            .field(&self.breakers)
            .finish()
    }
}

impl<Key: Hash + Eq> CircuitBreakerHandle<Key> {
    pub(crate) fn new(breakers: Arc<Breakers<Key>>) -> Self {
        CircuitBreakerHandle { breakers }
    }

    /// The default circuit's state.
    pub fn state(&self) -> BreakerState {
        self.breakers.circuits.default().state()
    }

    /// The default circuit's counts.
    pub fn metrics(&self) -> Metrics {
        self.breakers.circuits.default().metrics()
    }

    /// The state of `key`'s circuit, if it exists.
    pub fn state_of(&self, key: &Key) -> Option<BreakerState> {
        Some(self.breakers.circuits.find(key)?.state())
    }

    /// Forces every circuit open until [`reset`](Self::reset).
    pub fn isolate(&self) {
        self.breakers.circuits.each(Circuit::isolate);
    }

    /// Closes every circuit and forgets their history.
    pub fn reset(&self) {
        self.breakers.circuits.each(Circuit::reset);
    }

    /// Keyed circuits held (healthy idle ones are dropped as new keys arrive).
    pub fn keys(&self) -> usize {
        self.breakers.circuits.len()
    }
}
