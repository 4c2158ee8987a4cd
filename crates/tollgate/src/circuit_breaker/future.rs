//! The [`ResponseFuture`] of [`CircuitBreaker`](super::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::{BreakerBody, Pending};
use super::circuit::{Circuit, Ticket};
use super::error::CircuitOpen;
use crate::classify::{error_verdict, response_verdict, Kind};
use crate::BoxError;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker): a refusal ready at once, or
    /// the inner call whose outcome is recorded when it ends.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        pending: Option<Pending>,
        // Boxed here rather than when it is returned (as a `BoxError`): the same one allocation,
        // and the future of an admitted call, which every layer above moves, stays small.
        refusal: Option<Box<CircuitOpen>>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("circuit_breaker::ResponseFuture")
            .field("admitted", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(future: F, circuit: Arc<Circuit>, ticket: Ticket) -> Self {
        // Time is read only when slow calls are watched.
        let started = circuit.settings.config.slow_calls.map(|_| Instant::now());
        ResponseFuture {
            inner: Some(future),
            pending: Some(Pending {
                circuit,
                ticket,
                started,
                recorded: false,
            }),
            refusal: None,
        }
    }

    pub(crate) fn refused(refusal: CircuitOpen) -> Self {
        ResponseFuture {
            inner: None,
            pending: None,
            refusal: Some(Box::new(refusal)),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<BreakerBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(match this.refusal.take() {
                Some(refusal) => refusal,
                None => crate::polled_after_completion("circuit breaker"),
            }));
        };
        let result: Result<Response<B>, BoxError> = ready!(inner.poll(cx)).map_err(Into::into);
        let mut streaming = None;
        if let Some(pending) = this.pending.take() {
            let verdict = match &result {
                Ok(response) => response_verdict(response),
                Err(error) => error_verdict(&**error),
            };
            match &result {
                // A stream that started well is judged when it ends.
                Ok(_) if verdict.kind() == Kind::Success && verdict.is_stream() => {
                    streaming = Some(pending);
                }
                _ => pending.finish_as(verdict.kind()),
            }
        }
        Poll::Ready(result.map(|response| response.map(|body| BreakerBody::new(body, streaming))))
    }
}
