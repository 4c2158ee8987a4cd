//! [`Policy`]: every setting of the standard stack in one value, with a preset per provider.

use std::time::Duration;

use crate::circuit_breaker::BreakerConfig;
use crate::classify::StreamConfig;
use crate::rate_limit::LimitConfig;
use crate::retry::{OverCeiling, RetryConfig};
use crate::{ConfigError, Provider};

/// Every setting of the standard stack for one provider: each layer's own settings value, the
/// provider and the hosts it serves. Start from [`Policy::preset`], change fields, then build
/// with [`Policy::layer`]; a config file deserialises into the same value (feature `config`).
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::Rate;
/// use tollgate::stack::Policy;
/// use tollgate::Provider;
///
/// let mut policy = Policy::preset(Provider::OpenAi);
/// policy.limits.requests = Some(Rate::per_minute(500));
/// policy.limits.tokens = Some(Rate::per_minute(200_000));
/// policy.retry.deadline = Some(Duration::from_secs(120));
/// let layer = policy.layer().unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Policy {
    /// The provider this policy is for (in a file, `preset`).
    #[cfg_attr(feature = "serde", serde(rename = "preset"))]
    pub provider: Provider,
    /// Hosts whose requests this policy serves, for routing (`*.` matches subdomains).
    pub hosts: Vec<String>,
    /// Rate limits. With none set, the request rate is found from the provider's refusals.
    pub limits: LimitConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Circuit breaking.
    pub breaker: BreakerConfig,
    /// How streamed answers are watched (in a file, `[providers.NAME.streams]`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub streams: StreamConfig,
}

/// How every preset watches streams: held until the first token (so a failure before it is
/// retried), a minute at most for the first event and between two reads (reasoning models
/// think in silence, but not for minutes), and no bound on the whole.
const PRESET_STREAMS: StreamConfig = {
    let mut streams = StreamConfig::NONE;
    streams.first_token_gate = true;
    streams.first_event_timeout = Some(Duration::from_secs(60));
    streams.idle_timeout = Some(Duration::from_secs(60));
    streams
};

impl Policy {
    /// The recommended settings for `provider`, without limits (they depend on your tier: set
    /// them, or let the limiter find them from the provider's refusals and headers).
    ///
    /// Common to all: each layer's defaults ([`RetryConfig`], [`BreakerConfig`],
    /// [`LimitConfig`]). Per provider: OpenAI honours hints up to 120 s, as its SDK does;
    /// Anthropic up to 60 s and backs off normally beyond, as its SDK does, retries 529s 6
    /// times, charges input plus output tokens against a combined limit and does not count
    /// cache reads against input limits (set its `input_tokens` and `output_tokens`, ITPM and
    /// OTPM, which are settled to each answer's usage); Groq does not adopt its per-day request
    /// headers as a per-minute limit and does not count cached tokens; Gemini's daily quotas
    /// reset at midnight Pacific time (08:00 UTC); Azure checks limits over 1-10 s windows, so
    /// its preset holds back more headroom (50 ms of refill). The limiter never pauses longer
    /// than the retry ceiling (a longer hint is one the retry layer gives up on).
    pub fn preset(provider: Provider) -> Self {
        let mut policy = Policy {
            provider,
            hosts: provider.hosts().iter().map(|h| (*h).to_owned()).collect(),
            limits: LimitConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            streams: PRESET_STREAMS,
        };
        match provider {
            Provider::OpenAi => policy.retry.ceiling = Duration::from_secs(120),
            Provider::Anthropic => {
                policy.retry.max_attempts = 6;
                policy.retry.over_ceiling = OverCeiling::UseBackoff;
                policy.limits.sum_token_estimate = true;
                policy.limits.cache_reads_count = false;
            }
            Provider::Groq => {
                policy.retry.over_ceiling = OverCeiling::UseBackoff;
                policy.limits.adopt_provider_limits = false;
                policy.limits.cache_reads_count = false;
            }
            Provider::AzureOpenAi => policy.limits.headroom = Duration::from_millis(50),
            Provider::Gemini | Provider::GeminiOpenAi => {
                policy.limits.day_starts_at = Duration::from_secs(8 * 3600);
            }
            Provider::OpenAiCompatible => {}
        }
        policy.limits.max_pause = policy.retry.ceiling;
        policy
    }

    /// Checks every setting; the error names the field by its path in the policy and in a
    /// config file's provider table (`retry.cap`, `limits.requests`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate().map_err(|e| e.within("limits"))?;
        self.retry.validate().map_err(|e| e.within("retry"))?;
        self.breaker.validate().map_err(|e| e.within("breaker"))?;
        self.streams.validate().map_err(|e| e.within("streams"))
    }

    /// Whether requests to `host` belong to this policy.
    pub fn serves_host(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|pattern| crate::provider::host_matches(pattern, host))
    }
}
