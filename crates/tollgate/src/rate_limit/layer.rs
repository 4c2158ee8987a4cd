//! [`RateLimitLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::cost::EstimateTokens;
use super::handle::RateLimitHandle;
use super::limiter::Limiter;
use super::service::RateLimit;
use crate::key::{KeyType, NoKey};

/// Keeps a client under the provider's limits: requests per interval, tokens per interval and
/// requests in flight, all at once, shared by every clone.
///
/// The quotas live in an `Arc` owned by the layer: every service it builds (axum builds one per
/// connection) and every clone of those draws from the same buckets. Build it with
/// [`builder`](Self::builder) or [`from_config`](Self::from_config).
///
/// ```
/// use tollgate::rate_limit::Rate;
/// use tollgate::{ClassifyLayer, RateLimitLayer};
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
