//! [`StandardLayer`]: the recommended stack in one layer.

use tower_layer::Layer;

use super::policy::Policy;
use crate::circuit_breaker::CircuitBreakerLayer;
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
use crate::classify::ClassifyLayer;
use crate::classify::{ClassifyService, DefaultClassifier};
use crate::key::NoKey;
use crate::rate_limit::RateLimitLayer;
use crate::rate_limit::{
    EstimateTokens, OnStoreError, RateLimit, RateLimitBuilder, RateLimitHandle, Store,
};
use crate::retry::BackoffRetry;
use crate::retry::BackoffRetryLayer;
use crate::ConfigError;

/// The service a [`StandardLayer`] builds: retry, then circuit breaker, then rate limit, then
/// classification, then your client.
pub type StandardService<S> = BackoffRetry<
    CircuitBreaker<RateLimit<ClassifyService<S, DefaultClassifier>, EstimateTokens, NoKey>, NoKey>,
>;

/// The recommended order, built from a [`Policy`] in one call.
///
/// Retry is outermost, so every attempt takes its own rate-limit permit and passes the breaker
/// (a retry storm cannot bypass either); the breaker sits outside the limiter, so a call it
/// refuses never waits for a permit; classification is innermost, so its verdict describes one
/// attempt and every layer reads it. The request rate adapts to the provider's refusals: below
/// the configured limit, which is a ceiling, or from nothing when none is set (and adopts the
/// limit the provider's headers report). Set `policy.limits.adaptive` to `None` for a
/// strictly fixed limit; without limits, that limiter only pauses on a 429's hint.
///
/// ```
/// use tollgate::rate_limit::Rate;
/// use tollgate::stack::{Policy, StandardLayer};
/// use tollgate::Provider;
/// use tower::ServiceBuilder;
///
/// let mut policy = Policy::preset(Provider::Anthropic);
/// policy.limits.requests = Some(Rate::per_minute(50));
/// let layer = StandardLayer::new(&policy)?;
/// let breaker = layer.breaker_handle();
/// # let client = tower::service_fn(|_: http::Request<String>| async { Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new())) });
/// let service = ServiceBuilder::new().layer(layer).service(client);
/// # let _ = (service, breaker);
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StandardLayer {
    retry: BackoffRetryLayer,
    breaker: CircuitBreakerLayer,
    limit: RateLimitLayer,
    classify: ClassifyLayer,
}

impl StandardLayer {
    /// Builds the four layers from `policy`, checking every setting.
    pub fn new(policy: &Policy) -> Result<Self, ConfigError> {
        policy.validate()?;
        Self::assemble(policy, Self::limit(policy).build()?)
    }

    /// Like [`new`](Self::new), with the rate limiter's buckets in `store`, shared with every
    /// process that uses it (see [`Store`]). The policy must set a request or token limit.
    ///
    /// ```
    /// # #[derive(Debug)] struct MyStore;
    /// # impl tollgate::rate_limit::Store for MyStore {
    /// #     fn acquire(&self, _: tollgate::rate_limit::Charge) -> tollgate::rate_limit::StoreFuture<tollgate::rate_limit::Grant> { Box::pin(async { Ok(tollgate::rate_limit::Grant::Admitted) }) }
    /// #     fn pause(&self, _: &str, _: std::time::Duration) -> tollgate::rate_limit::StoreFuture<()> { Box::pin(async { Ok(()) }) }
    /// #     fn lower(&self, _: &str, _: tollgate::classify::LimitKind, _: Rate, _: u64) -> tollgate::rate_limit::StoreFuture<()> { Box::pin(async { Ok(()) }) }
    /// # }
    /// use tollgate::rate_limit::{OnStoreError, Rate};
    /// use tollgate::stack::{Policy, StandardLayer};
    /// use tollgate::Provider;
    ///
    /// let mut policy = Policy::preset(Provider::OpenAi);
    /// policy.limits.requests = Some(Rate::per_minute(500));
    /// let layer = StandardLayer::with_store(&policy, MyStore, OnStoreError::FailOpen { processes: 4 })?;
    /// # let _ = layer;
    /// # Ok::<(), tollgate::ConfigError>(())
    /// ```
    pub fn with_store(
        policy: &Policy,
        store: impl Store,
        on_error: OnStoreError,
    ) -> Result<Self, ConfigError> {
        policy.validate()?;
        Self::assemble(policy, Self::limit(policy).store(store, on_error).build()?)
    }

    /// The rate limiter's builder: the policy's limits, named for the provider, pausing on a
    /// 429's hint no longer than the retry layer would wait for it.
    fn limit(policy: &Policy) -> RateLimitBuilder {
        let mut limits = policy.limits;
        limits.max_pause = limits.max_pause.min(policy.retry.ceiling);
        RateLimitLayer::builder()
            .config(limits)
            .name(policy.provider.name())
    }

    fn assemble(policy: &Policy, limit: RateLimitLayer) -> Result<Self, ConfigError> {
        let name = policy.provider.name();
        Ok(StandardLayer {
            retry: BackoffRetryLayer::builder()
                .config(policy.retry.clone())
                .name(name)
                .build()?,
            breaker: CircuitBreakerLayer::builder()
                .config(policy.breaker)
                .name(name)
                .build()?,
            limit,
            classify: ClassifyLayer::new().streams(policy.streams),
        })
    }

    /// The rate limiter's handle (limits at runtime, snapshot).
    pub fn limit_handle(&self) -> RateLimitHandle {
        self.limit.handle()
    }

    /// The circuit breaker's handle (state, isolate, reset).
    pub fn breaker_handle(&self) -> CircuitBreakerHandle {
        self.breaker.handle()
    }
}

impl<S> Layer<S> for StandardLayer {
    type Service = StandardService<S>;

    fn layer(&self, client: S) -> Self::Service {
        let classified = self.classify.layer(client);
        let limited = self.limit.layer(classified);
        let guarded = self.breaker.layer(limited);
        self.retry.layer(guarded)
    }
}

impl Policy {
    /// Builds the [`StandardLayer`] for this policy.
    pub fn layer(&self) -> Result<StandardLayer, ConfigError> {
        StandardLayer::new(self)
    }
}
