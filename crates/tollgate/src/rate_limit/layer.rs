//! [`RateLimitLayer`] and its builder.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::cost::EstimateTokens;
use super::limiter::{Limiter, RateLimitHandle, Settings, StoreSettings};
use super::limits::{Limits, Rate};
use super::service::RateLimit;
use super::shared::SharedStore;
use super::store::{name_of, OnStoreError, QuotaName, Store};
use crate::key::{KeyType, NoKey};
use crate::ConfigError;

/// Keeps a client under the provider's limits: requests per interval, tokens per interval and
/// requests in flight, all at once, shared by every clone.
///
/// The quotas live in an `Arc` owned by the layer: every service it builds (axum builds one per
/// connection) and every clone of those draws from the same buckets.
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
pub struct RateLimitLayer<C = EstimateTokens, K = NoKey, Key = ()> {
    cost: C,
    key: K,
    limiter: Arc<Limiter<Key>>,
}

impl<C: Clone, K: Clone, Key> Clone for RateLimitLayer<C, K, Key> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            cost: self.cost.clone(),
            key: self.key.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<C, K, Key> fmt::Debug for RateLimitLayer<C, K, Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A builder with no limits set yet.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder {
            limits: Limits::default(),
            settings: Settings {
                max_wait: None,
                max_queue: None,
                learn: true,
                adopt_limits: true,
                slow_wait: Duration::from_secs(1),
                max_pause: Duration::from_secs(60),
            },
            cost: EstimateTokens::new(),
            key: NoKey,
            name: None,
            store: None,
            adaptive_asked: false,
        }
    }
}

impl<C, K, Key: Hash + Eq + Clone + 'static> RateLimitLayer<C, K, Key> {
    /// A handle to read and change the limits at runtime.
    pub fn handle(&self) -> RateLimitHandle<Key> {
        RateLimitHandle::new(Arc::clone(&self.limiter))
    }
}

impl<S, C: Clone, K: Clone, Key> Layer<S> for RateLimitLayer<C, K, Key> {
    type Service = RateLimit<S, C, K, Key>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            self.cost.clone(),
            self.key.clone(),
            Arc::clone(&self.limiter),
        )
    }
}

/// Builds a [`RateLimitLayer`]. At least one limit must be set.
///
/// Defaults: waits without bound and queues without bound (set [`max_wait`](Self::max_wait) and
/// [`max_queue`](Self::max_queue) for services), learns from the provider's headers and 429s,
/// costs requests with [`EstimateTokens`], one quota for all requests.
#[derive(Debug)]
pub struct RateLimitBuilder<C = EstimateTokens, K = NoKey> {
    limits: Limits,
    settings: Settings,
    cost: C,
    key: K,
    name: Option<std::sync::Arc<str>>,
    store: Option<StoreSettings>,
    /// Whether [`adaptive`](Self::adaptive) was called (not just the default), which a store
    /// refuses.
    adaptive_asked: bool,
}

impl<C, K> RateLimitBuilder<C, K> {
    /// Limits requests per interval.
    pub fn requests(mut self, rate: Rate) -> Self {
        self.limits.requests = Some(rate);
        self
    }

    /// Limits tokens per interval; each request costs what the cost function says.
    pub fn tokens(mut self, rate: Rate) -> Self {
        self.limits.tokens = Some(rate);
        self
    }

    /// Limits requests in flight (held until the response body ends).
    pub fn concurrency(mut self, max: u32) -> Self {
        self.limits.concurrency = Some(max);
        self
    }

    /// Burst held back for delays between admission here and counting at the provider (default
    /// 10 ms; see [`Limits::headroom`]).
    pub fn headroom(mut self, headroom: Duration) -> Self {
        self.limits.headroom = headroom;
        self
    }

    /// Adapts the request rate to the provider's refusals with these settings (the default is
    /// [`Adaptive::default`](super::Adaptive::default)); a configured request limit is the
    /// ceiling.
    pub fn adaptive(mut self, adaptive: super::Adaptive) -> Self {
        self.limits.adaptive = Some(adaptive);
        self.adaptive_asked = true;
        self
    }

    /// Keeps the configured request rate strictly fixed instead of adapting below it: a 429
    /// then pauses the whole quota for its hint. Right when the limit is known exactly and the
    /// provider's refusals are not about it.
    pub fn fixed(mut self) -> Self {
        self.limits.adaptive = None;
        self.adaptive_asked = false;
        self
    }

    /// Sets all limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Refuses at once ([`RateLimitError::WouldWait`](super::RateLimitError::WouldWait)) a
    /// request that would wait longer than this.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.settings.max_wait = Some(max_wait);
        self
    }

    /// Refuses at once ([`RateLimitError::QueueFull`](super::RateLimitError::QueueFull)) a
    /// request when this many are already waiting.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.settings.max_queue = Some(max_queue);
        self
    }

    /// Whether to correct the quota from the provider's rate-limit headers and pause on its 429s
    /// (default true).
    pub fn learn_from_provider(mut self, learn: bool) -> Self {
        self.settings.learn = learn;
        self
    }

    /// Whether a provider limit lower than the configured one replaces it (default true). Turn
    /// it off for providers whose headers report another interval (Groq's requests per day).
    pub fn adopt_provider_limits(mut self, adopt: bool) -> Self {
        self.settings.adopt_limits = adopt;
        self
    }

    /// The longest wait a provider's 429 hint may impose on a fixed quota (default 60 s, the
    /// retry layer's default ceiling; the standard stack sets the policy's ceiling). A longer
    /// hint (a daily quota that resets in hours) pauses nothing: the retry layer gives up on
    /// it, and the next request asks the provider again.
    pub fn max_pause(mut self, max_pause: Duration) -> Self {
        self.settings.max_pause = max_pause;
        self
    }

    /// Waits at least this long are logged (default 1 s).
    pub fn slow_wait(mut self, threshold: Duration) -> Self {
        self.settings.slow_wait = threshold;
        self
    }

    /// A name for metrics labels (the provider: "openai", "anthropic"...).
    pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Costs requests with `cost` (any `Fn(&Request<B>) -> u64`).
    pub fn cost<C2>(self, cost: C2) -> RateLimitBuilder<C2, K> {
        RateLimitBuilder {
            limits: self.limits,
            settings: self.settings,
            cost,
            key: self.key,
            name: self.name,
            store: self.store,
            adaptive_asked: self.adaptive_asked,
        }
    }

    /// Gives each key its own quota (see [`by_host`](super::by_host), [`key_fn`](super::key_fn)).
    pub fn key<K2>(self, key: K2) -> RateLimitBuilder<C, K2> {
        RateLimitBuilder {
            limits: self.limits,
            settings: self.settings,
            cost: self.cost,
            key,
            name: self.name,
            // A store names quotas by key type: set the store after the key.
            store: self.store.map(|store| StoreSettings {
                name_of: None,
                ..store
            }),
            adaptive_asked: self.adaptive_asked,
        }
    }

    /// Keeps the buckets in `store`, shared with every process that uses the same store and
    /// quota names (one API key's quota across replicas); `on_error` says what happens while
    /// the store is down. Set it after [`key`](Self::key): keyed quotas are named from their key.
    ///
    /// The queue and the concurrency bound stay in this process; see [`Store`]. The shared
    /// limits are fixed: an adaptive rate would be each process's own guess.
    pub fn store(mut self, store: impl Store, on_error: OnStoreError) -> Self
    where
        K: KeyType,
        K::Key: QuotaName,
    {
        self.store = Some(StoreSettings {
            store: Arc::new(SharedStore::new(Box::new(store), on_error)),
            name_of: Some(name_of::<K::Key>),
        });
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(mut self) -> Result<RateLimitLayer<C, K, K::Key>, ConfigError>
    where
        K: KeyType,
    {
        if self.store.is_some() && !self.adaptive_asked {
            self.limits.adaptive = None;
        }
        self.limits.validate()?;
        let limits = &self.limits;
        if limits.requests.is_none()
            && limits.tokens.is_none()
            && limits.concurrency.is_none()
            && limits.adaptive.is_none()
        {
            return Err(ConfigError::new(
                "limits",
                "set at least one of requests, tokens, concurrency or adaptive",
            ));
        }
        if let Some(store) = &self.store {
            if limits.adaptive.is_some() {
                return Err(ConfigError::new(
                    "adaptive",
                    "adaptive limits are per process; with a shared store, set the limit itself",
                ));
            }
            if limits.requests.is_none() && limits.tokens.is_none() {
                return Err(ConfigError::new(
                    "store",
                    "a shared store holds request or token limits: set requests or tokens",
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
        }
        if self.settings.max_queue == Some(0) {
            return Err(ConfigError::new("max_queue", "must be at least 1 when set"));
        }
        Ok(RateLimitLayer {
            cost: self.cost,
            key: self.key,
            limiter: Arc::new(Limiter::new(
                self.limits,
                self.settings,
                self.name,
                self.store,
            )),
        })
    }
}
