//! [`AttemptClock`]: when an attempt left tollgate's own queue, so that the retry layer's
//! per-attempt timeout measures the provider, not the wait for a rate-limit permit.
//!
//! The retry layer is outermost and the rate limiter inside it, so the retry layer's timer
//! would otherwise start while the attempt waits in the limiter's queue: with a slow limit, an
//! attempt "times out" without being sent, is retried into the back of the queue, and times out
//! again. The retry layer puts a clock in each attempt's request extensions (only when an
//! attempt timeout is set); the limiter marks it while the request waits and when it leaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

/// Marks that the attempt is waiting in a queue.
const QUEUED: u64 = u64::MAX;

/// Shared by one call's attempts (the request's copies share it) and the layers inside.
#[derive(Debug, Clone)]
pub(crate) struct AttemptClock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Nanoseconds from `origin` to when the current attempt left the queue, or [`QUEUED`].
    left_queue: AtomicU64,
}

/// Where the current attempt is, as far as tollgate's queues know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Waiting in a queue: the attempt has not been sent yet.
    Queued,
    /// Sent (or never queued) at this instant.
    LeftQueue(Instant),
}

impl AttemptClock {
    pub(crate) fn new(now: Instant) -> Self {
        AttemptClock(Arc::new(Inner {
            origin: now,
            left_queue: AtomicU64::new(0),
        }))
    }

    /// A new attempt starts at `now`: it is on its way unless a queue says otherwise.
    pub(crate) fn start(&self, now: Instant) {
        self.left(now);
    }

    /// The attempt waits in a queue.
    pub(crate) fn queued(&self) {
        self.0.left_queue.store(QUEUED, Ordering::Release);
    }

    /// The attempt left the queue at `now`.
    pub(crate) fn left(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.0.origin).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(QUEUED - 1);
        self.0.left_queue.store(nanos, Ordering::Release);
    }

    pub(crate) fn progress(&self) -> Progress {
        match self.0.left_queue.load(Ordering::Acquire) {
            QUEUED => Progress::Queued,
            nanos => Progress::LeftQueue(self.0.origin + std::time::Duration::from_nanos(nanos)),
        }
    }
}
