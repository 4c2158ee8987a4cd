//! The file format: every field optional, each overriding the preset's value.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::retry::{Jitter, OverCeiling};
use crate::Provider;

/// A whole config file: named providers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Providers by name (the name is yours: "openai", "claude-batch", "local-vllm"...).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
}

/// One `[providers.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// The preset the other settings start from (default `openai-compatible`).
    pub preset: Option<Provider>,
    /// Hosts served by this provider's policy, replacing the preset's.
    pub hosts: Option<Vec<String>>,
    /// `[providers.NAME.limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[providers.NAME.retry]`.
    #[serde(default)]
    pub retry: RetrySection,
    /// `[providers.NAME.breaker]`.
    #[serde(default)]
    pub breaker: BreakerSection,
}

/// `[providers.NAME.limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Requests per minute.
    pub rpm: Option<NonZeroU64>,
    /// Tokens per minute.
    pub tpm: Option<NonZeroU64>,
    /// Request bucket capacity (default: a tenth of a second's worth of `rpm`, at least 1).
    pub burst: Option<NonZeroU64>,
    /// Token bucket capacity (default: a tenth of a second's worth of `tpm`, at least 1; a
    /// larger request still goes alone once the bucket is full).
    pub token_burst: Option<NonZeroU64>,
    /// Requests in flight at once.
    pub concurrency: Option<NonZeroU32>,
    /// Refuse a request that would wait longer (`"30s"`).
    #[serde(default, deserialize_with = "duration")]
    pub max_wait: Option<Duration>,
    /// Refuse a request when this many wait.
    pub max_queue: Option<NonZeroU64>,
    /// Burst held back for network delays (`"10ms"`).
    #[serde(default, deserialize_with = "duration")]
    pub headroom: Option<Duration>,
    /// Adopt lower limits from the provider's headers.
    pub adopt_provider_limits: Option<bool>,
    /// Adapt the request rate to the provider's refusals, below `rpm` when it is set (default
    /// `true`); `false` keeps `rpm` strictly fixed (without `rpm`, the limiter then only
    /// learns from the provider's headers and pauses on its 429s).
    pub adaptive: Option<bool>,
    /// Charge max_tokens plus the prompt rather than the greater of the two.
    pub sum_token_estimate: Option<bool>,
}

/// `[providers.NAME.retry]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts in total, the first included.
    pub max_attempts: Option<NonZeroU32>,
    /// First delay (`"500ms"`).
    #[serde(default, deserialize_with = "duration")]
    pub base: Option<Duration>,
    /// Growth per retry.
    pub factor: Option<f64>,
    /// Longest delay (`"60s"`).
    #[serde(default, deserialize_with = "duration")]
    pub cap: Option<Duration>,
    /// `none`, `full`, `equal` or `decorrelated`.
    pub jitter: Option<JitterName>,
    /// Longest server hint honoured (`"60s"`).
    #[serde(default, deserialize_with = "duration")]
    pub ceiling: Option<Duration>,
    /// `give-up` or `backoff` when a hint exceeds the ceiling.
    pub over_ceiling: Option<OverCeilingName>,
    /// Deadline of the whole call (`"2m"`).
    #[serde(default, deserialize_with = "duration")]
    pub deadline: Option<Duration>,
    /// Timeout of each attempt (`"30s"`).
    #[serde(default, deserialize_with = "duration")]
    pub attempt_timeout: Option<Duration>,
    /// `false` for no budget, or `{ ttl = "10s", min_per_sec = 10, ratio = 0.2 }`.
    pub budget: Option<BudgetSection>,
}

/// The retry budget: `false`, or its three settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BudgetSection {
    /// `budget = false` turns it off (`true` keeps the preset's).
    Enabled(bool),
    /// `budget = { ttl = "10s", min_per_sec = 10, ratio = 0.2 }`.
    Settings {
        /// The window.
        #[serde(deserialize_with = "required_duration")]
        ttl: Duration,
        /// Retries per second always allowed.
        min_per_sec: u32,
        /// Share of requests that may be retried.
        ratio: f64,
    },
}

/// `[providers.NAME.breaker]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Trip after this many failures in a row (instead of a ratio).
    pub consecutive_failures: Option<NonZeroU32>,
    /// Trip at this share of failures over the window.
    pub failure_ratio: Option<f64>,
    /// Window of the last N calls.
    pub window_calls: Option<NonZeroU32>,
    /// Window of the last T (`"30s"`), instead of a count.
    #[serde(default, deserialize_with = "duration")]
    pub window: Option<Duration>,
    /// Calls needed before the ratio counts.
    pub min_calls: Option<NonZeroU32>,
    /// Calls at least this long are slow (`"20s"`).
    #[serde(default, deserialize_with = "duration")]
    pub slow_call_threshold: Option<Duration>,
    /// Trip at this share of slow calls.
    pub slow_call_ratio: Option<f64>,
    /// How long the circuit stays open (`"30s"`).
    #[serde(default, deserialize_with = "duration")]
    pub break_duration: Option<Duration>,
    /// Multiply the break by this on repeated trips.
    pub break_growth: Option<f64>,
    /// Longest break when it grows (`"5m"`).
    #[serde(default, deserialize_with = "duration")]
    pub break_cap: Option<Duration>,
    /// Probe calls while half-open.
    pub probes: Option<NonZeroU32>,
}

/// Jitter mode names.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum JitterName {
    None,
    Full,
    Equal,
    Decorrelated,
}

impl From<JitterName> for Jitter {
    fn from(name: JitterName) -> Jitter {
        match name {
            JitterName::None => Jitter::None,
            JitterName::Full => Jitter::Full,
            JitterName::Equal => Jitter::Equal,
            JitterName::Decorrelated => Jitter::Decorrelated,
        }
    }
}

/// What to do with a hint over the ceiling.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum OverCeilingName {
    GiveUp,
    Backoff,
}

impl From<OverCeilingName> for OverCeiling {
    fn from(name: OverCeilingName) -> OverCeiling {
        match name {
            OverCeilingName::GiveUp => OverCeiling::GiveUp,
            OverCeilingName::Backoff => OverCeiling::UseBackoff,
        }
    }
}

/// A human duration (`"500ms"`, `"30s"`, `"1m"`, `"1h 30m"`), with an error that says the form.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    required_duration(deserializer).map(Some)
}

fn required_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|error| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({error}); write it like \"500ms\", \"30s\" or \"2m\""
        ))
    })
}
