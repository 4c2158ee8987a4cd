//! [`RateLimitBody`]: holds the concurrency permit until the response body ends, and reads the
//! answer's `usage` on the way to settle the request's token charges.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::learn::learn_verdict;
use super::limiter::Settings;
use super::partition::Partition;
use super::quota::{Held, Holds, Outcome};
use super::usage::UsageScan;
use crate::classify::Kind;

/// An admitted request's quota, and whether it holds one of its concurrency permits (returned
/// when dropped). The admission's one reference to the quota goes from the call's future to the
/// body, rather than each taking its own.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) partition: Arc<Partition>,
    pub(crate) permit: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.permit {
            self.partition.release();
        }
    }
}

/// What an admitted request holds of the token limits, settled when the body ends or is
/// dropped: to the usage it reported, or, when none came by, not at all (the charge stands).
#[derive(Debug)]
pub(crate) struct Settlement {
    partition: Arc<Partition>,
    holds: Box<Holds>,
    scan: UsageScan,
}

impl Settlement {
    /// A settlement for `holds`, or `None` when nothing is held that usage could correct.
    /// Boxed: only requests whose tokens are settled pay for it, and every other request's
    /// future and body stay small.
    pub(crate) fn new(partition: &Arc<Partition>, held: Held) -> Option<Box<Self>> {
        let holds = held?;
        for (limit, amount) in holds.amounts() {
            if amount > 0 {
                crate::telemetry::tokens_reserved(&partition.name, limit, amount);
            }
        }
        Some(Box::new(Settlement {
            partition: Arc::clone(partition),
            holds,
            scan: UsageScan::default(),
        }))
    }

    /// Settles at once: the attempt ended without a body worth reading.
    pub(crate) fn settle_now(self, outcome: Outcome) {
        // The scan saw nothing, so the drop that follows settles nothing more.
        let corrections = self.partition.settle(&self.holds, outcome);
        report(&self.partition, corrections);
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(usage) = self.scan.found() {
            let name = &self.partition.name;
            crate::telemetry::tokens_used(name, "input", usage.input_tokens.unwrap_or(0));
            crate::telemetry::tokens_used(name, "output", usage.output_tokens.unwrap_or(0));
            let corrections = self.partition.settle(&self.holds, Outcome::Used(usage));
            report(&self.partition, corrections);
        }
    }
}

fn report(partition: &Partition, corrections: super::quota::Corrections) {
    let name = &partition.name;
    crate::telemetry::token_correction(name, "input", corrections.input);
    crate::telemetry::token_correction(name, "output", corrections.output);
}

/// What a streamed answer's body needs to learn from an error inside the stream (a
/// `rate_limit_error` event is a 429 sent late).
#[derive(Debug)]
pub(crate) struct StreamLearner {
    pub(crate) settings: Settings,
    pub(crate) partition: Arc<Partition>,
    pub(crate) sent_at: tokio::time::Instant,
}

pin_project! {
    /// The body of a response that passed the [`RateLimitLayer`](super::RateLimitLayer).
    ///
    /// When a concurrency limit is set, the request stays "in flight" until this body ends or is
    /// dropped, so streamed completions count while they stream. When token limits are set, the
    /// answer's `usage` is read from the bytes as they go by (nothing is buffered or copied but
    /// the usage object itself) and the request's token charges are corrected to it when the
    /// body ends or is dropped. A `rate_limit_error` inside a stream teaches the limiter as a
    /// 429 does.
    #[derive(Debug)]
    pub struct RateLimitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Admission>,
        settlement: Option<Box<Settlement>>,
        stream: Option<Box<StreamLearner>>,
    }
}

impl<B> RateLimitBody<B> {
    pub(crate) fn new(
        inner: B,
        permit: Option<Admission>,
        settlement: Option<Box<Settlement>>,
        stream: Option<Box<StreamLearner>>,
    ) -> Self {
        RateLimitBody {
            inner,
            permit,
            settlement,
            stream,
        }
    }

    /// The inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for RateLimitBody<B>
where
    B: Body,
    B::Error: 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(settlement), Some(data)) = (this.settlement, frame.data_ref()) {
                    if data.chunk().len() == data.remaining() {
                        settlement.scan.feed(data.chunk());
                    } else {
                        // A `Buf` in pieces: each is scanned where it lies.
                        let mut pieces = [std::io::IoSlice::new(&[]); 16];
                        let n = data.chunks_vectored(&mut pieces);
                        for piece in &pieces[..n] {
                            settlement.scan.feed(piece);
                        }
                    }
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(stream) = this.stream.take() {
                    let verdict = crate::classify::body_error_verdict(error);
                    if let Some(verdict) = verdict.filter(|v| v.kind() == Kind::RateLimited) {
                        learn_verdict(
                            &stream.settings,
                            &stream.partition,
                            verdict,
                            None,
                            stream.sent_at,
                        );
                    }
                }
                this.permit.take();
                this.settlement.take();
            }
            Poll::Ready(None) => {
                this.permit.take();
                this.settlement.take();
            }
            Poll::Pending => {}
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
