//! [`CircuitBreakerLayer`] and its [`CircuitBreakerHandle`].

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use tower_layer::Layer;

use super::circuit::{Circuit, Metrics};
use super::service::CircuitBreaker;
use super::settings::{BreakerState, CircuitBreakerBuilder, Settings};
use crate::key::{KeyType, NoKey, Registry};
use crate::ConfigError;

/// The circuits of one layer: the default one and one per key.
pub(crate) struct Breakers<Key> {
    settings: Arc<Settings>,
    default: Arc<Circuit>,
    keyed: Mutex<Registry<Key, Circuit>>,
}

impl<Key> fmt::Debug for Breakers<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<Key: Hash + Eq> Breakers<Key> {
    fn keyed(&self) -> MutexGuard<'_, Registry<Key, Circuit>> {
        self.keyed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn circuit(&self, key: Option<Key>) -> Arc<Circuit> {
        let Some(key) = key else {
            return Arc::clone(&self.default);
        };
        let settings = Arc::clone(&self.settings);
        self.keyed().get_or_insert(
            key,
            |_| Circuit::new(settings, Instant::now()),
            Circuit::is_idle,
        )
    }
}

/// Fails fast while a provider is down, and finds out by itself when it is back.
///
/// The circuits live in an `Arc` owned by the layer: every service it builds and every clone
/// shares them, so a breaker under axum (one service per connection) is one breaker.
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::Trip;
/// use tollgate::CircuitBreakerLayer;
///
/// let breaker = CircuitBreakerLayer::builder()
///     .trip(Trip::ConsecutiveFailures(5))
///     .break_duration(Duration::from_secs(30))
///     .build()?;
/// let handle = breaker.handle();
/// assert_eq!(handle.state(), tollgate::circuit_breaker::BreakerState::Closed);
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
pub struct CircuitBreakerLayer<K = NoKey, Key = ()> {
    key: K,
    breakers: Arc<Breakers<Key>>,
}

impl<K: Clone, Key> Clone for CircuitBreakerLayer<K, Key> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            key: self.key.clone(),
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<K, Key> fmt::Debug for CircuitBreakerLayer<K, Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A builder starting from the defaults.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    /// A layer with the default settings (see [`CircuitBreakerBuilder`]).
    pub fn new() -> Self {
        with_settings(Self::builder().into_settings(), NoKey)
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerBuilder {
    /// Checks the settings and builds the layer with one circuit.
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        self.build_keyed(NoKey)
    }

    /// Checks the settings and builds the layer with one circuit per key (per host, per model);
    /// see [`key`](crate::key).
    pub fn build_keyed<K: KeyType>(
        self,
        key: K,
    ) -> Result<CircuitBreakerLayer<K, K::Key>, ConfigError> {
        Ok(with_settings(self.validate()?, key))
    }
}

fn with_settings<K, Key: Hash + Eq>(settings: Settings, key: K) -> CircuitBreakerLayer<K, Key> {
    let settings = Arc::new(settings);
    CircuitBreakerLayer {
        key,
        breakers: Arc::new(Breakers {
            default: Arc::new(Circuit::new(Arc::clone(&settings), Instant::now())),
            keyed: Mutex::new(Registry::new()),
            settings,
        }),
    }
}

impl<K, Key: Hash + Eq> CircuitBreakerLayer<K, Key> {
    /// A handle to read the state and to isolate or reset circuits.
    pub fn handle(&self) -> CircuitBreakerHandle<Key> {
        CircuitBreakerHandle {
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<S, K: Clone, Key> Layer<S> for CircuitBreakerLayer<K, Key> {
    type Service = CircuitBreaker<S, K, Key>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.key.clone(), Arc::clone(&self.breakers))
    }
}

/// Reads a breaker's state and counts, and lets an operator isolate or reset it.
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
    /// The default circuit's state.
    pub fn state(&self) -> BreakerState {
        self.breakers.default.state()
    }

    /// The default circuit's counts.
    pub fn metrics(&self) -> Metrics {
        self.breakers.default.metrics()
    }

    /// The state of `key`'s circuit, if it exists.
    pub fn state_of(&self, key: &Key) -> Option<BreakerState> {
        let circuit = self.breakers.keyed().get(key).cloned()?;
        Some(circuit.state())
    }

    /// Forces every circuit open until [`reset`](Self::reset).
    pub fn isolate(&self) {
        self.each(Circuit::isolate);
    }

    /// Closes every circuit and forgets their history.
    pub fn reset(&self) {
        self.each(Circuit::reset);
    }

    /// Keyed circuits held.
    pub fn keys(&self) -> usize {
        self.breakers.keyed().len()
    }

    fn each(&self, f: impl Fn(&Circuit)) {
        f(&self.breakers.default);
        let keyed: Vec<_> = self.breakers.keyed().values().cloned().collect();
        keyed.iter().for_each(|c| f(c));
    }
}
