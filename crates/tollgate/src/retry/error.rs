//! What the caller learns when the retry layer stops: [`RetryError`], [`StopReason`] and the
//! [`RetryInfo`] stamped on responses.

use std::fmt;
use std::time::Duration;

use crate::classify::{Classification, Kind};
use crate::BoxError;

/// Why the retry layer stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The outcome cannot succeed by repeating it (auth, client error, billing, `x-should-retry:
    /// false`).
    NotRetryable,
    /// The maximum number of attempts was made.
    AttemptsExhausted,
    /// The next attempt could not finish (or start) before the call's overall deadline.
    Deadline,
    /// The shared retry budget is empty: retries already add their allowed share of the traffic.
    BudgetExhausted,
    /// The server asked for a wait longer than the configured ceiling.
    HintOverCeiling,
    /// The request body cannot be replayed, so it was sent once.
    NotReplayable,
}

impl StopReason {
    /// A short lowercase name, stable for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::NotRetryable => "not_retryable",
            StopReason::AttemptsExhausted => "attempts_exhausted",
            StopReason::Deadline => "deadline",
            StopReason::BudgetExhausted => "budget_exhausted",
            StopReason::HintOverCeiling => "hint_over_ceiling",
            StopReason::NotReplayable => "not_replayable",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::NotRetryable => "the outcome is not retryable",
            StopReason::AttemptsExhausted => "attempts exhausted",
            StopReason::Deadline => "the call's deadline was reached",
            StopReason::BudgetExhausted => "the retry budget is empty",
            StopReason::HintOverCeiling => "the server asked to wait longer than the ceiling",
            StopReason::NotReplayable => "the request body cannot be replayed",
        })
    }
}

/// Stamped in a response's extensions when the retry layer retried, or gave up on it: the caller
/// gets the last response unchanged (a 429 stays a 429) and can read what happened here.
///
/// ```
/// use tollgate::retry::{RetryInfo, StopReason};
///
/// fn report<B>(response: &http::Response<B>) {
///     if let Some(info) = response.extensions().get::<RetryInfo>() {
///         eprintln!("{info}"); // "3 attempts in 2.1s, gave up: attempts exhausted"
///         if info.stopped == Some(StopReason::BudgetExhausted) {
///             eprintln!("the provider is failing: retries are capped");
///         }
///     }
/// }
/// report(&http::Response::new(()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryInfo {
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Time from the call to this response.
    pub elapsed: Duration,
    /// Why the layer stopped, when the response is a failure it gave up on.
    pub stopped: Option<StopReason>,
}

impl fmt::Display for RetryInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} attempts in {:?}", self.attempts, self.elapsed)?;
        if let Some(reason) = self.stopped {
            write!(f, ", gave up: {reason}")?;
        }
        Ok(())
    }
}

/// The error of a call the retry layer gave up on: how many attempts, how long, why it stopped,
/// and the last attempt's verdict and error.
///
/// ```
/// # use std::time::Duration;
/// # use tollgate::retry::{RetryError, StopReason};
/// # use tollgate::classify::{Classification, Kind};
/// let error = RetryError::new(
///     StopReason::AttemptsExhausted, 5, Duration::from_secs(9),
///     Classification::new(Kind::Connection), "connection reset".into(),
/// );
/// assert_eq!(error.attempts(), 5);
/// assert!(error.to_string().starts_with("gave up after 5 attempts"));
/// ```
#[derive(Debug)]
pub struct RetryError {
    reason: StopReason,
    attempts: u32,
    elapsed: Duration,
    last: Classification,
    source: BoxError,
}

impl RetryError {
    /// Builds the error (the layer does this; public for tests and adapters).
    pub fn new(
        reason: StopReason,
        attempts: u32,
        elapsed: Duration,
        last: Classification,
        source: BoxError,
    ) -> Self {
        RetryError {
            reason,
            attempts,
            elapsed,
            last,
            source,
        }
    }

    /// Why the layer stopped.
    pub fn reason(&self) -> StopReason {
        self.reason
    }

    /// Attempts made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time from the call until the layer gave up.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The verdict on the last attempt.
    pub fn last_verdict(&self) -> Classification {
        self.last
    }

    /// The last attempt's error.
    pub fn last_error(&self) -> &BoxError {
        &self.source
    }
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt{} in {:.3}s: {}; last attempt: {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64(),
            self.reason,
            self.source
        )
    }
}

impl std::error::Error for RetryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// An attempt did not answer within the per-attempt timeout. Classified as a timeout (its
/// source is that verdict).
///
/// ```
/// use std::time::Duration;
/// use tollgate::classify::{classify_error_default, Kind};
/// use tollgate::retry::AttemptTimedOut;
///
/// let error = AttemptTimedOut::new(Duration::from_secs(30));
/// assert_eq!(error.after(), Duration::from_secs(30));
/// assert_eq!(classify_error_default(&error).kind(), Kind::Timeout);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimedOut {
    after: Duration,
    verdict: Classification,
}

impl AttemptTimedOut {
    /// The error for an attempt that took longer than `after`.
    pub fn new(after: Duration) -> Self {
        AttemptTimedOut {
            after,
            verdict: Classification::new(Kind::Timeout),
        }
    }

    /// The timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the attempt timed out after {:?}", self.after)
    }
}

impl std::error::Error for AttemptTimedOut {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.verdict)
    }
}
