//! [`RateLimitLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::config::{LimitConfig, RateLimitBuilder};
use super::cost::EstimateTokens;
use super::handle::RateLimitHandle;
use super::limiter::Limiter;
use super::service::RateLimit;
use super::shared::StoreSettings;
use super::store::OnStoreError;
use crate::key::{KeyType, NoKey};
use crate::ConfigError;

/// Keeps a client under the provider's limits: requests per interval, tokens per interval and
/// requests in flight, all at once, shared by every clone.
///
/// The quotas live in an `Arc` owned by the layer: every service it builds (axum builds one per
/// connection) and every clone of those draws from the same buckets. Build it with
/// [`builder`](Self::builder) or [`from_config`](Self::from_config).
///
/// ```
/// use tollgate::rate_limit::Rate;
/// use tollgate::classify::ClassifyLayer;
/// use tollgate::rate_limit::RateLimitLayer;
/// use tower::ServiceBuilder;
///
/// // OpenAI tier 1 for gpt-4o-mini: 500 RPM and 200,000 TPM; at most 16 requests in flight.
/// let limit = RateLimitLayer::builder()
///     .requests(Rate::per_minute(500))
///     .tokens(Rate::per_minute(200_000))
///     .concurrency(16)
///     .build()?;
/// let stack = ServiceBuilder::new().layer(limit).layer(ClassifyLayer::new());
/// # let _ = stack;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
pub struct RateLimitLayer<C = EstimateTokens, K: KeyType = NoKey> {
    cost: C,
    key: K,
    limiter: Arc<Limiter<K::Key>>,
}

impl<C: Clone, K: KeyType + Clone> Clone for RateLimitLayer<C, K> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            cost: self.cost.clone(),
            key: self.key.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<C, K: KeyType> fmt::Debug for RateLimitLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<C, K: KeyType> RateLimitLayer<C, K> {
    pub(crate) fn with_limiter(cost: C, key: K, limiter: Limiter<K::Key>) -> Self {
        RateLimitLayer {
            cost,
            key,
            limiter: Arc::new(limiter),
        }
    }

    /// A handle to read and change the limits at runtime.
    pub fn handle(&self) -> RateLimitHandle<K::Key> {
        RateLimitHandle::new(Arc::clone(&self.limiter))
    }
}

impl<S, C: Clone, K: KeyType + Clone> Layer<S> for RateLimitLayer<C, K> {
    type Service = RateLimit<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            self.cost.clone(),
            self.key.clone(),
            Arc::clone(&self.limiter),
        )
    }
}

impl<C, K> RateLimitBuilder<C, K> {
    /// Checks the settings and builds the layer.
    pub fn build(mut self) -> Result<RateLimitLayer<C, K>, ConfigError>
    where
        C: 'static,
        K: KeyType,
    {
        if self.store.is_some() && !self.adaptive_asked {
            self.config.adaptive = None;
        }
        self.config.validate()?;
        if let Some(store) = &self.store {
            check_store(&self.config, store)?;
        }
        let limiter = Limiter::new(self.config, self.name, self.store);
        Ok(RateLimitLayer::with_limiter(self.cost, self.key, limiter))
    }
}

fn check_store(config: &LimitConfig, store: &StoreSettings) -> Result<(), ConfigError> {
    if config.adaptive.is_some() {
        return Err(ConfigError::new(
            "adaptive",
            "adaptive limits are per process; with a shared store, set the limit itself",
        ));
    }
    let limits = config.limits();
    if limits.requests.is_none() && !limits.charges_tokens() && limits.requests_per_day.is_none() {
        return Err(ConfigError::new(
            "store",
            "a shared store holds request, token or daily limits: set at least one",
        ));
    }
    if store.store.on_error == (OnStoreError::FailOpen { processes: 0 }) {
        return Err(ConfigError::new(
            "store",
            "FailOpen needs the number of processes sharing the quota (at least 1)",
        ));
    }
    if store.name_of.is_none() {
        return Err(ConfigError::new(
            "store",
            "the key was set after the store: call .key() before .store()",
        ));
    }
    Ok(())
}

impl RateLimitLayer {
    /// A builder starting from [`LimitConfig::default`]: no limit set, so the request rate is
    /// found from the provider's refusals until you set one.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder {
            config: LimitConfig::default(),
            cost: EstimateTokens::new(),
            key: NoKey,
            name: None,
            store: None,
            adaptive_asked: false,
        }
    }

    /// A layer with `config`'s settings, checked.
    pub fn from_config(config: LimitConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }
}
