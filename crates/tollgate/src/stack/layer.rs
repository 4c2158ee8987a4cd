//! [`StandardLayer`]: the recommended stack in one layer.

use tower_layer::Layer;

use super::policy::Policy;
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
use crate::classify::{ClassifyService, DefaultClassifier};
use crate::key::NoKey;
use crate::rate_limit::{
    EstimateTokens, OnStoreError, Rate, RateLimit, RateLimitBuilder, RateLimitHandle, Store,
};
use crate::retry::{BackoffRetry, RetryBudget};
use crate::{BackoffRetryLayer, CircuitBreakerLayer, ClassifyLayer, ConfigError, RateLimitLayer};

/// The service a [`StandardLayer`] builds: retry, then circuit breaker, then rate limit, then
/// classification, then your client.
pub type StandardService<S> = BackoffRetry<
    CircuitBreaker<
        RateLimit<ClassifyService<S, DefaultClassifier>, EstimateTokens, NoKey, ()>,
        NoKey,
        (),
    >,
>;

/// The recommended order, built from a [`Policy`] in one call.
///
/// Retry is outermost, so every attempt takes its own rate-limit permit and passes the breaker
/// (a retry storm cannot bypass either); the breaker sits outside the limiter, so a call it
/// refuses never waits for a permit; classification is innermost, so its verdict describes one
/// attempt and every layer reads it. The request rate adapts to the provider's refusals: below
/// the configured limit, which is a ceiling, or from nothing when none is set (and adopts the
/// limit the provider's headers report). Set `policy.limits.limits.adaptive` to `None` for a
/// strictly fixed limit; without limits, that limiter only pauses on a 429's hint.
///
/// ```
/// use tollgate::rate_limit::Rate;
/// use tollgate::stack::{Policy, StandardLayer};
/// use tollgate::Provider;
/// use tower::ServiceBuilder;
///
/// let mut policy = Policy::preset(Provider::Anthropic);
/// policy.limits.limits.requests = Some(Rate::per_minute(50));
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

/// A rate no client reaches: the limiter of a policy without limits only learns.
const UNLIMITED: u64 = u64::MAX / 4;

impl StandardLayer {
    /// Builds the four layers from `policy`, checking every setting.
    pub fn new(policy: &Policy) -> Result<Self, ConfigError> {
        let (limit, _) = Self::limit(policy);
        Self::assemble(policy, limit.build()?)
    }

    /// Like [`new`](Self::new), with the rate limiter's buckets in `store`, shared with every
    /// process that uses it (see [`Store`]). The policy must set a request or token limit.
    ///
    /// ```
    /// # #[derive(Debug)] struct MyStore;
    /// # impl tollgate::rate_limit::Store for MyStore {
    /// #     fn acquire(&self, _: tollgate::rate_limit::Charge) -> tollgate::rate_limit::StoreFuture<tollgate::rate_limit::Grant> { Box::pin(async { Ok(tollgate::rate_limit::Grant::Admitted) }) }
    /// #     fn pause(&self, _: &str, _: std::time::Duration) -> tollgate::rate_limit::StoreFuture<()> { Box::pin(async { Ok(()) }) }
    /// #     fn lower(&self, _: &str, _: tollgate::rate_limit::Which, _: Rate, _: u64) -> tollgate::rate_limit::StoreFuture<()> { Box::pin(async { Ok(()) }) }
    /// # }
    /// use tollgate::rate_limit::{OnStoreError, Rate};
    /// use tollgate::stack::{Policy, StandardLayer};
    /// use tollgate::Provider;
    ///
    /// let mut policy = Policy::preset(Provider::OpenAi);
    /// policy.limits.limits.requests = Some(Rate::per_minute(500));
    /// let layer = StandardLayer::with_store(&policy, MyStore, OnStoreError::FailOpen { processes: 4 })?;
    /// # let _ = layer;
    /// # Ok::<(), tollgate::ConfigError>(())
    /// ```
    pub fn with_store(
        policy: &Policy,
        store: impl Store,
        on_error: OnStoreError,
    ) -> Result<Self, ConfigError> {
        let (limit, unlimited) = Self::limit(policy);
        if unlimited {
            return Err(ConfigError::new(
                "limits",
                "a shared store holds request or token limits: set requests or tokens",
            ));
        }
        Self::assemble(policy, limit.store(store, on_error).build()?)
    }

    /// The rate limiter's builder, and whether the policy set no limit at all.
    fn limit(policy: &Policy) -> (RateLimitBuilder<EstimateTokens>, bool) {
        let l = &policy.limits;
        let mut limits = l.limits;
        let mut unlimited = false;
        if limits.requests.is_none() && limits.tokens.is_none() && limits.concurrency.is_none() {
            unlimited = true;
            if limits.adaptive.is_none() {
                // A limiter that never waits but learns from the provider (it pauses everyone
                // on a 429's hint and adopts the limit the headers report). Per minute, as
                // providers report limits, so a learned limit keeps its meaning.
                limits.requests = Some(Rate::per_minute(UNLIMITED));
            }
        }
        let cost = if l.sum_token_estimate {
            EstimateTokens::new().sum()
        } else {
            EstimateTokens::new()
        };
        let mut limit = RateLimitLayer::builder()
            .limits(limits)
            .adopt_provider_limits(l.adopt_provider_limits)
            // A hint the retry layer would not wait for does not pause the quota either.
            .max_pause(policy.retry.ceiling)
            .name(policy.provider.name())
            .cost(cost);
        if let Some(max_wait) = l.max_wait {
            limit = limit.max_wait(max_wait);
        }
        if let Some(max_queue) = l.max_queue {
            limit = limit.max_queue(max_queue);
        }
        (limit, unlimited)
    }

    fn assemble(policy: &Policy, limit: RateLimitLayer) -> Result<Self, ConfigError> {
        let r = &policy.retry;
        let mut retry = BackoffRetryLayer::builder()
            .max_attempts(r.max_attempts)
            .base(r.base)
            .factor(r.factor)
            .cap(r.cap)
            .jitter(r.jitter)
            .ceiling(r.ceiling)
            .over_ceiling(r.over_ceiling)
            .name(policy.provider.name());
        if let Some(deadline) = r.deadline {
            retry = retry.deadline(deadline);
        }
        if let Some(timeout) = r.attempt_timeout {
            retry = retry.attempt_timeout(timeout);
        }
        retry = match r.budget {
            Some((ttl, min_per_sec, ratio)) => {
                retry.budget(RetryBudget::new(ttl, min_per_sec, ratio)?)
            }
            None => retry.no_budget(),
        };

        let b = &policy.breaker;
        let mut breaker = CircuitBreakerLayer::builder()
            .trip(b.trip)
            .break_duration(b.break_duration)
            .probes(b.probes)
            .name(policy.provider.name());
        if let Some(slow) = b.slow_calls {
            breaker = breaker.slow_calls(slow);
        }
        if let Some((factor, cap)) = b.growth {
            breaker = breaker.grow_break(factor, cap);
        }
        Ok(StandardLayer {
            retry: retry.build()?,
            breaker: breaker.build()?,
            limit,
            classify: ClassifyLayer::new(),
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
