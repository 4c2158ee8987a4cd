//! Retry what can succeed, obey what the server says, and never make an outage worse.
//!
//! [`BackoffRetryLayer`] repeats an attempt when its [verdict](crate::classify) is retryable:
//! rate limited, overloaded, a transient 5xx, a timeout, a connection failure, and by default
//! 408 and 409 as the OpenAI SDK does. It never repeats an auth failure, a permanent client error
//! or a billing 429, and the server's `x-should-retry` overrides the status either way.
//!
//! # Delays
//!
//! Without a hint, the n-th retry waits `min(cap, base * factor^n)` randomised by the chosen
//! [`Jitter`] (full jitter by default, so that clients failing together spread out). A server hint
//! wins: `retry-after-ms`, then `Retry-After` (seconds or HTTP-date), then the reset header of an
//! exhausted limit. A hint is a minimum; with jitter on, up to 20% is added so that every client
//! told "1 second" does not return in the same millisecond. A hint above the ceiling (60 s by
//! default) gives up with [`StopReason::HintOverCeiling`] or, if configured, is ignored for normal
//! backoff.
//!
//! # Stopping
//!
//! The layer stops at the maximum attempts (5 in total by default), at the optional overall
//! deadline (it never starts a wait that would end past it), or when the retry budget
//! ([`BudgetConfig`]) shared by every clone is empty: retries may add only a share of the traffic,
//! so an outage is not multiplied by the number of attempts. When it stops on a response, the
//! caller gets that response unchanged (a 429 stays a 429) with a [`RetryInfo`] in its extensions;
//! on an error, a [`RetryError`] says how many attempts were made, how long they took and why it
//! stopped.
//!
//! # Trade-offs
//!
//! Requests are replayed only when their body can be ([`ReplayBody`]); a streaming body is sent
//! once. Each call clones the request (headers included) before the first attempt, like tower's
//! `Retry`. The first attempt goes to the service that was polled ready; a retry clones its own
//! (from a copy every clone of the service shares, made on the first call) and polls it ready
//! after the wait, so no readiness is held across a sleep and a call that needs no retry clones
//! no service. Put the layer outside the rate limiter and circuit breaker, so each
//! attempt takes a permit and passes the breaker; a breaker-open rejection is retried only after
//! the wait it reports, within the ceiling and deadline.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::retry::Jitter;
//! use tollgate::retry::BackoffRetryLayer;
//!
//! let layer = BackoffRetryLayer::builder()
//!     .max_attempts(5)
//!     .base(Duration::from_millis(500))
//!     .jitter(Jitter::Full)
//!     .deadline(Duration::from_secs(120))
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! ```

mod backoff;
mod budget;
mod config;
mod error;
mod future;
mod layer;
mod policy;
mod replay;
mod service;
mod shared;

pub use backoff::Jitter;
pub use config::{BackoffRetryBuilder, BudgetConfig, OverCeiling, RetryConfig, RetryEvent};
pub use error::{AttemptTimedOut, RetryError, RetryInfo, StopReason};
pub use future::ResponseFuture;
pub use layer::BackoffRetryLayer;
pub use replay::ReplayBody;
pub use service::BackoffRetry;

/// A request extension: a local refusal (an open breaker, the rate limiter's refusal) ends the
/// call at once instead of being waited out, for a caller with somewhere else to go. A
/// [`FallbackLayer`](crate::fallback::FallbackLayer) marks its requests so for every target but
/// the last.
///
/// ```
/// let mut request = http::Request::new(String::new());
/// request.extensions_mut().insert(tollgate::retry::FailFast);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailFast;
