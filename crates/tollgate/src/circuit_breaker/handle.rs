//! [`CircuitBreakerHandle`]: a breaker's state at runtime.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::breakers::Breakers;
use super::circuit::{Circuit, Snapshot};

/// Reads a breaker's state and counts, and lets an operator isolate or reset it. It answers
/// like [`RateLimitHandle`](crate::rate_limit::RateLimitHandle): the default circuit, a keyed
/// one by key, how many keys are held.
///
/// ```
/// use tollgate::circuit_breaker::BreakerState;
/// use tollgate::circuit_breaker::CircuitBreakerLayer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let handle = CircuitBreakerLayer::new().handle();
/// handle.isolate();
/// assert_eq!(handle.snapshot().state, BreakerState::Isolated);
/// handle.reset();
/// assert_eq!(handle.snapshot().state, BreakerState::Closed);
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

    /// The default circuit right now: its state and counts.
    pub fn snapshot(&self) -> Snapshot {
        self.breakers.circuits.default().snapshot()
    }

    /// The circuit of `key` right now, if it exists.
    pub fn snapshot_of(&self, key: &Key) -> Option<Snapshot> {
        Some(self.breakers.circuits.find(key)?.snapshot())
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
