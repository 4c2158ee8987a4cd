//! What the mock enforces and which faults it injects.

use std::time::Duration;

/// The mock provider's behaviour. `MockConfig::default()` is an unlimited, instant, fault-free
/// provider that accepts any API key.
///
/// ```
/// use std::time::Duration;
/// use tollgate_mock::{Faults, MockConfig};
///
/// let config = MockConfig {
///     rpm: Some(600),
///     burst: Some(10),
///     faults: Faults { rate: 0.2, ..Faults::default() },
///     ..MockConfig::default()
/// };
/// assert_eq!(config.request_burst(), Some(10));
/// # let _ = Duration::ZERO;
/// ```
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Requests per minute per API key, refilled continuously. `None`: unlimited.
    pub rpm: Option<u32>,
    /// Tokens per minute per API key, refilled continuously. `None`: unlimited.
    pub tpm: Option<u32>,
    /// Capacity of the request bucket. `None`: the full minute's `rpm`, as OpenAI allows.
    pub burst: Option<u32>,
    /// Capacity of the token bucket. `None`: the full minute's `tpm`.
    pub token_burst: Option<u32>,
    /// Input tokens per minute per API key, as Anthropic meters them (cache reads excluded).
    /// `None`: unlimited.
    pub itpm: Option<u32>,
    /// Output tokens per minute per API key, as Anthropic meters them: `max_tokens` charged when
    /// the request starts, the unused part given back when it ends. `None`: unlimited.
    pub otpm: Option<u32>,
    /// Capacity of the input token bucket. `None`: the full minute's `itpm`.
    pub itpm_burst: Option<u32>,
    /// Capacity of the output token bucket. `None`: the full minute's `otpm`.
    pub otpm_burst: Option<u32>,
    /// Requests per day per API key; the day starts when the server does. `None`: unlimited.
    pub rpd: Option<u64>,
    /// Tokens (input and output, as used) per day per API key. `None`: unlimited.
    pub tpd: Option<u64>,
    /// The real output of an answer as a share of its `max_tokens`, drawn uniformly from this
    /// range with the seed. `None`: 8 tokens.
    pub output_share: Option<(f64, f64)>,
    /// Share of each prompt reported as read from the cache (not counted by the input limit).
    pub cache_read_share: f64,
    /// Latency added per output token of the answer, as a model generates them.
    pub per_output_token: Duration,
    /// Latency added to every answer.
    pub latency: Duration,
    /// Extra latency drawn uniformly from `0..=latency_jitter` for each answer.
    pub latency_jitter: Duration,
    /// When set, only this key is accepted; any other key gets 401.
    pub api_key: Option<String>,
    /// What a 429 from the limiter carries.
    pub hints: HintStyle,
    /// Faults injected from `seed`.
    pub faults: Faults,
    /// Faults injected inside streamed answers (`"stream": true`), from `seed`.
    pub stream_faults: StreamFaults,
    /// Seed of the random draws (faults and latency jitter): the same seed and the same order of
    /// requests give the same answers.
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            rpm: None,
            tpm: None,
            burst: None,
            token_burst: None,
            itpm: None,
            otpm: None,
            itpm_burst: None,
            otpm_burst: None,
            rpd: None,
            tpd: None,
            output_share: None,
            cache_read_share: 0.0,
            per_output_token: Duration::ZERO,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            api_key: None,
            hints: HintStyle::Full,
            faults: Faults::default(),
            stream_faults: StreamFaults::default(),
            seed: 0,
        }
    }
}

impl MockConfig {
    /// The request bucket's capacity, if requests are limited.
    pub fn request_burst(&self) -> Option<u32> {
        self.rpm.map(|rpm| self.burst.unwrap_or(rpm))
    }

    /// The token bucket's capacity, if tokens are limited.
    pub fn token_capacity(&self) -> Option<u32> {
        self.tpm.map(|tpm| self.token_burst.unwrap_or(tpm))
    }
}

/// What the mock says when its limiter refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HintStyle {
    /// `retry-after`, `retry-after-ms` and the provider's rate-limit headers on every answer (as
    /// OpenAI and Anthropic do).
    #[default]
    Full,
    /// Only `Retry-After` in whole seconds on a 429, and no rate-limit headers at all (as nginx's
    /// `limit_req` or many OpenAI-compatible servers do).
    RetryAfterOnly,
    /// Only `retry-after-ms` with the exact wait on a 429, and no rate-limit headers: a precise
    /// hint with nothing to learn the limit from.
    RetryAfterMs,
    /// A bare 429 with no hint at all.
    None,
}

/// Faults injected into answers, drawn from the configured seed.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Share of requests (0.0 to 1.0) that get a fault instead of their normal answer.
    pub rate: f64,
    /// Relative weights of the fault kinds when a fault is drawn.
    pub mix: FaultMix,
    /// How long a hung request waits before it is answered with a 504.
    pub hang: Duration,
    /// Windows, as offsets from the server's start, during which every request fails with 503.
    pub outages: Vec<(Duration, Duration)>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate: 0.0,
            mix: FaultMix::default(),
            hang: Duration::from_secs(300),
            outages: Vec::new(),
        }
    }
}

/// Relative weights of each fault kind (all equal by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultMix {
    /// 500, 502, 503 or 504 with a JSON error body.
    pub server_error: u32,
    /// Anthropic's 529 `overloaded_error`.
    pub overloaded: u32,
    /// A 429 carrying `retry-after` and `retry-after-ms`.
    pub rate_limited_with_hint: u32,
    /// A 429 without any hint.
    pub rate_limited_bare: u32,
    /// The connection is closed without an answer.
    pub reset: u32,
    /// No answer until [`Faults::hang`] has passed.
    pub hang: u32,
    /// A normal answer whose rate-limit and retry headers are garbage.
    pub malformed_headers: u32,
}

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix {
            server_error: 1,
            overloaded: 1,
            rate_limited_with_hint: 1,
            rate_limited_bare: 1,
            reset: 1,
            hang: 1,
            malformed_headers: 1,
        }
    }
}

impl FaultMix {
    /// No fault at all: a base to set the weights wanted on.
    pub fn none() -> Self {
        FaultMix {
            server_error: 0,
            overloaded: 0,
            rate_limited_with_hint: 0,
            rate_limited_bare: 0,
            reset: 0,
            hang: 0,
            malformed_headers: 0,
        }
    }

    /// Only server errors (500/502/503/504) and 529s.
    pub fn server_errors_only() -> Self {
        FaultMix {
            server_error: 1,
            overloaded: 1,
            ..FaultMix::none()
        }
    }
}

/// Faults injected inside streamed answers, after their `200` head, drawn from the seed.
#[derive(Debug, Clone)]
pub struct StreamFaults {
    /// Share of streamed answers (0.0 to 1.0) that get a fault.
    pub rate: f64,
    /// Relative weights of the stream fault kinds.
    pub mix: StreamFaultMix,
    /// How long a stalled stream stays silent before it ends.
    pub stall: Duration,
    /// How late a slow first token comes.
    pub first_token_delay: Duration,
    /// At most this many faulty streams, then none (`None`: no bound).
    pub max: Option<u64>,
}

impl Default for StreamFaults {
    fn default() -> Self {
        StreamFaults {
            rate: 0.0,
            mix: StreamFaultMix::default(),
            stall: Duration::from_secs(300),
            first_token_delay: Duration::from_secs(5),
            max: None,
        }
    }
}

/// Relative weights of each stream fault (all equal by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFaultMix {
    /// An error event (Anthropic's `overloaded_error`, OpenAI's server error chunk) before the
    /// first token.
    pub error_before_first_token: u32,
    /// The same after a few tokens.
    pub error_after_first_token: u32,
    /// Silence after the head.
    pub stall_before_first_token: u32,
    /// Silence after a few tokens.
    pub stall_mid_stream: u32,
    /// The connection closes after a few tokens.
    pub disconnect_mid_stream: u32,
    /// The final event cut short.
    pub truncated_final_event: u32,
    /// The first token late.
    pub slow_first_token: u32,
}

impl Default for StreamFaultMix {
    fn default() -> Self {
        StreamFaultMix {
            error_before_first_token: 1,
            error_after_first_token: 1,
            stall_before_first_token: 1,
            stall_mid_stream: 1,
            disconnect_mid_stream: 1,
            truncated_final_event: 1,
            slow_first_token: 1,
        }
    }
}

impl StreamFaultMix {
    /// No fault at all: a base to set the weights wanted on.
    pub fn none() -> Self {
        StreamFaultMix {
            error_before_first_token: 0,
            error_after_first_token: 0,
            stall_before_first_token: 0,
            stall_mid_stream: 0,
            disconnect_mid_stream: 0,
            truncated_final_event: 0,
            slow_first_token: 0,
        }
    }
}
