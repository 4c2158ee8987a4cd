//! The [`ResponseFuture`] of [`Classify`](super::Classify).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::response::Parts;
use http::{HeaderMap, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::ClassifiedBody;
use super::classifier::Classify;
use super::error::ClassifiedError;
use super::headers::RateLimitState;
use super::stream::{is_event_stream, StreamConfig, StreamError, Watch};
use super::verdict::{Classification, Kind};
use super::MAX_CLASSIFIED_BODY;
use crate::BoxError;

pin_project! {
    /// Response future of [`Classify`](super::Classify): awaits the inner future, then (for error
    /// answers the classifier wants to read) up to 64 KiB of the body, or (for a stream with the
    /// first-token gate) the stream up to its first content event.
    pub struct ResponseFuture<F, B, C> {
        classifier: C,
        streams: StreamConfig,
        #[pin]
        state: State<F, B>,
    }
}

impl<F, B, C> std::fmt::Debug for ResponseFuture<F, B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("classify::ResponseFuture")
            .finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Waiting { #[pin] future: F },
        Reading { held: Box<Held<B>> },
        Gating { held: Box<Held<B>>, watch: Option<Box<Watch>> },
        Done,
    }
}

/// What a state that reads the body holds. Boxed: the future stays small (every layer above
/// moves it) on the path that reads nothing, a success answered whole.
struct Held<B> {
    parts: Option<Parts>,
    body: Option<B>,
    buf: BytesMut,
    verdict: Classification,
}

impl<B> Held<B> {
    fn new(parts: Parts, body: B, verdict: Classification) -> Box<Self> {
        Box::new(Held {
            parts: Some(parts),
            body: Some(body),
            buf: BytesMut::new(),
            verdict,
        })
    }
}

impl<F, B, C> ResponseFuture<F, B, C> {
    pub(crate) fn new(future: F, classifier: C, streams: StreamConfig) -> Self {
        ResponseFuture {
            classifier,
            streams,
            state: State::Waiting { future },
        }
    }
}

impl<F, E, B, C> Future for ResponseFuture<F, B, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<ClassifiedBody<B>>, ClassifiedError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { future } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(response) => response,
                        Err(error) => {
                            this.state.set(State::Done);
                            let error = error.into();
                            let verdict = this.classifier.classify_error(&*error);
                            return Poll::Ready(Err(ClassifiedError::new(verdict, error)));
                        }
                    };
                    let verdict = this
                        .classifier
                        .classify_response(response.status(), response.headers());
                    let (parts, body) = response.into_parts();
                    if verdict.kind() == Kind::Success && is_event_stream(&parts.headers) {
                        // Said once here, read by the layers outside without looking again.
                        let verdict = verdict.watched_stream();
                        let watch = Box::new(Watch::new(*this.streams));
                        if !this.streams.first_token_gate {
                            this.state.set(State::Done);
                            let body = ClassifiedBody::watched(Bytes::new(), body, false, watch);
                            return Poll::Ready(Ok(stamp(parts, body, verdict)));
                        }
                        this.state.set(State::Gating {
                            held: Held::new(parts, body, verdict),
                            watch: Some(watch),
                        });
                        continue;
                    }
                    if !this.classifier.wants_body(&verdict) || declared_too_long(&parts.headers) {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(stamp(parts, ClassifiedBody::new(body), verdict)));
                    }
                    this.state.set(State::Reading {
                        held: Held::new(parts, body, verdict),
                    });
                }
                StateProj::Reading { held } => {
                    let Held {
                        parts,
                        body,
                        buf,
                        verdict,
                    } = &mut **held;
                    let (done, trailers) = match read_prefix(body, buf, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(end)) => end,
                        Poll::Ready(Err(error)) => {
                            // The answer broke off mid-body: a connection failure, whatever
                            // its status said.
                            let verdict = Classification::new(Kind::Connection)
                                .with_should_retry(verdict.should_retry());
                            this.state.set(State::Done);
                            return Poll::Ready(Err(ClassifiedError::new(verdict, error)));
                        }
                    };
                    let prefix = std::mem::take(buf).freeze();
                    let refined = this.classifier.classify_body(*verdict, &prefix);
                    let (parts, body) = (parts.take(), body.take());
                    this.state.set(State::Done);
                    let (Some(parts), Some(body)) = (parts, body) else {
                        // Reading holds its parts and body until it completes.
                        return Poll::Ready(Err(after_completion()));
                    };
                    let body = ClassifiedBody::replay(prefix, body, done, trailers);
                    return Poll::Ready(Ok(stamp(parts, body, refined)));
                }
                StateProj::Gating { held, watch } => {
                    let Held {
                        parts,
                        body,
                        buf,
                        verdict,
                    } = &mut **held;
                    let gate = ready!(gate(body, buf, watch, cx));
                    let (parts, body, watch) = (parts.take(), body.take(), watch.take());
                    let verdict = *verdict;
                    let prefix = std::mem::take(buf).freeze();
                    this.state.set(State::Done);
                    let (Some(parts), Some(body), Some(watch)) = (parts, body, watch) else {
                        return Poll::Ready(Err(after_completion()));
                    };
                    return Poll::Ready(match gate {
                        Gate::Open { inner_done } => {
                            let body = ClassifiedBody::watched(prefix, body, inner_done, watch);
                            Ok(stamp(parts, body, verdict))
                        }
                        // Before the first token: the attempt failed, and may be retried.
                        Gate::Failed(error) => Err(ClassifiedError::new(
                            error.classification(),
                            Box::new(error),
                        )),
                    });
                }
                StateProj::Done => return Poll::Ready(Err(after_completion())),
            }
        }
    }
}

/// How a stream held until its first token ended its wait.
enum Gate {
    /// The first content event (or the provider's end) arrived: the caller gets the stream.
    Open { inner_done: bool },
    /// An error event, a disconnect or a stall came first.
    Failed(StreamError),
}

/// Reads the stream into `buf` until its first content event, watching it.
fn gate<B>(
    body: &mut Option<B>,
    buf: &mut BytesMut,
    watch: &mut Option<Box<Watch>>,
    cx: &mut Context<'_>,
) -> Poll<Gate>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (Some(body), Some(watch)) = (body.as_mut(), watch.as_mut()) else {
        return Poll::Ready(Gate::Failed(StreamError::cut("polled after completion")));
    };
    loop {
        let frame = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => {
                return watch.poll_timeout(cx).map(Gate::Failed);
            }
            Poll::Ready(frame) => frame,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    watch.feed(data);
                    buf.extend_from_slice(data);
                }
                if let Some(failure) = watch.failure.take() {
                    drain_ready(body, cx);
                    return Poll::Ready(Gate::Failed(failure));
                }
                if watch.content || watch.ended {
                    return Poll::Ready(Gate::Open { inner_done: false });
                }
            }
            Some(Err(error)) => {
                let error: BoxError = error.into();
                return Poll::Ready(Gate::Failed(StreamError::cut(format!(
                    "the stream broke off before its first token: {error}"
                ))));
            }
            None if watch.ended => return Poll::Ready(Gate::Open { inner_done: true }),
            None => {
                return Poll::Ready(Gate::Failed(StreamError::cut(
                    "the stream ended before its first token",
                )))
            }
        }
    }
}

/// Reads what a failed stream has already delivered, without waiting, so that a connection whose
/// answer has in fact ended goes back to the pool clean rather than dropped mid-answer.
fn drain_ready<B>(body: &mut B, cx: &mut Context<'_>)
where
    B: Body<Data = Bytes> + Unpin,
{
    for _ in 0..16 {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

/// Reads data frames into `buf` until the body ends, trailers arrive, or the bound is reached.
/// Returns whether the body ended, and its trailers.
fn read_prefix<B>(
    body: &mut Option<B>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<(bool, Option<HeaderMap>), BoxError>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let Some(body) = body.as_mut() else {
        return Poll::Ready(Ok((true, None)));
    };
    while buf.len() < MAX_CLASSIFIED_BODY {
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            None => return Poll::Ready(Ok((true, None))),
            Some(Err(error)) => return Poll::Ready(Err(error.into())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(frame) => return Poll::Ready(Ok((true, frame.into_trailers().ok()))),
            },
        }
    }
    Poll::Ready(Ok((false, None)))
}

fn declared_too_long(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > MAX_CLASSIFIED_BODY)
}

fn stamp<B>(mut parts: Parts, body: B, verdict: Classification) -> Response<B> {
    if let Some(state) = RateLimitState::from_headers_with(&parts.headers, SystemTime::now) {
        parts.extensions.insert(state);
    }
    // A plain success is what `response_verdict` makes of the head without a stamp: leaving it
    // out saves the extensions' three allocations on almost every call.
    let plain_success = verdict == Classification::new(Kind::Success).with_status(parts.status)
        && parts.status.as_u16() < 400;
    if !plain_success {
        parts.extensions.insert(verdict);
    }
    Response::from_parts(parts, body)
}

/// The classify future's answer when polled after it completed (a caller's bug, not retryable).
fn after_completion() -> ClassifiedError {
    ClassifiedError::new(
        Classification::new(Kind::ClientError),
        crate::polled_after_completion("classify"),
    )
}
