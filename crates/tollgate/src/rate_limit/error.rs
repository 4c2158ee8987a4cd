//! [`RateLimitError`]: a request the limiter refused without sending it.

use std::fmt;
use std::time::Duration;

use super::partition::Which;

/// The limiter refused a request at once, instead of letting it wait without bound.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::{RateLimitError, Which};
///
/// let error = RateLimitError::WouldWait { limit: Which::Tokens, wait: Duration::from_secs(90), max_wait: Duration::from_secs(30) };
/// assert!(error.to_string().contains("tokens"));
/// assert_eq!(error.retry_after(), Some(Duration::from_secs(90)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitError {
    /// The request costs more tokens than the bucket holds: it can never be admitted (the
    /// provider would answer "Request too large").
    TooLarge {
        /// The request's cost.
        cost: u64,
        /// The token bucket's capacity.
        capacity: u64,
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
        limit: Which,
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

impl RateLimitError {
    /// How long until trying again could succeed (`None` when it never can).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitError::TooLarge { .. } => None,
            RateLimitError::QueueFull { wait, .. } => Some(wait.unwrap_or(Duration::from_secs(1))),
            RateLimitError::WouldWait { wait, .. } => Some(*wait),
            RateLimitError::StoreUnavailable => Some(super::shared::PROBE_EVERY),
        }
    }
}

impl fmt::Display for RateLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitError::TooLarge { cost, capacity } => write!(
                f,
                "request too large: it costs {cost} tokens but the token limit holds at most \
                 {capacity}; lower max_tokens or the prompt, or raise the token burst"
            ),
            RateLimitError::QueueFull { max_queue, .. } => write!(
                f,
                "rate limit queue full: {max_queue} requests are already waiting; \
                 send fewer at once or raise max_queue"
            ),
            RateLimitError::WouldWait {
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
            RateLimitError::StoreUnavailable => f.write_str(
                "the shared rate-limit store is unreachable and the limiter fails closed; \
                 check the store (Redis) or choose OnStoreError::FailOpen",
            ),
        }
    }
}

impl std::error::Error for RateLimitError {}
