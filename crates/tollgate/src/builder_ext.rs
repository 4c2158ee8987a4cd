//! [`ServiceBuilderExt`]: tollgate's layers as methods of tower's `ServiceBuilder`.

use tower::ServiceBuilder;
use tower_layer::Stack;

use crate::circuit_breaker::BreakerConfig;
use crate::circuit_breaker::CircuitBreakerLayer;
use crate::classify::ClassifyLayer;
use crate::rate_limit::LimitConfig;
use crate::rate_limit::RateLimitLayer;
use crate::retry::BackoffRetryLayer;
use crate::retry::RetryConfig;
use crate::stack::{Policy, StandardLayer};
use crate::ConfigError;

/// tollgate's layers as methods of [`ServiceBuilder`], in tower-http's manner: the whole stack
/// from a [`Policy`] in one call, or one layer at a time from its settings value. The methods
/// that take settings check them and return the [`ConfigError`] that names a bad field.
///
/// ```
/// use tollgate::rate_limit::{LimitConfig, Rate};
/// use tollgate::stack::Policy;
/// use tollgate::{Provider, ServiceBuilderExt};
/// use tower::ServiceBuilder;
///
/// let mut policy = Policy::preset(Provider::OpenAi);
/// policy.limits.requests = Some(Rate::per_minute(500));
/// let stack = ServiceBuilder::new().tollgate(&policy)?;
///
/// // Or layer by layer, outermost first:
/// let mut limits = LimitConfig::default();
/// limits.tokens = Some(Rate::per_minute(200_000));
/// let by_hand = ServiceBuilder::new()
///     .backoff_retry(Default::default())?
///     .circuit_breaker(Default::default())?
///     .limits(limits)?
///     .classify();
/// # let _ = (stack, by_hand);
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
pub trait ServiceBuilderExt<L>: Sized {
    /// Adds the standard stack for `policy` (retry, breaker, rate limit, classification).
    fn tollgate(
        self,
        policy: &Policy,
    ) -> Result<ServiceBuilder<Stack<StandardLayer, L>>, ConfigError>;

    /// Adds a [`BackoffRetryLayer`] with `config`.
    fn backoff_retry(
        self,
        config: RetryConfig,
    ) -> Result<ServiceBuilder<Stack<BackoffRetryLayer, L>>, ConfigError>;

    /// Adds a [`CircuitBreakerLayer`] with `config`.
    fn circuit_breaker(
        self,
        config: BreakerConfig,
    ) -> Result<ServiceBuilder<Stack<CircuitBreakerLayer, L>>, ConfigError>;

    /// Adds a [`RateLimitLayer`] with `config` (named apart from tower's own `rate_limit`).
    fn limits(
        self,
        config: LimitConfig,
    ) -> Result<ServiceBuilder<Stack<RateLimitLayer, L>>, ConfigError>;

    /// Adds a [`ClassifyLayer`] (innermost: its verdict describes one attempt).
    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn tollgate(
        self,
        policy: &Policy,
    ) -> Result<ServiceBuilder<Stack<StandardLayer, L>>, ConfigError> {
        Ok(self.layer(StandardLayer::new(policy)?))
    }

    fn backoff_retry(
        self,
        config: RetryConfig,
    ) -> Result<ServiceBuilder<Stack<BackoffRetryLayer, L>>, ConfigError> {
        Ok(self.layer(BackoffRetryLayer::from_config(config)?))
    }

    fn circuit_breaker(
        self,
        config: BreakerConfig,
    ) -> Result<ServiceBuilder<Stack<CircuitBreakerLayer, L>>, ConfigError> {
        Ok(self.layer(CircuitBreakerLayer::from_config(config)?))
    }

    fn limits(
        self,
        config: LimitConfig,
    ) -> Result<ServiceBuilder<Stack<RateLimitLayer, L>>, ConfigError> {
        Ok(self.layer(RateLimitLayer::from_config(config)?))
    }

    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>> {
        self.layer(ClassifyLayer::new())
    }
}
