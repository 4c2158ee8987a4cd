//! The [`ResponseFuture`] of [`Fallback`](super::Fallback): one target after another.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::target::{ServedBy, Skipped, Target};
use crate::circuit_breaker::CircuitOpen;
use crate::classify::{error_verdict, response_verdict, Kind, LimitKind};
use crate::rate_limit::{PeekBody, RateLimitError, Refusal};
use crate::retry::FailFast;
use crate::BoxError;

pin_project! {
    /// Response future of [`Fallback`](super::Fallback).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        targets: Arc<[Target]>,
        services: Vec<S>,
        context_fallback: bool,
        parts: Parts,
        body: Bytes,
        index: usize,
        skipped: Vec<Skipped>,
        #[pin]
        state: State<S>,
        _body: std::marker::PhantomData<fn() -> B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        /// Waiting for the target's service to be ready.
        Ready { service: Option<S>, request: Option<Request<Full<Bytes>>> },
        /// The target has the request.
        Called { #[pin] future: S::Future },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("fallback::ResponseFuture")
            .field("target", &self.index)
            .finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>> + Clone,
{
    pub(crate) fn new(
        targets: Arc<[Target]>,
        services: Vec<S>,
        context_fallback: bool,
        request: Request<Full<Bytes>>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        // `Full` holds its bytes: reading them is a reference count.
        let body = body.peek().unwrap_or_default();
        let state = State::Ready {
            service: services.first().cloned(),
            request: Some(request_for(&targets[0], &parts, &body, targets.len() == 1)),
        };
        ResponseFuture {
            targets,
            services,
            context_fallback,
            parts,
            body,
            index: 0,
            skipped: Vec::new(),
            state,
            _body: std::marker::PhantomData,
        }
    }
}

/// The request as `target` gets it; one that is not the `last` refuses at once rather than
/// wait for an open breaker or the rate limiter.
fn request_for(target: &Target, parts: &Parts, body: &Bytes, last: bool) -> Request<Full<Bytes>> {
    let mut request = Request::from_parts(parts.clone(), Full::new(target.body(body)));
    if let Some(uri) = target.uri(&parts.uri) {
        *request.uri_mut() = uri;
    }
    if !last {
        request.extensions_mut().insert(FailFast);
    }
    request
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError> + std::error::Error + Send + Sync + 'static,
{
    type Output = Result<Response<B>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = match this.state.as_mut().project() {
                StateProj::Ready { service, request } => {
                    let (Some(svc), Some(_)) = (service.as_mut(), request.as_ref()) else {
                        // A chain with no service for this target cannot happen: the layer
                        // builds one per target.
                        return Poll::Pending;
                    };
                    match ready!(svc.poll_ready(cx)) {
                        Ok(()) => {
                            let (mut svc, request) = match (service.take(), request.take()) {
                                (Some(svc), Some(request)) => (svc, request),
                                _ => return Poll::Pending,
                            };
                            let future = svc.call(request);
                            this.state.set(State::Called { future });
                            continue;
                        }
                        Err(error) => Err(error),
                    }
                }
                StateProj::Called { future } => ready!(future.poll(cx)),
            };
            let last = *this.index + 1 >= this.targets.len();
            let reason = match &result {
                Ok(response) => response_reason(response, *this.context_fallback),
                Err(error) => error_reason(error),
            };
            match reason {
                Some(reason) if !last => {
                    this.skipped.push(Skipped {
                        target: this.targets[*this.index].name_arc(),
                        reason,
                    });
                    *this.index += 1;
                    let target = &this.targets[*this.index];
                    let last = *this.index + 1 == this.targets.len();
                    this.state.set(State::Ready {
                        service: this.services.get(*this.index).cloned(),
                        request: Some(request_for(target, this.parts, this.body, last)),
                    });
                }
                _ => {
                    return Poll::Ready(result.map(|mut response| {
                        response.extensions_mut().insert(ServedBy {
                            target: this.targets[*this.index].name_arc(),
                            index: *this.index,
                            skipped: std::mem::take(this.skipped),
                        });
                        response
                    }));
                }
            }
        }
    }
}

/// Why an answer moves the request on: retries gave up on a transient verdict, or the prompt is
/// too long for this target's context window.
fn response_reason<B>(response: &Response<B>, context_fallback: bool) -> Option<&'static str> {
    let verdict = response_verdict(response);
    match verdict.kind() {
        Kind::ClientError
            if context_fallback && verdict.limit() == Some(LimitKind::ContextWindow) =>
        {
            Some("context_window")
        }
        kind => gave_up(kind),
    }
}

/// Why an error moves the request on: the breaker is open, the quota refused, or retries gave
/// up on a transient verdict.
fn error_reason(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<&'static str> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.downcast_ref::<CircuitOpen>().is_some() {
            return Some("breaker_open");
        }
        if let Some(refused) = error.downcast_ref::<RateLimitError>() {
            // A request larger than a limit is the request's own fault.
            return (!matches!(refused.refusal(), Refusal::TooLarge { .. })).then_some("quota");
        }
        cause = error.source();
    }
    gave_up(error_verdict(error).kind())
}

fn gave_up(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Overloaded => Some("gave_up_overloaded"),
        Kind::ServerError => Some("gave_up_server_error"),
        Kind::Timeout => Some("gave_up_timeout"),
        Kind::Connection => Some("gave_up_connection"),
        Kind::RateLimited => Some("gave_up_rate_limited"),
        Kind::QuotaExhausted => Some("quota_exhausted"),
        _ => None,
    }
}
