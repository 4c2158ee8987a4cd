//! The [`Classify`] trait, the [`DefaultClassifier`] and closure classifiers.

use std::error::Error as StdError;
use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use super::body_rules;
use super::headers::{self, RateLimitState};
use super::verdict::{Classification, HintSource, Kind};

/// Judges one attempt: a response head (optionally refined by a small error body) or an error.
///
/// Implement it to teach tollgate a provider's quirks; most users configure
/// [`DefaultClassifier`] or wrap a closure with [`classify_fn`] instead.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tollgate::classify::{Classify, DefaultClassifier, Kind};
///
/// let classifier = DefaultClassifier::new();
/// let verdict = classifier.classify_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new());
/// assert_eq!(verdict.kind(), Kind::RateLimited);
/// ```
pub trait Classify: Clone + Send + Sync + 'static {
    /// Judges a response from its status and headers.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Classification;

    /// Whether the response body should be read (up to
    /// [`MAX_CLASSIFIED_BODY`](super::MAX_CLASSIFIED_BODY) bytes) to refine the verdict. The
    /// default reads the bodies of 429s and 5xx answers, where providers put what matters.
    fn wants_body(&self, verdict: &Classification) -> bool {
        // 400s too: a prompt too long for the model's context says so only in its body.
        verdict.status().is_some_and(|s| {
            s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::BAD_REQUEST
                || s.is_server_error()
        })
    }

    /// Refines a verdict with the response body (a JSON error, usually).
    fn classify_body(&self, verdict: Classification, body: &[u8]) -> Classification {
        body_rules::refine(verdict, body, SystemTime::now())
    }

    /// Judges an error from the inner service.
    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Classification {
        super::error::classify_error_default(error)
    }
}

/// The classifier used when none is given: what the OpenAI and Anthropic SDKs retry, plus the
/// distinctions they miss (billing 429s, overload bodies, `x-should-retry`).
///
/// - 2xx/3xx: success. 429: rate limited. 529: overloaded. 500, 502, 503, 504: server error.
/// - 408: timeout (retryable). 409: client error, retryable (as the OpenAI SDK does).
/// - 401, 403: auth, never retried. Any other 4xx or 5xx: permanent client or server error.
/// - `x-should-retry: true|false` overrides whether any of these is retried.
/// - Wait hints: `retry-after-ms`, then `Retry-After`, then (on a 429) the reset header of the
///   exhausted limit.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tollgate::classify::{Classify, DefaultClassifier, Kind};
///
/// // Teach it that this gateway's 520 is transient, and that 409 is final.
/// let classifier = DefaultClassifier::new().transient_status(520).retry_conflicts(false);
/// let verdict = classifier.classify_response(StatusCode::from_u16(520).unwrap(), &HeaderMap::new());
/// assert_eq!(verdict.kind(), Kind::ServerError);
/// assert!(!classifier.classify_response(StatusCode::CONFLICT, &HeaderMap::new()).is_retryable());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DefaultClassifier {
    transient: StatusSet,
    overloaded: StatusSet,
    retry_conflicts: bool,
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultClassifier {
    /// The default rules (a `const`, so layers that judge for themselves pay nothing to build it).
    pub const fn new() -> Self {
        DefaultClassifier {
            transient: StatusSet::EMPTY.with(500).with(502).with(503).with(504),
            overloaded: StatusSet::EMPTY.with(529),
            retry_conflicts: true,
        }
    }

    /// Treats `status` as a transient server error (retryable, counted by the breaker).
    /// Only error statuses (400..=599) can be; others are ignored.
    pub fn transient_status(mut self, status: u16) -> Self {
        self.overloaded.remove(status);
        self.transient.insert(status);
        self
    }

    /// Stops treating `status` as transient; it becomes a permanent error.
    pub fn permanent_status(mut self, status: u16) -> Self {
        self.transient.remove(status);
        self.overloaded.remove(status);
        self
    }

    /// Treats `status` as "provider overloaded" (like Anthropic's 529).
    pub fn overloaded_status(mut self, status: u16) -> Self {
        self.transient.remove(status);
        self.overloaded.insert(status);
        self
    }

    /// Whether 409 Conflict is retried (default true, as the OpenAI SDK does).
    pub fn retry_conflicts(mut self, retry: bool) -> Self {
        self.retry_conflicts = retry;
        self
    }

    fn kind_of(&self, status: StatusCode) -> Kind {
        let code = status.as_u16();
        if self.overloaded.contains(code) {
            Kind::Overloaded
        } else if self.transient.contains(code) {
            Kind::ServerError
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Kind::RateLimited
        } else if status == StatusCode::REQUEST_TIMEOUT {
            Kind::Timeout
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            Kind::Auth
        } else if code >= 400 {
            Kind::ClientError
        } else {
            Kind::Success
        }
    }
}

impl Classify for DefaultClassifier {
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Classification {
        let kind = self.kind_of(status);
        let mut verdict = Classification::new(kind).with_status(status);
        if kind == Kind::Success {
            return verdict;
        }
        if status == StatusCode::CONFLICT {
            verdict = verdict.with_retryable(self.retry_conflicts);
        }
        hints_from_headers(verdict, headers, SystemTime::now())
    }
}

/// Adds what the headers say about retrying to a non-success verdict: `x-should-retry`, the wait
/// hint and, for a 429, the exhausted limit and its reset.
pub fn hints_from_headers(
    mut verdict: Classification,
    headers: &HeaderMap,
    now: SystemTime,
) -> Classification {
    verdict = verdict.with_should_retry(headers::should_retry(headers));
    let rate_state = if verdict.kind() == Kind::RateLimited {
        RateLimitState::from_headers(headers, now)
    } else {
        None
    };
    if let Some(state) = rate_state {
        verdict = verdict.with_limit(state.exhausted_limit());
    }
    if let Some((wait, source)) = headers::wait_hint(headers, now) {
        verdict = verdict.with_retry_after(wait, Some(source));
    } else if let Some((wait, limit)) = rate_state.and_then(|s| s.exhausted_reset()) {
        verdict = verdict
            .with_retry_after(wait, Some(HintSource::ResetHeader))
            .with_limit(Some(limit));
    }
    verdict
}

/// A classifier made from a closure that decides the cases it knows and leaves the rest to an
/// inner classifier. Build it with [`classify_fn`].
#[derive(Clone)]
pub struct ClassifyFn<F, C = DefaultClassifier> {
    decide: F,
    fallback: C,
}

impl<F, C: std::fmt::Debug> std::fmt::Debug for ClassifyFn<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifyFn")
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

/// Wraps a closure `(status, headers) -> Option<Kind>`: `Some(kind)` decides, `None` falls back to
/// the [`DefaultClassifier`]. Header hints (`Retry-After`, `x-should-retry`) still apply.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tollgate::classify::{classify_fn, Classify, Kind};
///
/// // A proxy that answers 418 when its upstream is saturated.
/// let classifier = classify_fn(|status: StatusCode, _: &HeaderMap| {
///     (status.as_u16() == 418).then_some(Kind::Overloaded)
/// });
/// let teapot = StatusCode::from_u16(418).unwrap();
/// assert_eq!(classifier.classify_response(teapot, &HeaderMap::new()).kind(), Kind::Overloaded);
/// assert_eq!(classifier.classify_response(StatusCode::OK, &HeaderMap::new()).kind(), Kind::Success);
/// ```
pub fn classify_fn<F>(decide: F) -> ClassifyFn<F>
where
    F: Fn(StatusCode, &HeaderMap) -> Option<Kind> + Clone + Send + Sync + 'static,
{
    ClassifyFn {
        decide,
        fallback: DefaultClassifier::new(),
    }
}

impl<F> ClassifyFn<F> {
    /// Uses `fallback` instead of the [`DefaultClassifier`] for the cases the closure leaves.
    pub fn with_fallback<C: Classify>(self, fallback: C) -> ClassifyFn<F, C> {
        ClassifyFn {
            decide: self.decide,
            fallback,
        }
    }
}

impl<F, C> Classify for ClassifyFn<F, C>
where
    F: Fn(StatusCode, &HeaderMap) -> Option<Kind> + Clone + Send + Sync + 'static,
    C: Classify,
{
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Classification {
        match (self.decide)(status, headers) {
            Some(Kind::Success) => Classification::success().with_status(status),
            Some(kind) => hints_from_headers(
                Classification::new(kind).with_status(status),
                headers,
                SystemTime::now(),
            ),
            None => self.fallback.classify_response(status, headers),
        }
    }

    fn wants_body(&self, verdict: &Classification) -> bool {
        self.fallback.wants_body(verdict)
    }

    fn classify_body(&self, verdict: Classification, body: &[u8]) -> Classification {
        self.fallback.classify_body(verdict, body)
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Classification {
        self.fallback.classify_error(error)
    }
}

/// A set of HTTP error status codes (400..=599) as a bitset: `Copy`, no allocation, O(1)
/// lookups, and small (32 bytes), since every classify future carries its classifier.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 4]);

impl StatusSet {
    const EMPTY: StatusSet = StatusSet([0; 4]);

    const fn slot(status: u16) -> Option<(usize, u64)> {
        if status < 400 || status > 599 {
            return None;
        }
        let index = (status - 400) as usize;
        Some((index / 64, 1u64 << (index % 64)))
    }

    const fn with(mut self, status: u16) -> Self {
        if let Some((word, bit)) = Self::slot(status) {
            self.0[word] |= bit;
        }
        self
    }

    fn insert(&mut self, status: u16) {
        if let Some((word, bit)) = Self::slot(status) {
            self.0[word] |= bit;
        }
    }

    fn remove(&mut self, status: u16) {
        if let Some((word, bit)) = Self::slot(status) {
            self.0[word] &= !bit;
        }
    }

    fn contains(&self, status: u16) -> bool {
        Self::slot(status).is_some_and(|(word, bit)| self.0[word] & bit != 0)
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((100u16..1000).filter(|s| self.contains(*s)))
            .finish()
    }
}

/// No input panics the classifier: header values and error bodies of any shape.
#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use http::HeaderMap;
    use proptest::prelude::*;

    use super::super::headers::tests::fuzz_cases;
    use super::super::headers::RateLimitState;
    use super::super::verdict::{Classification, Kind};
    use super::{Classify, DefaultClassifier};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

        #[test]
        fn no_header_value_panics_the_classifier(value in "\\PC{0,40}", status in 100u16..600) {
            if let Ok(header) = http::HeaderValue::from_str(&value) {
                let mut map = HeaderMap::new();
                for name in ["retry-after", "retry-after-ms", "x-should-retry",
                             "x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens",
                             "anthropic-ratelimit-requests-reset"] {
                    map.insert(name, header.clone());
                }
                let status = http::StatusCode::from_u16(status).unwrap();
                let _ = DefaultClassifier::new().classify_response(status, &map);
                let _ = RateLimitState::from_headers(&map, SystemTime::now());
                let _ = DefaultClassifier::new()
                    .classify_body(Classification::new(Kind::RateLimited), value.as_bytes());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_body_rules(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = DefaultClassifier::new()
                .classify_body(Classification::new(Kind::RateLimited), &body);
        }
    }
}
