//! What a request costs against the token limits: [`Cost`], [`TokenEstimate`],
//! [`EstimateTokens`], [`TokenCost`].

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::Request;
use http_body::Body;

/// A request's tokens as providers charge them at admission: the prompt's estimate (`input`)
/// and what the answer may produce (`output`: `max_tokens` times `n`).
///
/// Each limit takes its part: an input limit the input, an output limit the output, a combined
/// limit the greater of the two (OpenAI's rule) or their sum
/// ([`LimitConfig::sum_token_estimate`](super::LimitConfig::sum_token_estimate)). A bare number
/// is an input estimate.
///
/// ```
/// use tollgate::rate_limit::TokenEstimate;
///
/// let estimate = TokenEstimate::new(120, 400);
/// assert_eq!(estimate.combined(false), 400);
/// assert_eq!(estimate.combined(true), 520);
/// assert_eq!(TokenEstimate::from(1_000), TokenEstimate::new(1_000, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenEstimate {
    /// The prompt's tokens.
    pub input: u64,
    /// The most the answer may produce.
    pub output: u64,
}

impl TokenEstimate {
    /// `input` prompt tokens and at most `output` answer tokens.
    pub const fn new(input: u64, output: u64) -> Self {
        TokenEstimate { input, output }
    }

    /// The charge against a combined token limit: the sum, or the greater of the two; at
    /// least 1.
    pub const fn combined(&self, sum: bool) -> u64 {
        let combined = if sum {
            self.input.saturating_add(self.output)
        } else if self.input > self.output {
            self.input
        } else {
            self.output
        };
        if combined == 0 {
            1
        } else {
            combined
        }
    }
}

impl From<u64> for TokenEstimate {
    fn from(input: u64) -> Self {
        TokenEstimate::new(input, 0)
    }
}

/// Decides how many tokens a request costs. Closures `Fn(&Request<B>) -> T` are costs, where
/// `T` is a [`TokenEstimate`] or a number of tokens.
///
/// ```
/// use tollgate::rate_limit::{Cost, TokenEstimate};
///
/// let flat = |_: &http::Request<String>| 1_000u64;
/// assert_eq!(flat.cost(&http::Request::new(String::new())), TokenEstimate::new(1_000, 0));
/// ```
pub trait Cost<B>: Clone + Send + Sync + 'static {
    /// The request's tokens.
    fn cost(&self, request: &Request<B>) -> TokenEstimate;
}

impl<B, F, T> Cost<B> for F
where
    F: Fn(&Request<B>) -> T + Clone + Send + Sync + 'static,
    T: Into<TokenEstimate>,
{
    fn cost(&self, request: &Request<B>) -> TokenEstimate {
        self(request).into()
    }
}

/// A request extension that states the request's cost, overriding any estimate: a number of
/// input tokens ([`TokenEstimate`] states both parts).
///
/// ```
/// let mut request = http::Request::new(String::new());
/// request.extensions_mut().insert(tollgate::rate_limit::TokenCost(4_096));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCost(pub u64);

/// The default cost: estimates an AI request's tokens the way providers charge at admission.
///
/// The prompt is its characters / 4 (OpenAI's admission rule), the output `max_tokens` (or
/// `max_completion_tokens`, `max_output_tokens`) times `n`; each limit takes its part (see
/// [`TokenEstimate`]). A [`TokenEstimate`] or [`TokenCost`] extension wins; a body it cannot
/// read costs [`fallback`](Self::fallback) input tokens.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tollgate::rate_limit::{Cost, EstimateTokens, TokenEstimate};
///
/// let body = r#"{"model":"gpt-4o","max_tokens":500,"messages":[{"role":"user","content":"Hello!"}]}"#;
/// let request = http::Request::new(Full::new(Bytes::from_static(body.as_bytes())));
/// assert_eq!(EstimateTokens::new().cost(&request), TokenEstimate::new(2, 500));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateTokens {
    fallback: u64,
}

impl Default for EstimateTokens {
    fn default() -> Self {
        EstimateTokens { fallback: 1_000 }
    }
}

impl EstimateTokens {
    /// Prompt / 4 and `max_tokens`; 1,000 tokens for bodies it cannot read.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cost of a body that cannot be read (default 1,000).
    pub fn fallback(mut self, tokens: u64) -> Self {
        self.fallback = tokens;
        self
    }

    /// The charge against a combined limit by OpenAI's rule (the greater of `max_tokens` and
    /// the prompt estimate), or `None` if the body is not a JSON object.
    pub fn estimate_json(&self, body: &[u8]) -> Option<u64> {
        self.estimate(body).map(|estimate| estimate.combined(false))
    }

    /// The prompt and output estimate for a JSON request body, or `None` if it is not a JSON
    /// object.
    ///
    /// ```
    /// use tollgate::rate_limit::{EstimateTokens, TokenEstimate};
    ///
    /// let body = br#"{"max_tokens":400,"messages":[{"role":"user","content":"Hello there!"}]}"#;
    /// assert_eq!(EstimateTokens::new().estimate(body), Some(TokenEstimate::new(3, 400)));
    /// ```
    pub fn estimate(&self, body: &[u8]) -> Option<TokenEstimate> {
        let request = super::scan::fields(body)?;
        let max_tokens = request
            .max_tokens
            .or(request.max_completion_tokens)
            .or(request.max_output_tokens)
            .unwrap_or(0);
        let prompt = (request.chars as u64).div_ceil(4);
        let output = max_tokens.saturating_mul(request.n.unwrap_or(1).max(1));
        Some(TokenEstimate::new(prompt, output))
    }
}

impl<B: PeekBody> Cost<B> for EstimateTokens {
    fn cost(&self, request: &Request<B>) -> TokenEstimate {
        if let Some(estimate) = request.extensions().get::<TokenEstimate>() {
            return *estimate;
        }
        if let Some(TokenCost(cost)) = request.extensions().get::<TokenCost>() {
            return TokenEstimate::from(*cost);
        }
        request
            .body()
            .peek()
            .and_then(|bytes| self.estimate(&bytes))
            .unwrap_or(TokenEstimate::from(self.fallback))
    }
}

/// A request body whose bytes can be read without consuming it (bodies held in memory).
///
/// ```
/// use tollgate::rate_limit::PeekBody;
/// assert_eq!(String::from("{}").peek().as_deref(), Some(&b"{}"[..]));
/// ```
pub trait PeekBody {
    /// The whole body, if it is in memory; `None` for streams.
    fn peek(&self) -> Option<Bytes>;
}

impl PeekBody for String {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(self.as_bytes()))
    }
}

impl PeekBody for Bytes {
    fn peek(&self) -> Option<Bytes> {
        Some(self.clone())
    }
}

impl PeekBody for Vec<u8> {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(self))
    }
}

impl PeekBody for &'static str {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::from_static(self.as_bytes()))
    }
}

impl PeekBody for () {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::new())
    }
}

impl PeekBody for http_body_util::Full<Bytes> {
    fn peek(&self) -> Option<Bytes> {
        // `Full` yields its one chunk at once; a cheap clone (a reference count) reads it.
        let mut copy = self.clone();
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut copy).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
            Poll::Ready(None) => Some(Bytes::new()),
            _ => None,
        }
    }
}

impl<D, E> PeekBody for http_body_util::combinators::BoxBody<D, E> {
    fn peek(&self) -> Option<Bytes> {
        None
    }
}
