//! The [`Fallback`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use super::future::ResponseFuture;
use super::target::Target;
use crate::BoxError;

/// The service built by [`FallbackLayer`](super::FallbackLayer): see the [module](super).
#[derive(Debug, Clone)]
pub struct Fallback<S> {
    targets: Arc<[Target]>,
    services: Vec<S>,
    context_fallback: bool,
}

impl<S> Fallback<S> {
    pub(crate) fn new(targets: Arc<[Target]>, services: Vec<S>, context_fallback: bool) -> Self {
        Fallback {
            targets,
            services,
            context_fallback,
        }
    }
}

impl<S, B> Service<Request<Full<Bytes>>> for Fallback<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError> + std::error::Error + Send + Sync + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each target's readiness is asked for when the request reaches it (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        ResponseFuture::new(
            Arc::clone(&self.targets),
            self.services.clone(),
            self.context_fallback,
            request,
        )
    }
}
