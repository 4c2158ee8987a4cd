//! [`CircuitBreakerLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::breakers::Breakers;
use super::config::{BreakerConfig, CircuitBreakerBuilder};
use super::handle::CircuitBreakerHandle;
use super::service::CircuitBreaker;
use super::settings::Settings;
use crate::key::{KeyType, NoKey};
use crate::ConfigError;

/// Fails fast while a provider is down, and finds out by itself when it is back.
///
/// The circuits live in an `Arc` owned by the layer: every service it builds and every clone
/// shares them, so a breaker under axum (one service per connection) is one breaker. Build it
/// with [`builder`](Self::builder), [`from_config`](Self::from_config) or [`new`](Self::new).
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::CircuitBreakerLayer;
///
/// let breaker = CircuitBreakerLayer::builder()
///     .consecutive_failures(5)
///     .break_duration(Duration::from_secs(30))
///     .build()?;
/// let handle = breaker.handle();
/// assert_eq!(handle.snapshot().state, tollgate::circuit_breaker::BreakerState::Closed);
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
pub struct CircuitBreakerLayer<K: KeyType = NoKey> {
    key: K,
    breakers: Arc<Breakers<K::Key>>,
}

impl<K: KeyType + Clone> Clone for CircuitBreakerLayer<K> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            key: self.key.clone(),
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<K: KeyType> fmt::Debug for CircuitBreakerLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

impl<K: KeyType> CircuitBreakerLayer<K> {
    pub(crate) fn with_settings(settings: Settings, key: K) -> Self {
        CircuitBreakerLayer {
            key,
            breakers: Arc::new(Breakers::new(settings)),
        }
    }

    /// A handle to read the state and to isolate or reset circuits.
    pub fn handle(&self) -> CircuitBreakerHandle<K::Key> {
        CircuitBreakerHandle::new(Arc::clone(&self.breakers))
    }
}

impl<S, K: KeyType + Clone> Layer<S> for CircuitBreakerLayer<K> {
    type Service = CircuitBreaker<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.key.clone(), Arc::clone(&self.breakers))
    }
}

impl CircuitBreakerLayer {
    /// A builder starting from [`BreakerConfig::default`].
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    /// A layer with `config`'s settings, checked.
    pub fn from_config(config: BreakerConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// A layer with the default settings (see [`BreakerConfig`]).
    pub fn new() -> Self {
        CircuitBreakerLayer::with_settings(Settings::from(BreakerConfig::default()), NoKey)
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> CircuitBreakerBuilder<K> {
    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<CircuitBreakerLayer<K>, ConfigError>
    where
        K: KeyType,
    {
        self.config.validate()?;
        Ok(CircuitBreakerLayer::with_settings(
            Settings {
                config: self.config,
                failures: self.failures,
                name: self.name,
                listener: self.listener,
            },
            self.key,
        ))
    }
}
