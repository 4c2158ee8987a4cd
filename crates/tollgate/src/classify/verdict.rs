//! The verdict on one attempt: [`Kind`], [`Classification`] and where a wait hint came from.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// What happened to one attempt, as far as resilience is concerned.
///
/// The kinds are coarse on purpose: each one maps to a different reaction by the other layers
/// (retry it, slow down, trip the breaker, or give up at once).
///
/// ```
/// use tollgate::classify::Kind;
///
/// assert!(Kind::RateLimited.is_retryable_by_default());
/// assert!(!Kind::Auth.is_retryable_by_default());
/// assert!(Kind::ServerError.is_failure());
/// assert!(!Kind::RateLimited.is_failure());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A 1xx, 2xx or 3xx answer.
    Success,
    /// 429: the caller exceeded a rate limit; waiting helps.
    RateLimited,
    /// The provider is over capacity (Anthropic's 529, a 503 whose body says "overloaded").
    Overloaded,
    /// A transient server error (500, 502, 503, 504 by default).
    ServerError,
    /// The attempt timed out (a local attempt timeout, or a 408 from the server).
    Timeout,
    /// The connection failed: refused, reset, closed before a response, or another transport error.
    Connection,
    /// A client error that will fail again if repeated (400, 404, 413, 422, ...).
    ClientError,
    /// 401 or 403: the credentials are wrong. Never retried.
    Auth,
    /// A 429 that says the account's quota or billing is exhausted (OpenAI's `insufficient_quota`).
    /// Waiting does not help, so it is permanent.
    QuotaExhausted,
    /// A tollgate layer refused the call locally (circuit open, rate-limit queue full) without
    /// reaching the provider.
    Rejected,
}

impl Kind {
    /// Whether an attempt of this kind is worth repeating when nothing else is known.
    pub const fn is_retryable_by_default(self) -> bool {
        matches!(
            self,
            Kind::RateLimited
                | Kind::Overloaded
                | Kind::ServerError
                | Kind::Timeout
                | Kind::Connection
        )
    }

    /// Whether this kind says the provider is unhealthy (what a circuit breaker counts by default).
    ///
    /// Rate limits are the limiter's business and client errors are the caller's, so neither
    /// counts.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Kind::Overloaded | Kind::ServerError | Kind::Timeout | Kind::Connection
        )
    }

    /// A short lowercase name, stable for logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::RateLimited => "rate_limited",
            Kind::Overloaded => "overloaded",
            Kind::ServerError => "server_error",
            Kind::Timeout => "timeout",
            Kind::Connection => "connection",
            Kind::ClientError => "client_error",
            Kind::Auth => "auth",
            Kind::QuotaExhausted => "quota_exhausted",
            Kind::Rejected => "rejected",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a wait hint came from, in the order they are trusted.
///
/// ```
/// use tollgate::classify::HintSource;
/// assert_eq!(HintSource::RetryAfterMs.header_name(), "retry-after-ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HintSource {
    /// `retry-after-ms` (milliseconds, Azure OpenAI and the Stainless SDKs).
    RetryAfterMs,
    /// `Retry-After` (delta-seconds or an HTTP-date).
    RetryAfter,
    /// A rate-limit reset header (`x-ratelimit-reset-*`, `anthropic-ratelimit-*-reset`) of a limit
    /// whose remaining count is zero.
    ResetHeader,
    /// The JSON error body (Gemini's `RetryInfo.retryDelay`).
    Body,
    /// A tollgate layer's own rejection (how long until the circuit probes, for example).
    Local,
}

impl HintSource {
    /// The header (or place) the hint was read from, for logs.
    pub const fn header_name(self) -> &'static str {
        match self {
            HintSource::RetryAfterMs => "retry-after-ms",
            HintSource::RetryAfter => "retry-after",
            HintSource::ResetHeader => "rate-limit reset header",
            HintSource::Body => "error body",
            HintSource::Local => "local rejection",
        }
    }
}

/// A kind of limit: the one a provider's 429 was about (requests or tokens, when the answer
/// says), or the one that holds a request back in the rate limiter (also concurrency, or a
/// pause after a 429).
///
/// ```
/// use tollgate::classify::LimitKind;
/// assert_eq!(LimitKind::Tokens.as_str(), "tokens");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// Requests per interval.
    Requests,
    /// Tokens per interval.
    Tokens,
    /// Requests in flight.
    Concurrency,
    /// A pause after the provider answered 429.
    Paused,
    /// Input (prompt) tokens per interval (Anthropic's ITPM).
    InputTokens,
    /// Output (completion) tokens per interval (Anthropic's OTPM).
    OutputTokens,
    /// Requests per day (Groq's and Gemini's RPD).
    RequestsPerDay,
    /// Tokens per day (Groq's TPD).
    TokensPerDay,
    /// The model's context window: the prompt is too long for it (a `400`, not a rate).
    ContextWindow,
}

impl LimitKind {
    /// A short name for messages and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Paused => "provider pause",
            LimitKind::InputTokens => "input tokens",
            LimitKind::OutputTokens => "output tokens",
            LimitKind::RequestsPerDay => "requests per day",
            LimitKind::TokensPerDay => "tokens per day",
            LimitKind::ContextWindow => "context window",
        }
    }

    /// Whether the limit counts tokens (combined, input, output or per day).
    ///
    /// ```
    /// use tollgate::classify::LimitKind;
    /// assert!(LimitKind::OutputTokens.is_tokens());
    /// assert!(!LimitKind::RequestsPerDay.is_tokens());
    /// ```
    pub const fn is_tokens(self) -> bool {
        matches!(
            self,
            LimitKind::Tokens
                | LimitKind::InputTokens
                | LimitKind::OutputTokens
                | LimitKind::TokensPerDay
        )
    }

    /// Whether the limit is a daily quota, which a wait of minutes does not help.
    pub const fn is_daily(self) -> bool {
        matches!(self, LimitKind::RequestsPerDay | LimitKind::TokensPerDay)
    }
}

/// The one verdict on an attempt, computed once and read by every layer.
///
/// [`ClassifyLayer`](crate::classify::ClassifyLayer) stores it in the response's extensions, and in
/// [`ClassifiedError`](crate::classify::ClassifiedError) for transport errors. Each other layer
/// reads it from there, and judges the response itself (with [`DefaultClassifier`]) only when no
/// `ClassifyLayer` is in the stack.
///
/// [`DefaultClassifier`]: crate::classify::DefaultClassifier
///
/// ```
/// use std::time::Duration;
/// use tollgate::classify::{Classification, Kind};
///
/// let verdict = Classification::new(Kind::RateLimited).with_retry_after(Duration::from_secs(2), None);
/// assert!(verdict.is_retryable());
/// assert_eq!(verdict.retry_after(), Some(Duration::from_secs(2)));
/// // The server's `x-should-retry: false` wins over the kind.
/// assert!(!verdict.with_should_retry(Some(false)).is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    kind: Kind,
    status: Option<StatusCode>,
    retryable: bool,
    should_retry: Option<bool>,
    retry_after: Option<Duration>,
    hint_source: Option<HintSource>,
    limit: Option<LimitKind>,
    stream: bool,
}

impl Classification {
    /// A verdict of the given kind, retryable as the kind is by default.
    pub const fn new(kind: Kind) -> Self {
        Classification {
            kind,
            status: None,
            retryable: kind.is_retryable_by_default(),
            should_retry: None,
            retry_after: None,
            hint_source: None,
            limit: None,
            stream: false,
        }
    }

    /// The success verdict.
    pub const fn success() -> Self {
        Classification::new(Kind::Success)
    }

    /// Records the HTTP status the verdict was made from.
    pub const fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Overrides whether the attempt may be retried (before `x-should-retry` is applied).
    pub const fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Records the server's `x-should-retry` answer, which overrides the kind.
    pub const fn with_should_retry(mut self, should_retry: Option<bool>) -> Self {
        self.should_retry = should_retry;
        self
    }

    /// Records how long the server (or a local layer) asked the caller to wait.
    pub const fn with_retry_after(mut self, wait: Duration, source: Option<HintSource>) -> Self {
        self.retry_after = Some(wait);
        self.hint_source = source;
        self
    }

    /// Records which limit a 429 was about.
    pub const fn with_limit(mut self, limit: Option<LimitKind>) -> Self {
        self.limit = limit;
        self
    }

    /// Changes the kind, keeping the status and hints; retryability follows the new kind.
    pub const fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self.retryable = kind.is_retryable_by_default();
        self
    }

    /// The kind of outcome.
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// The HTTP status, when the attempt got a response.
    pub const fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Whether the attempt may be retried: `x-should-retry` when the server sent it, else the
    /// classifier's judgement of the kind and status.
    pub const fn is_retryable(&self) -> bool {
        match self.should_retry {
            Some(answer) => answer,
            None => self.retryable,
        }
    }

    /// The server's `x-should-retry` answer, if it sent one.
    pub const fn should_retry(&self) -> Option<bool> {
        self.should_retry
    }

    /// How long the server asked the caller to wait, if it said.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Where [`retry_after`](Self::retry_after) came from.
    pub const fn hint_source(&self) -> Option<HintSource> {
        self.hint_source
    }

    /// Which limit a 429 was about, if the answer said.
    pub const fn limit(&self) -> Option<LimitKind> {
        self.limit
    }

    /// Whether the answer is a stream that [`ClassifyLayer`](super::ClassifyLayer) watches: its
    /// body may still end with a [`StreamError`](super::StreamError), so the layers outside judge
    /// it when it ends.
    pub const fn is_stream(&self) -> bool {
        self.stream
    }

    /// The same verdict on a watched stream.
    pub(crate) const fn watched_stream(mut self) -> Self {
        self.stream = true;
        self
    }

    /// Whether this is a success.
    pub const fn is_success(&self) -> bool {
        matches!(self.kind, Kind::Success)
    }
}

/// A verdict is also an error's cause: an error whose `source()` is a `Classification` carries
/// its verdict, which [`classify_error_default`](super::classify_error_default) and the layers
/// read without knowing the error's type. This is how each layer's rejection tells the others
/// what it means, with `classify` knowing nothing of the layers.
impl std::error::Error for Classification {}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {})", status.as_u16())?;
        }
        if let Some(wait) = self.retry_after {
            write!(f, ", retry after {wait:?}")?;
        }
        Ok(())
    }
}
