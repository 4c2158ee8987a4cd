//! [`LimitConfig`], every setting of the rate limiter in one value, and the builder that writes
//! it.

use std::sync::Arc;
use std::time::Duration;

use super::adaptive::Adaptive;
use super::cost::EstimateTokens;
use super::limits::{Limits, Rate};
use super::shared::{SharedStore, StoreSettings};
use super::store::{name_of, OnStoreError, QuotaName, Store};
use crate::config_error::reject_if;
use crate::key::{KeyType, NoKey};
use crate::ConfigError;

/// Every setting of a [`RateLimitLayer`](super::RateLimitLayer), with its default; the builder, a
/// [`Policy`](crate::stack::Policy), a config file's `[providers.NAME.limits]` table (feature
/// `serde`) and [`RateLimitHandle::set_limits`](super::RateLimitHandle::set_limits) all use
/// this value.
///
/// With no limit set, the request rate is found from the provider's refusals (the adaptive
/// mode); with no limit and `adaptive: None`, the limiter only learns from the provider's
/// headers and pauses on its 429s.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::{LimitConfig, Rate};
/// use tollgate::rate_limit::RateLimitLayer;
///
/// let mut config = LimitConfig::default();
/// config.requests = Some(Rate::per_minute(500));
/// config.tokens = Some(Rate::per_minute(200_000));
/// config.max_wait = Some(Duration::from_secs(30));
/// assert!(config.adaptive.is_some(), "500 RPM is a ceiling the rate adapts below");
/// let layer = RateLimitLayer::from_config(config)?;
/// # let _ = layer;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct LimitConfig {
    /// Requests per interval (default none; in a file, `requests = 500` is per minute).
    pub requests: Option<Rate>,
    /// Tokens per interval; each request costs what the cost function says (default none).
    pub tokens: Option<Rate>,
    /// Requests in flight at once, held until their response body ends (default none).
    pub concurrency: Option<u32>,
    /// How much of the burst is held back, as time at the refill rate, for delays that vary
    /// between admission here and counting at the provider (connection setup, scheduling): a
    /// request a few milliseconds early against the schedule would otherwise draw a 429 from a
    /// provider enforcing the same limit. Default 10 ms.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub headroom: Duration,
    /// Adapt the request rate to the provider's refusals (see [`Adaptive`]): a configured
    /// request limit is then a ceiling, a guess the provider corrects. On by default; `None`
    /// keeps the configured rate strictly fixed (a 429 then pauses the whole quota for its
    /// hint).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::switch"))]
    pub adaptive: Option<Adaptive>,
    /// Refuse at once ([`Refusal::WouldWait`](super::Refusal::WouldWait)) a
    /// request that would wait longer (default: wait without bound).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::option_duration"))]
    pub max_wait: Option<Duration>,
    /// Refuse at once ([`Refusal::QueueFull`](super::Refusal::QueueFull)) a
    /// request when this many wait (default: no bound).
    pub max_queue: Option<usize>,
    /// Correct the quota from the provider's rate-limit headers and pause on its 429s
    /// (default true).
    pub learn_from_provider: bool,
    /// Replace the configured limit by a lower one the provider's headers report (default
    /// true). Off for providers whose headers report another interval (Groq's requests per
    /// day).
    pub adopt_provider_limits: bool,
    /// The longest wait a provider's 429 hint may impose on a fixed quota (default 60 s, the
    /// retry layer's default ceiling; the standard stack uses the retry ceiling). A longer hint
    /// (a daily quota that resets in hours) pauses nothing.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub max_pause: Duration,
    /// Waits at least this long are logged (default 1 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub slow_wait: Duration,
    /// With the default cost ([`EstimateTokens`]), charge `max_tokens` plus the prompt
    /// (Anthropic's separate input and output limits) rather than the greater of the two
    /// (OpenAI's rule). Default false.
    pub sum_token_estimate: bool,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            requests: None,
            tokens: None,
            concurrency: None,
            headroom: Duration::from_millis(10),
            adaptive: Some(Adaptive::default()),
            max_wait: None,
            max_queue: None,
            learn_from_provider: true,
            adopt_provider_limits: true,
            max_pause: Duration::from_secs(60),
            slow_wait: Duration::from_secs(1),
            sum_token_estimate: false,
        }
    }
}

/// A rate no client reaches: a limiter told no limit and no adaptive rate only learns (it pauses
/// on a 429's hint and adopts the limit the headers report). Per minute, as providers report
/// limits, so a learned limit keeps its meaning.
const UNLIMITED: Rate = Rate::per_minute(u64::MAX / 4);

impl LimitConfig {
    /// The limits a quota's buckets are shaped from.
    pub(crate) fn limits(&self) -> Limits {
        let told_nothing = self.requests.is_none()
            && self.tokens.is_none()
            && self.concurrency.is_none()
            && self.adaptive.is_none();
        Limits {
            requests: self.requests.or(told_nothing.then_some(UNLIMITED)),
            tokens: self.tokens,
            concurrency: self.concurrency,
            headroom: self.headroom,
            adaptive: self.adaptive,
        }
    }

    /// Checks every setting; the error names the field as the builder and the config file do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(rate) = &self.requests {
            rate.validate("requests")?;
        }
        if let Some(rate) = &self.tokens {
            rate.validate("tokens")?;
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate()?;
        }
        reject_if(
            self.concurrency == Some(0),
            "concurrency",
            "must be at least 1; leave it out for no bound",
        )?;
        reject_if(
            self.max_queue == Some(0),
            "max_queue",
            "must be at least 1 when set",
        )?;
        Ok(())
    }
}

/// Builds a [`RateLimitLayer`](super::RateLimitLayer): setters over a [`LimitConfig`] (see its
/// fields for the defaults), plus what only code can give: the cost function, a key extractor, a
/// shared store and a name.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::Rate;
/// use tollgate::rate_limit::RateLimitLayer;
///
/// let layer = RateLimitLayer::builder()
///     .requests(Rate::per_minute(500))
///     .tokens(Rate::per_minute(200_000))
///     .concurrency(16)
///     .max_wait(Duration::from_secs(30))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct RateLimitBuilder<C = EstimateTokens, K = NoKey> {
    pub(super) config: LimitConfig,
    pub(super) cost: C,
    pub(super) key: K,
    pub(super) name: Option<Arc<str>>,
    pub(super) store: Option<StoreSettings>,
    /// Whether [`adaptive`](Self::adaptive) was called (not just the default), which a store
    /// refuses.
    pub(super) adaptive_asked: bool,
}

impl<C, K> RateLimitBuilder<C, K> {
    /// Replaces every setting of [`LimitConfig`] with `config`.
    pub fn config(mut self, config: LimitConfig) -> Self {
        self.config = config;
        self
    }

    crate::setters::config_setters!(LimitConfig {
        requests: Rate => Some,
        tokens: Rate => Some,
        concurrency: u32 => Some,
        headroom: Duration,
        max_wait: Duration => Some,
        max_queue: usize => Some,
        learn_from_provider: bool,
        adopt_provider_limits: bool,
        max_pause: Duration,
        slow_wait: Duration,
        sum_token_estimate: bool,
    });

    /// Adapts the request rate to the provider's refusals with these settings (see
    /// [`LimitConfig::adaptive`]).
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.config.adaptive = Some(adaptive);
        self.adaptive_asked = true;
        self
    }

    /// Keeps the configured request rate strictly fixed instead of adapting below it: a 429
    /// then pauses the whole quota for its hint. Right when the limit is known exactly and the
    /// provider's refusals are not about it.
    pub fn fixed(mut self) -> Self {
        self.config.adaptive = None;
        self.adaptive_asked = false;
        self
    }

    /// A name for metrics labels (the provider: "openai", "anthropic"...).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Costs requests with `cost` (any `Fn(&Request<B>) -> u64`).
    pub fn cost<C2>(self, cost: C2) -> RateLimitBuilder<C2, K> {
        RateLimitBuilder {
            config: self.config,
            cost,
            key: self.key,
            name: self.name,
            store: self.store,
            adaptive_asked: self.adaptive_asked,
        }
    }

    /// Gives each key its own quota (see [`by_host`](crate::key::by_host),
    /// [`key_fn`](crate::key::key_fn)).
    pub fn key<K2: KeyType>(self, key: K2) -> RateLimitBuilder<C, K2> {
        RateLimitBuilder {
            config: self.config,
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
}
