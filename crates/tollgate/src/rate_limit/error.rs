//! [`RateLimitError`]: a request the limiter refused without sending it.

use std::fmt;
use std::time::Duration;

use crate::classify::{rejected, Classification, HintSource, Kind, LimitKind};

/// The limiter refused a request at once, instead of letting it wait without bound. It carries
/// its verdict (a local rejection, retryable after [`retry_after`](Self::retry_after); for a
/// spent daily quota, an exhausted quota the retry layer does not wait for) as its `source()`,
/// where [`classify_error_default`](crate::classify::classify_error_default) and the outer
/// layers find it.
///
/// ```
/// use std::time::Duration;
/// use tollgate::classify::{classify_error_default, Kind};
/// use tollgate::classify::LimitKind;
/// use tollgate::rate_limit::{RateLimitError, Refusal};
///
/// let error = RateLimitError::new(Refusal::WouldWait { limit: LimitKind::Tokens, wait: Duration::from_secs(90), max_wait: Duration::from_secs(30) });
/// assert!(error.to_string().contains("tokens"));
/// assert_eq!(error.retry_after(), Some(Duration::from_secs(90)));
/// assert_eq!(classify_error_default(&error).kind(), Kind::Rejected);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitError {
    refusal: Refusal,
    verdict: Classification,
}

impl RateLimitError {
    /// Builds the rejection (the layer does this; public for tests and adapters).
    pub fn new(refusal: Refusal) -> Self {
        let verdict = match refusal {
            // Not a wait the retry layer can sit out: the quota is spent for hours.
            Refusal::DailyQuotaSpent { limit, resets_in } => {
                Classification::new(Kind::QuotaExhausted)
                    .with_retry_after(resets_in, Some(HintSource::Local))
                    .with_limit(Some(limit))
            }
            _ => rejected(refusal.retry_after()),
        };
        RateLimitError { refusal, verdict }
    }

    /// Why the request was refused.
    pub fn refusal(&self) -> Refusal {
        self.refusal
    }

    /// How long until trying again could succeed (`None` when it never can).
    pub fn retry_after(&self) -> Option<Duration> {
        self.refusal.retry_after()
    }
}

impl fmt::Display for RateLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.refusal.fmt(f)
    }
}

impl std::error::Error for RateLimitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.verdict)
    }
}

/// Why a [`RateLimitError`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The request costs more than a limit ever holds: it can never be admitted (the provider
    /// would answer "Request too large").
    TooLarge {
        /// The limit it does not fit.
        limit: LimitKind,
        /// The request's cost against it.
        cost: u64,
        /// The most that limit admits at once.
        capacity: u64,
    },
    /// A daily quota is spent: nothing more goes until it resets. Sent nothing.
    DailyQuotaSpent {
        /// [`LimitKind::RequestsPerDay`] or [`LimitKind::TokensPerDay`].
        limit: LimitKind,
        /// How long until the quota resets.
        resets_in: Duration,
    },
    /// The queue of waiting requests is full.
    QueueFull {
        /// The queue bound.
        max_queue: usize,
        /// How long the new request would have waited, if known.
        wait: Option<Duration>,
    },
    /// The request would wait longer than the maximum wait.
    WouldWait {
        /// The limit that holds it back.
        limit: LimitKind,
        /// How long it would have waited.
        wait: Duration,
        /// The configured maximum.
        max_wait: Duration,
    },
    /// The shared [`Store`](super::Store) cannot be reached and the limiter fails closed
    /// ([`OnStoreError::FailClosed`](super::OnStoreError::FailClosed)); the cause is logged
    /// when the store goes down.
    StoreUnavailable,
}

impl Refusal {
    /// How long until trying again could succeed (`None` when it never can).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::TooLarge { .. } => None,
            Refusal::DailyQuotaSpent { resets_in, .. } => Some(*resets_in),
            Refusal::QueueFull { wait, .. } => Some(wait.unwrap_or(Duration::from_secs(1))),
            Refusal::WouldWait { wait, .. } => Some(*wait),
            Refusal::StoreUnavailable => Some(super::shared::PROBE_EVERY),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLarge {
                limit,
                cost,
                capacity,
            } => write!(
                f,
                "request too large: it costs {cost} against the {} limit, which admits at most \
                 {capacity}; lower max_tokens or the prompt, or raise that limit's burst",
                limit.as_str()
            ),
            Refusal::DailyQuotaSpent { limit, resets_in } => write!(
                f,
                "daily quota spent: no {} left today; it resets in {}, resume then",
                limit.as_str(),
                humantime::format_duration(Duration::from_secs(resets_in.as_secs()))
            ),
            Refusal::QueueFull { max_queue, .. } => write!(
                f,
                "rate limit queue full: {max_queue} requests are already waiting; \
                 send fewer at once or raise max_queue"
            ),
            Refusal::WouldWait {
                limit,
                wait,
                max_wait,
            } => write!(
                f,
                "rate limited on {}: the request would wait {:.3}s, longer than max_wait {:.3}s",
                limit.as_str(),
                wait.as_secs_f64(),
                max_wait.as_secs_f64()
            ),
            Refusal::StoreUnavailable => f.write_str(
                "the shared rate-limit store is unreachable and the limiter fails closed; \
                 check the store (Redis) or choose OnStoreError::FailOpen",
            ),
        }
    }
}
