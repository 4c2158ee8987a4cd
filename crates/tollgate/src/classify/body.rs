//! [`ClassifiedBody`]: a response body that may have had its start read for classification, and
//! that watches a streamed answer for the errors the provider reports inside it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::stream::{StreamError, Watch};
use crate::BoxError;

pin_project! {
    /// The body of a response that passed through
    /// [`ClassifyLayer`](crate::classify::ClassifyLayer).
    ///
    /// For most responses it is the inner body untouched. For error responses whose body was read
    /// to refine the verdict (or a stream held until its first token), it replays the bytes that
    /// were read, then the rest of the inner body: the caller sees the same body the provider
    /// sent. A streamed answer (`text/event-stream`) is watched as it is read: an error event, a
    /// stall past a [`StreamConfig`](super::StreamConfig) timeout or an end without the
    /// provider's end event ends the body with a [`StreamError`] after the bytes before it.
    #[derive(Debug)]
    pub struct ClassifiedBody<B> {
        prefix: Option<Bytes>,
        // Boxed: only an answer read to its end to classify it can carry them, and a header map
        // is most of this body's size, which every layer above moves with the response.
        trailers: Option<Box<HeaderMap>>,
        inner_done: bool,
        // Boxed: only streamed answers carry one.
        watch: Option<Box<Watch>>,
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
            watch: None,
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
            trailers: trailers.map(Box::new),
            inner_done,
            watch: None,
            inner,
        }
    }

    /// A streamed body, watched; `prefix` was read already (and seen by the watch).
    pub(crate) fn watched(prefix: Bytes, inner: B, inner_done: bool, watch: Box<Watch>) -> Self {
        ClassifiedBody {
            prefix: (!prefix.is_empty()).then_some(prefix),
            trailers: None,
            inner_done,
            watch: Some(watch),
            inner,
        }
    }
}

impl<B> Body for ClassifiedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let Some(watch) = this.watch else {
            if *this.inner_done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
            }
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        // A failure found with the last bytes is surfaced after them, then the body ends.
        if let Some(failure) = watch.failure.take() {
            *this.inner_done = true;
            return Poll::Ready(Some(Err(Box::new(failure))));
        }
        if *this.inner_done {
            return Poll::Ready(None);
        }
        let frame = match this.inner.poll_frame(cx) {
            Poll::Pending => {
                return match watch.poll_timeout(cx) {
                    Poll::Ready(stalled) => {
                        *this.inner_done = true;
                        Poll::Ready(Some(Err(Box::new(stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            Poll::Ready(frame) => frame,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    watch.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                *this.inner_done = true;
                Poll::Ready(Some(Err(error.into())))
            }
            None => {
                *this.inner_done = true;
                if !watch.mid_event() {
                    return Poll::Ready(None);
                }
                let cut = StreamError::cut("the stream ended in the middle of an event");
                Poll::Ready(Some(Err(Box::new(cut))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && if self.inner_done {
                self.trailers.is_none() && self.watch.as_ref().is_none_or(|w| w.failure.is_none())
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
