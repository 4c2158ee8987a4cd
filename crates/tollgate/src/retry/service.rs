//! The [`BackoffRetry`] service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::error::{RetryError, StopReason};
use super::future::ResponseFuture;
use super::policy::RetryPolicy;
use super::replay::{try_clone_request, ReplayBody};
use super::shared::Shared;
use crate::attempt::AttemptClock;
use crate::classify::error_verdict;
use crate::BoxError;

/// The service built by [`BackoffRetryLayer`](crate::retry::BackoffRetryLayer): see there.
#[derive(Clone)]
pub struct BackoffRetry<S> {
    inner: S,
    shared: Arc<Shared<S>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for BackoffRetry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackoffRetry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S> BackoffRetry<S> {
    pub(crate) fn new(inner: S, policy: Arc<RetryPolicy>) -> Self {
        BackoffRetry {
            inner,
            shared: Arc::new(Shared::new(policy)),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BackoffRetry<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: ReplayBody,
{
    type Response = Response<ResBody>;
    type Error = RetryError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|error| {
            let error = error.into();
            let verdict = error_verdict(&*error);
            RetryError::new(StopReason::NotRetryable, 0, Duration::ZERO, verdict, error)
        })
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        shared.keep_first(&self.inner);
        let policy = &shared.policy;
        if let Some(budget) = &policy.budget {
            budget.deposit();
        }
        let mut request = request;
        // The attempt timeout runs from when an attempt leaves the rate limiter's queue: the
        // clock tells when (one allocation per call, only when a timeout is set).
        let clock = policy.attempt_timeout.map(|_| {
            let clock = AttemptClock::new(Instant::now());
            request.extensions_mut().insert(clock.clone());
            clock
        });
        let replay = try_clone_request(&request);
        policy.attempts.attempt(&policy.name);
        let span = super::future::attempt_span(&policy.name, 1, Duration::ZERO);
        // The ready service makes the first attempt; a retry clones one of its own.
        let future = span.in_scope(|| self.inner.call(request));
        ResponseFuture::new(Arc::clone(shared), replay, clock, future, span)
    }
}
