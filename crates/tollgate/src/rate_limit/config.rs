//! [`LimitConfig`], every setting of the rate limiter in one value, and the builder that writes
//! it.

use std::sync::Arc;
use std::time::Duration;

use super::adaptive::Adaptive;
use super::cost::EstimateTokens;
use super::limits::{Limits, Metering, Rate, RESERVATION_BURST};
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
    /// Input and output tokens together per interval (OpenAI's TPM); each request is charged
    /// the greater of its prompt estimate and its `max_tokens` (or their sum, see
    /// [`sum_token_estimate`](Self::sum_token_estimate)) at admission, as OpenAI counts it (its
    /// headers report that count, failed requests included), and never corrected (default
    /// none).
    pub tokens: Option<Rate>,
    /// Input (prompt) tokens per interval (Anthropic's ITPM): charged the prompt estimate,
    /// corrected to the real input when the answer reports it (default none). Without an
    /// explicit burst, ten seconds' worth (see [`output_tokens`](Self::output_tokens)).
    pub input_tokens: Option<Rate>,
    /// Output tokens per interval (Anthropic's OTPM): charged `max_tokens` at admission, the
    /// unused part given back when the answer's `usage` arrives (default none).
    ///
    /// Without an explicit burst the bucket holds ten seconds' worth, not a tenth of a second:
    /// the reservations of the requests in flight sit in it while they run, and what an answer
    /// did not use comes back only while its reservation is still ahead on the bucket's
    /// schedule (giving back tokens the refill already returned would admit them twice). An
    /// answer that takes longer than the burst's worth of time keeps its whole reservation.
    pub output_tokens: Option<Rate>,
    /// Requests per day (Groq's and Gemini's RPD): when spent, requests are refused at once with
    /// [`Refusal::DailyQuotaSpent`](super::Refusal::DailyQuotaSpent) until the reset (default
    /// none).
    pub requests_per_day: Option<u64>,
    /// Tokens per day (Groq's TPD), charged as the combined limit is (default none).
    pub tokens_per_day: Option<u64>,
    /// When the daily quotas reset, as the time after midnight UTC (default 0: midnight UTC;
    /// Gemini resets at midnight Pacific time, `8h`).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::duration"))]
    pub day_starts_at: Duration,
    /// Correct the input, output and daily token charges to the `usage` the answer reports
    /// (OpenAI, Anthropic and Gemini shapes), read as the caller reads the body; a refused (429)
    /// attempt is charged no tokens and a failed one no output (default true). Off, the
    /// admission charges stand, as if the provider never corrected them.
    pub reconcile_usage: bool,
    /// Whether prompt tokens read from the provider's cache count against the input and
    /// combined limits (default true; false for Anthropic, whose input limit excludes them).
    pub cache_reads_count: bool,
    /// The least share of the admissions that lower [`Priority`](super::Priority) lanes get
    /// while they wait behind higher ones, so that none starves (default 0.1: a batch behind
    /// interactive traffic still gets a tenth of the quota).
    pub low_lane_share: f64,
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
    /// Charge a combined token limit (`tokens`, `tokens_per_day`) the prompt estimate plus
    /// `max_tokens` rather than the greater of the two (OpenAI's rule). Default false.
    pub sum_token_estimate: bool,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            requests: None,
            tokens: None,
            input_tokens: None,
            output_tokens: None,
            requests_per_day: None,
            tokens_per_day: None,
            day_starts_at: Duration::ZERO,
            reconcile_usage: true,
            cache_reads_count: true,
            low_lane_share: 0.1,
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
            && !self.limits_tokens()
            && self.concurrency.is_none()
            && self.adaptive.is_none();
        Limits {
            requests: self.requests.or(told_nothing.then_some(UNLIMITED)),
            tokens: self.tokens,
            input_tokens: self
                .input_tokens
                .map(|rate| rate.or_burst_of(RESERVATION_BURST)),
            output_tokens: self
                .output_tokens
                .map(|rate| rate.or_burst_of(RESERVATION_BURST)),
            requests_per_day: self.requests_per_day,
            tokens_per_day: self.tokens_per_day,
            day_starts_at: self.day_starts_at,
            concurrency: self.concurrency,
            headroom: self.headroom,
            adaptive: self.adaptive,
            metering: Metering {
                sum: self.sum_token_estimate,
                reconcile: self.reconcile_usage,
                cache_reads_count: self.cache_reads_count,
            },
            low_lane_share: self.low_lane_share,
        }
    }

    /// Whether any token limit is set (per minute or per day).
    fn limits_tokens(&self) -> bool {
        self.tokens.is_some()
            || self.input_tokens.is_some()
            || self.output_tokens.is_some()
            || self.tokens_per_day.is_some()
    }

    /// Checks every setting; the error names the field as the builder and the config file do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(rate) = &self.requests {
            rate.validate("requests")?;
        }
        let rates = [
            (&self.tokens, "tokens"),
            (&self.input_tokens, "input_tokens"),
            (&self.output_tokens, "output_tokens"),
        ];
        for (rate, field) in rates {
            if let Some(rate) = rate {
                rate.validate(field)?;
            }
        }
        for (day, field) in [
            (self.requests_per_day, "requests_per_day"),
            (self.tokens_per_day, "tokens_per_day"),
        ] {
            reject_if(
                day == Some(0),
                field,
                "must be at least 1; leave it out for no daily quota",
            )?;
        }
        reject_if(
            !(0.0..1.0).contains(&self.low_lane_share),
            "low_lane_share",
            "must be at least 0 and below 1, e.g. 0.1 for a tenth of the admissions",
        )?;
        reject_if(
            self.day_starts_at >= super::daily::DAY,
            "day_starts_at",
            "must be less than 24h after midnight UTC, e.g. 8h for midnight in California",
        )?;
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
        input_tokens: Rate => Some,
        output_tokens: Rate => Some,
        requests_per_day: u64 => Some,
        tokens_per_day: u64 => Some,
        day_starts_at: Duration,
        reconcile_usage: bool,
        cache_reads_count: bool,
        low_lane_share: f64,
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
