//! [`ClassifiedBody`]: a response body that may have had its start read for classification.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that passed through
    /// [`ClassifyLayer`](crate::classify::ClassifyLayer).
    ///
    /// For most responses it is the inner body untouched. For error responses whose body was read
    /// to refine the verdict, it replays the bytes that were read, then the rest of the inner body:
    /// the caller sees the same body the provider sent.
    #[derive(Debug)]
    pub struct ClassifiedBody<B> {
        prefix: Option<Bytes>,
        trailers: Option<HeaderMap>,
        inner_done: bool,
        #[pin]
        inner: B,
    }
}

impl<B> ClassifiedBody<B> {
    /// The inner body, untouched.
    pub fn new(inner: B) -> Self {
        ClassifiedBody {
            prefix: None,
            trailers: None,
            inner_done: false,
            inner,
        }
    }

    /// A body whose first `prefix` bytes were already read from `inner`. When `inner_done`, the
    /// inner body has ended and `trailers` are the trailers it sent, if any.
    pub(crate) fn replay(
        prefix: Bytes,
        inner: B,
        inner_done: bool,
        trailers: Option<HeaderMap>,
    ) -> Self {
        ClassifiedBody {
            prefix: (!prefix.is_empty()).then_some(prefix),
            trailers,
            inner_done,
            inner,
        }
    }
}

impl<B> Body for ClassifiedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if *this.inner_done {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && if self.inner_done {
                self.trailers.is_none()
            } else {
                self.inner.is_end_stream()
            }
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        if self.inner_done {
            return SizeHint::with_exact(prefix);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(prefix));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(prefix));
        }
        hint
    }
}
