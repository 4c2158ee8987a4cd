//! [`RateLimitBody`]: holds the concurrency permit until the response body ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::partition::Partition;

/// A concurrency permit, returned when dropped.
#[derive(Debug)]
pub(crate) struct Permit(pub(crate) Arc<Partition>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

pin_project! {
    /// The body of a response that passed the [`RateLimitLayer`](super::RateLimitLayer).
    ///
    /// When a concurrency limit is set, the request stays "in flight" until this body ends or is
    /// dropped, so streamed completions count while they stream.
    #[derive(Debug)]
    pub struct RateLimitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> RateLimitBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        RateLimitBody { inner, permit }
    }

    /// The inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for RateLimitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
