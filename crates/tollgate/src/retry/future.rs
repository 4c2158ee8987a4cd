//! The [`ResponseFuture`] of [`BackoffRetry`](super::BackoffRetry): attempts, waits, timeouts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;

use super::config::RetryEvent;
use super::error::{AttemptTimedOut, RetryError, RetryInfo, StopReason};
use super::policy::Decision;
use super::replay::{try_clone_request, ReplayBody};
use super::shared::Shared;
use super::FailFast;
use crate::attempt::{AttemptClock, Progress};
use crate::classify::{error_verdict, response_verdict, Classification, Kind};
use crate::BoxError;

pin_project! {
    /// Response future of [`BackoffRetry`](super::BackoffRetry).
    ///
    /// Dropping it at any point (mid-attempt or mid-wait) cancels the call and leaves nothing
    /// behind: it owns its timer, its copy of the request and, once it retries, its clone of the
    /// service.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        shared: Arc<Shared<S>>,
        // The service of the attempts after the first, cloned when the first fails. Boxed: a
        // call that needs no retry carries only the pointer's room.
        service: Option<Box<S>>,
        replay: Option<Request<B>>,
        attempts: u32,
        started: Instant,
        deadline: Option<Instant>,
        previous_delay: Duration,
        // Allocated only when a timer is needed (a retry wait, an attempt timeout or a deadline),
        // so the success path without timeouts allocates nothing here.
        timer: Option<Pin<Box<Sleep>>>,
        timer_is_deadline: bool,
        // When the current attempt left the rate limiter's queue (set with an attempt timeout).
        clock: Option<AttemptClock>,
        // The current attempt's span (`tollgate.attempt`; disabled, it costs a null check).
        span: tracing::Span,
        #[pin]
        state: State<S::Future>,
    }
}

impl<S: Service<Request<B>>, B> std::fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("retry::ResponseFuture")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Attempt { #[pin] future: F },
        Waiting,
        Ready,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    #[inline]
    pub(crate) fn new(
        shared: Arc<Shared<S>>,
        replay: Option<Request<B>>,
        clock: Option<AttemptClock>,
        future: S::Future,
        span: tracing::Span,
    ) -> Self {
        let started = Instant::now();
        let deadline = shared.policy.deadline.map(|d| started + d);
        let (mut timer, mut timer_is_deadline) = (None, false);
        let timeout = shared.policy.attempt_timeout;
        arm_attempt_timer(
            &mut timer,
            &mut timer_is_deadline,
            started,
            timeout,
            deadline,
        );
        // Built as the last expression, so the inner future can be written in place rather than
        // moved once more (it is most of this future's size).
        ResponseFuture {
            shared,
            service: None,
            replay,
            attempts: 1,
            started,
            deadline,
            previous_delay: Duration::ZERO,
            timer,
            timer_is_deadline,
            clock,
            span,
            state: State::Attempt { future },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayBody,
{
    type Output = Result<Response<ResBody>, RetryError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Attempt { future } => {
                    let polled = this.span.in_scope(|| future.poll(cx));
                    let (verdict, failure) = match polled {
                        Poll::Ready(Ok(response)) => {
                            let verdict = response_verdict(&response);
                            this.span.record("verdict", verdict.kind().as_str());
                            if verdict.is_success() {
                                let retried = *this.attempts > 1;
                                return Poll::Ready(Ok(if retried {
                                    stamp(response, *this.attempts, *this.started, None)
                                } else {
                                    response
                                }));
                            }
                            (verdict, Failure::Response(response))
                        }
                        Poll::Ready(Err(error)) => {
                            let error = error.into();
                            let verdict = error_verdict(&*error);
                            this.span.record("verdict", verdict.kind().as_str());
                            (verdict, Failure::Error(error))
                        }
                        Poll::Pending => {
                            let Some(timer) = this.timer.as_mut() else {
                                return Poll::Pending;
                            };
                            ready!(timer.as_mut().poll(cx));
                            if !*this.timer_is_deadline {
                                let now = Instant::now();
                                let timeout = this.shared.policy.attempt_timeout;
                                if let Some(end) = queue_extends(this.clock.as_ref(), timeout, now)
                                {
                                    // The attempt waited in the rate limiter's queue: its
                                    // timeout runs from when it left.
                                    let (timer, is_deadline) =
                                        (&mut *this.timer, &mut *this.timer_is_deadline);
                                    arm_until(timer, is_deadline, Some(end), *this.deadline);
                                    continue;
                                }
                            }
                            let Some(timer) = this.timer.as_mut() else {
                                return Poll::Pending;
                            };
                            let after = timer.deadline().saturating_duration_since(*this.started);
                            if *this.timer_is_deadline {
                                let error: BoxError = Box::new(AttemptTimedOut::new(after));
                                let verdict = Classification::new(Kind::Timeout);
                                return Poll::Ready(Err(give_up(
                                    StopReason::Deadline,
                                    *this.attempts,
                                    *this.started,
                                    verdict,
                                    error,
                                )));
                            }
                            let timeout = this.shared.policy.attempt_timeout.unwrap_or(after);
                            let error: BoxError = Box::new(AttemptTimedOut::new(timeout));
                            (Classification::new(Kind::Timeout), Failure::Error(error))
                        }
                    };
                    // A caller with somewhere else to go does not wait out a local refusal.
                    let fail_fast = verdict.kind() == Kind::Rejected
                        && this
                            .replay
                            .as_ref()
                            .is_some_and(|r| r.extensions().get::<FailFast>().is_some());
                    let decision = if fail_fast {
                        Decision::Stop(StopReason::NotRetryable)
                    } else if this.replay.is_none() && verdict.is_retryable() {
                        Decision::Stop(StopReason::NotReplayable)
                    } else {
                        this.shared.policy.decide(
                            &verdict,
                            *this.attempts,
                            *this.previous_delay,
                            *this.deadline,
                        )
                    };
                    match decision {
                        Decision::Stop(reason) => {
                            crate::telemetry::gave_up(&this.shared.policy.name, reason.as_str());
                            return Poll::Ready(match failure {
                                Failure::Response(response) => {
                                    Ok(stamp(response, *this.attempts, *this.started, Some(reason)))
                                }
                                Failure::Error(error) => Err(give_up(
                                    reason,
                                    *this.attempts,
                                    *this.started,
                                    verdict,
                                    error,
                                )),
                            });
                        }
                        Decision::Retry { delay, hint } => {
                            // The failed response (and its connection) is released now.
                            drop(failure);
                            let event = RetryEvent {
                                attempt: *this.attempts,
                                delay,
                                verdict,
                                hint,
                            };
                            log_retry(&event);
                            this.shared.policy.notify(&event);
                            *this.previous_delay = delay;
                            *this.timer_is_deadline = false;
                            set_timer(this.timer, Instant::now() + delay);
                            this.state.set(State::Waiting);
                        }
                    }
                }
                StateProj::Waiting => {
                    if let Some(timer) = this.timer.as_mut() {
                        ready!(timer.as_mut().poll(cx));
                    }
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    // The call made the template before this future existed.
                    if this.service.is_none() {
                        *this.service = this.shared.service().map(Box::new);
                    }
                    let Some(service) = this.service.as_mut() else {
                        let reason = StopReason::NotRetryable;
                        return Poll::Ready(Err(broken(reason, *this.attempts, *this.started)));
                    };
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        let error = error.into();
                        let verdict = error_verdict(&*error);
                        let reason = StopReason::NotRetryable;
                        return Poll::Ready(Err(give_up(
                            reason,
                            *this.attempts,
                            *this.started,
                            verdict,
                            error,
                        )));
                    }
                    let Some(request) = this.replay.take() else {
                        // A retry is only decided with a copy in hand: without one, the future
                        // already answered.
                        let reason = StopReason::NotReplayable;
                        return Poll::Ready(Err(broken(reason, *this.attempts, *this.started)));
                    };
                    *this.replay = try_clone_request(&request);
                    *this.attempts += 1;
                    this.shared
                        .policy
                        .attempts
                        .attempt(&this.shared.policy.name);
                    if let Some(clock) = this.clock.as_ref() {
                        clock.start(Instant::now());
                    }
                    *this.span = attempt_span(
                        &this.shared.policy.name,
                        *this.attempts,
                        *this.previous_delay,
                    );
                    let future = this.span.in_scope(|| service.call(request));
                    arm_attempt_timer(
                        this.timer,
                        this.timer_is_deadline,
                        Instant::now(),
                        this.shared.policy.attempt_timeout,
                        *this.deadline,
                    );
                    this.state.set(State::Attempt { future });
                }
            }
        }
    }
}

enum Failure<R> {
    Response(R),
    Error(BoxError),
}

/// Arms the timer for one attempt: the earlier of its timeout and the call's deadline.
fn arm_attempt_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    is_deadline: &mut bool,
    now: Instant,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
) {
    arm_until(timer, is_deadline, timeout.map(|t| now + t), deadline);
}

/// When an attempt whose timer fired at `now` really times out, if later: it waited in a queue
/// (it is still there, or left less than `timeout` ago).
fn queue_extends(
    clock: Option<&AttemptClock>,
    timeout: Option<Duration>,
    now: Instant,
) -> Option<Instant> {
    let timeout = timeout?;
    let end = match clock?.progress() {
        // Still queued: look again a timeout from now (the queue's wait is bounded by the
        // limiter's max_wait, the call by the deadline).
        Progress::Queued => now + timeout,
        Progress::LeftQueue(at) => at + timeout,
    };
    (end > now).then_some(end)
}

/// Arms the timer for the earlier of `attempt_end` and `deadline`.
fn arm_until(
    timer: &mut Option<Pin<Box<Sleep>>>,
    is_deadline: &mut bool,
    attempt_end: Option<Instant>,
    deadline: Option<Instant>,
) {
    let (end, by_deadline) = match (attempt_end, deadline) {
        (Some(a), Some(d)) if d <= a => (d, true),
        (Some(a), _) => (a, false),
        (None, Some(d)) => (d, true),
        (None, None) => {
            // No limit on this attempt: make sure a leftover backoff timer cannot fire.
            *timer = None;
            return;
        }
    };
    *is_deadline = by_deadline;
    set_timer(timer, end);
}

/// The span of one attempt: a child of the caller's (a gateway's request span), with the
/// provider, the attempt's number, the wait before it and, when it ends, its verdict.
pub(crate) fn attempt_span(
    name: &Option<Arc<str>>,
    attempt: u32,
    waited: Duration,
) -> tracing::Span {
    tracing::debug_span!(
        "tollgate.attempt",
        provider = name.as_deref().unwrap_or("default"),
        attempt,
        waited_ms = waited.as_millis() as u64,
        verdict = tracing::field::Empty,
    )
}

fn set_timer(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match timer {
        Some(sleep) => sleep.as_mut().reset(at),
        None => *timer = Some(Box::pin(sleep_until(at))),
    }
}

fn stamp<B>(
    mut response: Response<B>,
    attempts: u32,
    started: Instant,
    stopped: Option<StopReason>,
) -> Response<B> {
    response.extensions_mut().insert(RetryInfo {
        attempts,
        elapsed: started.elapsed(),
        stopped,
    });
    response
}

fn give_up(
    reason: StopReason,
    attempts: u32,
    started: Instant,
    verdict: Classification,
    error: BoxError,
) -> RetryError {
    RetryError::new(reason, attempts, started.elapsed(), verdict, error)
}

/// The answer of a future polled in a state it cannot be in (polled after it answered: a
/// caller's bug, not retryable).
fn broken(reason: StopReason, attempts: u32, started: Instant) -> RetryError {
    let error = crate::polled_after_completion("retry");
    give_up(
        reason,
        attempts,
        started,
        Classification::new(Kind::ClientError),
        error,
    )
}

fn log_retry(event: &RetryEvent) {
    tracing::warn!(
        attempt = event.attempt,
        delay_ms = event.delay.as_millis() as u64,
        reason = event.verdict.kind().as_str(),
        status = event.verdict.status().map(|s| s.as_u16()),
        hint = event.hint.map(|h| h.header_name()),
        "retrying AI API call"
    );
}
