//! Shared pieces of tollgate's benchmarks: the in-memory provider every layer wraps, the request
//! they all send, and adapters so that tower's and tower-resilience's layers see the same work.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

/// The body every benchmark sends and receives.
pub type Body = Full<Bytes>;

const REQUEST_BODY: &[u8] =
    br#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;

/// The request every benchmark sends: a small JSON body and nothing else, so that the figures
/// are the layers' own cost (building a request with a parsed URI and headers costs more than
/// most layers).
pub fn request() -> Request<Body> {
    Request::new(Full::new(Bytes::from_static(REQUEST_BODY)))
}

/// A current-thread Tokio runtime with its clock and I/O: what the single-task figures run on.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread Tokio runtime")
}

/// An in-memory provider that answers 200 at once: the bare service every layer wraps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Instant200;

impl<B> tower::Service<Request<B>> for Instant200 {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"{}")))))
    }
}

/// A request wrapper that is `Clone` (by copying the parts, as a retry must), for middleware
/// that insists on `Req: Clone`.
#[derive(Debug)]
pub struct CloneRequest(pub Request<Body>);

impl Clone for CloneRequest {
    fn clone(&self) -> Self {
        CloneRequest(clone_parts(&self.0))
    }
}

impl tower::Service<CloneRequest> for Instant200 {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: CloneRequest) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"{}")))))
    }
}

/// tower's `Retry` policy equivalent to tollgate's on the success path: it copies the request
/// before the first attempt and never retries a 200.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverRetry;

impl<E> tower::retry::Policy<Request<Body>, Response<Body>, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Body>,
        _: &mut Result<Response<Body>, E>,
    ) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        Some(clone_parts(request))
    }
}

/// A copy of a request's method, URI, headers and body.
pub fn clone_parts(request: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// The layers under comparison, configured alike, for the criterion suite and the report.
pub mod layers {
    use std::time::Duration;

    use tollgate::circuit_breaker::CircuitBreakerLayer;
    use tollgate::classify::ClassifyLayer;
    use tollgate::rate_limit::Rate;
    use tollgate::rate_limit::RateLimitLayer;
    use tollgate::retry::BackoffRetryLayer;
    use tower::{Service, ServiceBuilder};

    use super::{Body, CloneRequest, Instant200};

    /// A rate no benchmark reaches, so the limiters never wait.
    pub const HUGE: u64 = 1_000_000_000;

    /// tollgate's retry with its defaults.
    pub fn tollgate_retry() -> BackoffRetryLayer {
        BackoffRetryLayer::new()
    }

    /// tollgate's rate limiter on requests.
    pub fn tollgate_limit() -> RateLimitLayer {
        RateLimitLayer::builder()
            .requests(Rate::per_second(HUGE))
            .build()
            .expect("valid")
    }

    /// tollgate's rate limiter on concurrency only.
    pub fn tollgate_concurrency() -> RateLimitLayer {
        RateLimitLayer::builder()
            .concurrency(1024)
            .build()
            .expect("valid")
    }

    /// tollgate's breaker with its defaults.
    pub fn tollgate_breaker() -> CircuitBreakerLayer {
        CircuitBreakerLayer::new()
    }

    /// tower-resilience's retry: 5 attempts, exponential backoff.
    pub fn tr_retry() -> tower_resilience::retry::RetryLayer<
        CloneRequest,
        http::Response<Body>,
        std::convert::Infallible,
    > {
        tower_resilience::retry::RetryLayer::builder()
            .max_attempts(5)
            .exponential_backoff(Duration::from_millis(500))
            .build()
    }

    /// tower-resilience's token-bucket rate limiter.
    pub fn tr_limiter() -> tower_resilience::ratelimiter::RateLimiterLayer {
        tower_resilience::ratelimiter::RateLimiterLayer::builder()
            .limit_for_period(HUGE as usize)
            .refresh_period(Duration::from_secs(1))
            .burst_size(1_000)
            .build()
            .expect("valid")
    }

    /// tower-resilience's circuit breaker.
    pub fn tr_breaker() -> tower_resilience::circuitbreaker::CircuitBreakerLayer {
        tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .build()
            .expect("valid")
    }

    /// The recommended stack over the in-memory provider: retry, breaker, requests + tokens +
    /// concurrency limits, classification.
    pub fn full_stack() -> impl Service<
        http::Request<Body>,
        Response = impl Sized + Send,
        Error = impl std::fmt::Debug + Send,
        Future = impl std::future::Future + Send,
    > + Clone
           + Send
           + 'static {
        ServiceBuilder::new()
            .layer(tollgate_retry())
            .layer(tollgate_breaker())
            .layer(
                RateLimitLayer::builder()
                    .requests(Rate::per_second(HUGE))
                    .tokens(Rate::per_second(HUGE))
                    .concurrency(1024)
                    .build()
                    .expect("valid"),
            )
            .layer(ClassifyLayer::new())
            .service(Instant200)
    }
}
