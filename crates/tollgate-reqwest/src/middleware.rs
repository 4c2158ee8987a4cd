//! [`TollgateMiddleware`]: the standard stack as a reqwest-middleware middleware.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tollgate::stack::{Policy, StandardLayer};
use tollgate::ConfigError;
use tower::{Layer, Service, ServiceExt};

/// The standard tollgate stack ([`StandardLayer`]: retry, circuit breaker, rate limit,
/// classification) around each request of a [`reqwest_middleware::ClientWithMiddleware`].
/// Its buckets, breaker and budget are shared by every clone of the client.
///
/// ```
/// use tollgate::rate_limit::Rate;
/// use tollgate::stack::Policy;
/// use tollgate::Provider;
/// use tollgate_reqwest::TollgateMiddleware;
///
/// let mut policy = Policy::preset(Provider::Anthropic);
/// policy.limits.requests = Some(Rate::per_minute(50));
/// let middleware = TollgateMiddleware::new(&policy)?;
/// let breaker = middleware.layer().breaker_handle();
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(middleware)
///     .build();
/// # let _ = (client, breaker);
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TollgateMiddleware {
    layer: StandardLayer,
}

impl TollgateMiddleware {
    /// The standard stack for `policy`, checked.
    pub fn new(policy: &Policy) -> Result<Self, ConfigError> {
        Ok(TollgateMiddleware {
            layer: policy.layer()?,
        })
    }

    /// Around an existing layer (one built with a shared store, say).
    pub fn from_layer(layer: StandardLayer) -> Self {
        TollgateMiddleware { layer }
    }

    /// The stack, for its handles (limits, snapshot, breaker state).
    pub fn layer(&self) -> &StandardLayer {
        &self.layer
    }
}

#[async_trait::async_trait]
impl Middleware for TollgateMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        // A streaming body cannot be sent twice: such a request goes on as it is.
        if request.body().is_some_and(|body| body.as_bytes().is_none()) {
            return next.run(request, extensions).await;
        }
        let request: http::Request<reqwest::Body> = request.try_into()?;
        let (parts, body) = request.into_parts();
        let body = body
            .as_bytes()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        let stack = self.layer.layer(NextService { next });
        match stack.oneshot(http::Request::from_parts(parts, body)).await {
            Ok(response) => Ok(response.map(reqwest::Body::wrap).into()),
            Err(error) => Err(reqwest_middleware::Error::middleware(error)),
        }
    }
}

/// The rest of the middleware chain (and the client) as the service under the stack: each
/// attempt goes through it with extensions of its own.
#[derive(Clone)]
struct NextService<'a> {
    next: Next<'a>,
}

impl<'a> Service<http::Request<Bytes>> for NextService<'a> {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest_middleware::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'a>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let next = self.next.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let mut extensions = Extensions::new();
            let response = next.run(request, &mut extensions).await?;
            Ok(response.into())
        })
    }
}
