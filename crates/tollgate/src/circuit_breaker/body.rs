//! [`BreakerBody`]: a streamed answer's outcome is recorded when its stream ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::circuit::{Circuit, Ticket};
use super::config::Outcome;
use crate::classify::{body_error_verdict, Kind};

/// An admitted call; if it ends without an outcome (dropped), its probe slot is freed.
pub(crate) struct Pending {
    pub(crate) circuit: Arc<Circuit>,
    pub(crate) ticket: Ticket,
    pub(crate) started: Option<Instant>,
    pub(crate) recorded: bool,
}

impl Pending {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        let slow = match (self.started, self.circuit.settings.config.slow_calls) {
            (Some(started), Some(slow)) => started.elapsed() >= slow.threshold,
            _ => false,
        };
        self.circuit.record(self.ticket, outcome, slow);
        self.recorded = true;
    }

    /// Records the outcome of a verdict of `kind`.
    pub(crate) fn finish_as(self, kind: Kind) {
        let outcome = self.circuit.settings.outcome(kind);
        self.finish(outcome);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.recorded {
            self.circuit.record(self.ticket, Outcome::Ignored, false);
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

pin_project! {
    /// The body of a response that passed the
    /// [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
    ///
    /// Most answers are recorded when their head arrives and their body is the inner one
    /// untouched. A streamed answer (`text/event-stream`) is recorded when its stream ends: an
    /// error the provider reported inside it (an `overloaded_error` event, a stall) counts as
    /// the failure it is, a stream read to its end as a success; a stream the caller drops
    /// counts as neither.
    #[derive(Debug)]
    pub struct BreakerBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }
}

impl<B> BreakerBody<B> {
    pub(crate) fn new(inner: B, pending: Option<Pending>) -> Self {
        BreakerBody { inner, pending }
    }

    /// The inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for BreakerBody<B>
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
            Poll::Ready(None) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish_as(Kind::Success);
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(pending) = this.pending.take() {
                    // A transport error mid-stream is the connection's failure.
                    let kind = body_error_verdict(error).map_or(Kind::Connection, |v| v.kind());
                    pending.finish_as(kind);
                }
            }
            _ => {}
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
