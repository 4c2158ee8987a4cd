//! [`Policy`]: every setting of the standard stack in one value, with a preset per provider.

use std::time::Duration;

use crate::circuit_breaker::{SlowCalls, Trip, Window};
use crate::rate_limit::Limits;
use crate::retry::{Jitter, OverCeiling};
use crate::Provider;

/// Retry settings of a [`Policy`] (see [`BackoffRetryBuilder`](crate::retry::BackoffRetryBuilder)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// The first retry's un-jittered delay.
    pub base: Duration,
    /// Growth per retry.
    pub factor: f64,
    /// The longest backoff delay.
    pub cap: Duration,
    /// How delays are randomised.
    pub jitter: Jitter,
    /// The longest server hint honoured.
    pub ceiling: Duration,
    /// What to do with a longer hint.
    pub over_ceiling: OverCeiling,
    /// Deadline for the whole call, all attempts included.
    pub deadline: Option<Duration>,
    /// Timeout of each attempt.
    pub attempt_timeout: Option<Duration>,
    /// Retry budget: (window, retries per second always allowed, share of requests).
    pub budget: Option<(Duration, u32, f64)>,
}

/// Circuit-breaker settings of a [`Policy`] (see
/// [`CircuitBreakerBuilder`](crate::circuit_breaker::CircuitBreakerBuilder)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// What opens the circuit.
    pub trip: Trip,
    /// Trip on slow calls too.
    pub slow_calls: Option<SlowCalls>,
    /// How long it stays open before probing.
    pub break_duration: Duration,
    /// Growth of the break on repeated trips: (factor, cap).
    pub growth: Option<(f64, Duration)>,
    /// Probe calls while half-open.
    pub probes: u32,
}

/// Rate-limit settings of a [`Policy`] beyond the [`Limits`] themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSettings {
    /// Requests, tokens and concurrency, each a ceiling the request rate adapts below (see
    /// [`Limits::adaptive`]). With none set, the rate is found from the provider's refusals;
    /// with none set and `adaptive` off, the limiter only learns from the provider's headers
    /// and pauses on its 429s.
    pub limits: Limits,
    /// Refuse a request that would wait longer.
    pub max_wait: Option<Duration>,
    /// Refuse a request when this many wait.
    pub max_queue: Option<usize>,
    /// Adopt a lower limit the provider reports in its headers.
    pub adopt_provider_limits: bool,
    /// Charge `max_tokens` plus the prompt (Anthropic's separate input and output limits) rather
    /// than the greater of the two (OpenAI's rule).
    pub sum_token_estimate: bool,
}

/// Every setting of the standard stack for one provider. Start from [`Policy::preset`], change
/// fields, then build with [`Policy::layer`]; a config file is parsed into the same value.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::Rate;
/// use tollgate::stack::Policy;
/// use tollgate::Provider;
///
/// let mut policy = Policy::preset(Provider::OpenAi);
/// policy.limits.limits.requests = Some(Rate::per_minute(500));
/// policy.limits.limits.tokens = Some(Rate::per_minute(200_000));
/// policy.retry.deadline = Some(Duration::from_secs(120));
/// let layer = policy.layer().unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The provider this policy is for.
    pub provider: Provider,
    /// Hosts whose requests this policy serves, for routing (`*.` matches subdomains).
    pub hosts: Vec<String>,
    /// Rate limits.
    pub limits: LimitSettings,
    /// Retries.
    pub retry: RetrySettings,
    /// Circuit breaking.
    pub breaker: BreakerSettings,
}

impl Policy {
    /// The recommended settings for `provider`, without limits (they depend on your tier: set
    /// them, or let the limiter learn them from the provider's headers).
    ///
    /// Common to all: 5 attempts, full jitter from 500 ms to 60 s, Finagle's retry budget; the
    /// breaker opens at 50% failures over the last 100 calls (20 at least) for 30 s, one probe.
    /// Per provider: OpenAI honours hints up to 120 s, as its SDK does; Anthropic up to 60 s and
    /// backs off normally beyond, as its SDK does, and retries 529s 6 times; Groq does not adopt
    /// its per-day request headers as a per-minute limit; Gemini gives up on hour-long
    /// per-day-quota hints; Azure checks limits over 1-10 s windows, so its preset holds back
    /// more headroom (50 ms of refill).
    pub fn preset(provider: Provider) -> Self {
        let mut policy = Policy {
            provider,
            hosts: provider.hosts().iter().map(|h| (*h).to_owned()).collect(),
            limits: LimitSettings {
                limits: Limits::default(),
                max_wait: None,
                max_queue: None,
                adopt_provider_limits: true,
                sum_token_estimate: false,
            },
            retry: RetrySettings {
                max_attempts: 5,
                base: Duration::from_millis(500),
                factor: 2.0,
                cap: Duration::from_secs(60),
                jitter: Jitter::Full,
                ceiling: Duration::from_secs(60),
                over_ceiling: OverCeiling::GiveUp,
                deadline: None,
                attempt_timeout: None,
                budget: Some((Duration::from_secs(10), 10, 0.2)),
            },
            breaker: BreakerSettings {
                trip: Trip::FailureRatio {
                    ratio: 0.5,
                    window: Window::Count(100),
                    min_calls: 20,
                },
                slow_calls: None,
                break_duration: Duration::from_secs(30),
                growth: None,
                probes: 1,
            },
        };
        match provider {
            Provider::OpenAi => policy.retry.ceiling = Duration::from_secs(120),
            Provider::Anthropic => {
                policy.retry.max_attempts = 6;
                policy.retry.over_ceiling = OverCeiling::UseBackoff;
                policy.limits.sum_token_estimate = true;
            }
            Provider::Groq => {
                policy.retry.over_ceiling = OverCeiling::UseBackoff;
                policy.limits.adopt_provider_limits = false;
            }
            Provider::AzureOpenAi => policy.limits.limits.headroom = Duration::from_millis(50),
            Provider::Gemini | Provider::GeminiOpenAi | Provider::OpenAiCompatible => {}
        }
        policy
    }

    /// Whether requests to `host` belong to this policy.
    pub fn serves_host(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|pattern| crate::provider::host_matches(pattern, host))
    }
}
