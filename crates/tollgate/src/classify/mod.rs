//! One verdict per attempt: what happened, whether to retry, and how long the server asked to wait.
//!
//! Retry, rate limiting and circuit breaking all react to the same question: *what kind of
//! outcome was this?* A 429 means "slow down", a 529 means "the provider is over capacity", a 401
//! means "stop, the key is wrong", and a 429 whose body says `insufficient_quota` means "stop,
//! the bill is unpaid" even though its status says "slow down". This module answers the question
//! once, in [`ClassifyLayer`], and the other layers read the answer instead of judging again.
//!
//! # How it works
//!
//! [`ClassifyLayer`] sits next to the HTTP client. For each response it computes a
//! [`Classification`] from the status and headers with a [`Classify`] implementation (by default
//! [`DefaultClassifier`]), reads up to [`MAX_CLASSIFIED_BODY`] bytes of a 429 or 5xx body to refine
//! it (billing 429s, Anthropic's `overloaded_error`, Gemini's `RetryInfo`), and stores the verdict
//! and the parsed [`RateLimitState`] in the response's extensions; a plain success (a `2xx` or
//! `3xx` the classifier found nothing to say about) is left unstamped, since [`response_verdict`]
//! makes the same verdict of its head: read verdicts with [`response_verdict`]. The bytes it read are handed
//! back to the caller in a [`ClassifiedBody`], so nothing is lost. Transport errors are wrapped in
//! a [`ClassifiedError`] carrying their verdict.
//!
//! The other layers call [`response_verdict`] and [`error_verdict`], which use the stamped verdict
//! when there is one and fall back to the [`DefaultClassifier`] otherwise, so every layer also
//! works alone.
//!
//! # Streams
//!
//! A `200` `text/event-stream` answer can still fail: Anthropic sends `event: error` with
//! `overloaded_error`, OpenAI and Gemini an error chunk, or the stream falls silent. The body is
//! watched as the caller reads it (a server-sent events scanner that judges each line from its
//! first bytes and skips the rest, copying nothing but an error event's data): an error event,
//! a silence past a [`StreamConfig`] timeout or an end in the middle of an event ends the body
//! with a [`StreamError`] carrying its verdict, after the bytes before it. The rate limiter
//! learns from a `rate_limit_error` event as from a 429, and the breaker judges a streamed call
//! when its stream ends. With [`StreamConfig::first_token_gate`] (on in the presets) the response
//! is held until the stream's first content event, so a failure before it fails the attempt and
//! the retry layer retries it; after it the caller owns the stream and a failure is surfaced on
//! the body, never replayed. `stream-bench`: the watch reads a 10 MB stream over loopback at the
//! bare client's speed (0.99x in one run) and adds a microsecond or two to the first token.
//!
//! # Trade-offs
//!
//! Reading an error body costs a small buffer on the error path only; success bodies are never
//! copied (a stream held for its first token keeps the few events before it). tower-http's `classify` module counts a 429 as a success and has no
//! retryable/permanent split, which is why tollgate has its own model. Wait hints from a server are
//! recorded as durations measured when the response arrived; an HTTP-date hint depends on the
//! local wall clock, as it does for every client.
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tollgate::classify::{Classify, DefaultClassifier, HintSource, Kind};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after-ms", "1500".parse().unwrap());
//! headers.insert("retry-after", "2".parse().unwrap());
//! let verdict = DefaultClassifier::new().classify_response(StatusCode::TOO_MANY_REQUESTS, &headers);
//! assert_eq!(verdict.kind(), Kind::RateLimited);
//! assert_eq!(verdict.retry_after(), Some(std::time::Duration::from_millis(1500)));
//! assert_eq!(verdict.hint_source(), Some(HintSource::RetryAfterMs));
//! ```

mod body;
mod body_rules;
mod classifier;
mod error;
mod future;
mod headers;
mod layer;
mod service;
mod sse;
mod stream;
mod verdict;

pub use body::ClassifiedBody;
pub use classifier::{classify_fn, hints_from_headers, Classify, ClassifyFn, DefaultClassifier};
pub use error::{classify_error_default, ClassifiedError};
pub use future::ResponseFuture;
pub use headers::{LimitWindow, RateLimitState};
pub use layer::ClassifyLayer;
pub use service::Classify as ClassifyService;
pub(crate) use stream::body_error_verdict;
pub use stream::{StreamConfig, StreamError};
pub use verdict::{Classification, HintSource, Kind, LimitKind};

pub(crate) use error::rejected;

use http::Response;

/// How many bytes of an error body [`ClassifyLayer`] reads to refine its verdict (64 KiB).
pub const MAX_CLASSIFIED_BODY: usize = 64 * 1024;

/// The verdict on a response: the one [`ClassifyLayer`] stamped, or the [`DefaultClassifier`]'s
/// judgement of its head when no `ClassifyLayer` ran.
///
/// ```
/// use tollgate::classify::{response_verdict, Kind};
///
/// let response = http::Response::builder().status(503).body(()).unwrap();
/// assert_eq!(response_verdict(&response).kind(), Kind::ServerError);
/// ```
pub fn response_verdict<B>(response: &Response<B>) -> Classification {
    const DEFAULT: DefaultClassifier = DefaultClassifier::new();
    match response.extensions().get::<Classification>() {
        Some(verdict) => *verdict,
        None => DEFAULT.classify_response(response.status(), response.headers()),
    }
}

/// The verdict on an error: the one it carries (see [`classify_error_default`]).
///
/// ```
/// use tollgate::classify::{error_verdict, Kind};
///
/// let error: tollgate::BoxError = std::io::Error::other("connection closed").into();
/// assert_eq!(error_verdict(&*error).kind(), Kind::Connection);
/// ```
pub fn error_verdict(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Classification {
    classify_error_default(error)
}
