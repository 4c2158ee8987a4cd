//! Tower middleware that makes any tower-based HTTP client survive the rate limits and failures
//! of AI APIs (OpenAI, Anthropic, Groq, Azure OpenAI, Gemini, any OpenAI-compatible server).
//!
//! The layers, one module each:
//!
//! - [`ClassifyLayer`](classify::ClassifyLayer) judges each attempt once (rate limited,
//!   overloaded, transient, permanent, auth, ...) and parses the provider's rate-limit headers;
//!   the other layers act on its verdict. It watches streamed answers for the errors providers
//!   send inside a `200`, and can hold a stream until its first token.
//! - [`RateLimitLayer`](rate_limit::RateLimitLayer) keeps requests, tokens (combined, input,
//!   output, per day) and concurrency under the provider's limits, with buckets shared by every
//!   clone, settled to each answer's real usage; a configured limit is a ceiling the rate adapts
//!   below, to what the provider really allows. Its queue has priority lanes and weighted
//!   tenants.
//! - [`BackoffRetryLayer`](retry::BackoffRetryLayer) retries what can succeed, with jittered
//!   exponential backoff, server wait hints, a retry budget and deadlines.
//! - [`CircuitBreakerLayer`](circuit_breaker::CircuitBreakerLayer) fails fast while a provider is
//!   down and probes until it is back.
//! - [`FallbackLayer`](fallback::FallbackLayer) sends a request on to the next target (another
//!   deployment, provider or model) when one cannot serve it.
//!
//! Each layer has one settings value ([`LimitConfig`](rate_limit::LimitConfig),
//! [`RetryConfig`](retry::RetryConfig), [`BreakerConfig`](circuit_breaker::BreakerConfig)) that
//! its builder, a [`Policy`](stack::Policy) (the four layers for one [`Provider`]) and a config
//! file (feature `config`) all write into. [`ServiceBuilderExt`] adds them to tower's
//! `ServiceBuilder`: `ServiceBuilder::new().tollgate(&policy)?`.
//!
//! Every layer keeps its shared state in an `Arc` owned by the layer, so every clone of a service
//! (and every service one layer builds, as axum does per connection) shares one quota, budget or
//! breaker. Time is `tokio::time`, so tests can pause and advance it.
//!
//! # A stack over hyper-util's client
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tollgate::classify::ClassifyLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tollgate::BoxError> {
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let mut service = ServiceBuilder::new().layer(ClassifyLayer::new()).service(client);
//!
//! let request = http::Request::post("http://127.0.0.1:8080/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[]}"#)))?;
//! let response = service.ready().await?.call(request).await?;
//! let verdict = tollgate::classify::response_verdict(&response);
//! println!("{:?}", verdict.kind());
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod attempt;
mod builder_ext;
pub mod circuit_breaker;
pub mod classify;
#[cfg(feature = "config")]
pub mod config;
mod config_error;
pub mod fallback;
pub mod key;
mod provider;
pub mod rate_limit;
mod redact;
pub mod retry;
#[cfg(feature = "serde")]
mod serde_forms;
mod setters;
pub mod stack;
mod telemetry;

pub use builder_ext::ServiceBuilderExt;
pub use config_error::ConfigError;
pub use provider::{Auth, Provider, UnknownProvider};
pub use redact::{redact_secrets, redact_uri, SECRET_HEADERS};

/// The boxed error type every tollgate layer returns, as tower's own layers do.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The one rule for every tollgate future polled again after it completed: it answers this
/// error instead of panicking (tower's contract makes that poll a caller's bug, but an error is
/// the cheaper way to find it).
#[derive(Debug)]
struct PolledAfterCompletion(&'static str);

impl std::fmt::Display for PolledAfterCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} future was polled after it completed", self.0)
    }
}

impl std::error::Error for PolledAfterCompletion {}

/// The error a `layer` future answers when polled after it completed.
pub(crate) fn polled_after_completion(layer: &'static str) -> BoxError {
    Box::new(PolledAfterCompletion(layer))
}
