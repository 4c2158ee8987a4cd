//! The [`ResponseFuture`] of [`RateLimit`](super::RateLimit): waiting in the queue, calling the
//! provider, and learning from its answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;

use super::body::{Permit, RateLimitBody};
use super::error::{RateLimitError, Refusal};
use super::limiter::Settings;
use super::partition::{Admit, Blocked, Partition};
use super::shared::{Route, SharedQuota};
use super::store::{Grant, OnStoreError, StoreFuture};
use crate::attempt::AttemptClock;
use crate::classify::{response_verdict, Kind, LimitKind, RateLimitState};
use crate::BoxError;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit).
    ///
    /// Dropping it while it waits gives its place in the queue (and its claim on the tokens) to
    /// the next waiter.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        settings: Settings,
        partition: Arc<Partition>,
        #[pin]
        state: State<S, B>,
    }
}

impl<S: Service<Request<B>>, B> std::fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("rate_limit::ResponseFuture")
            .finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Rejected { error: Option<RateLimitError> },
        Waiting {
            wait: Wait,
            admitted: bool,
            permit: Option<Permit>,
            service: S,
            request: Option<Request<B>>,
        },
        Calling { #[pin] future: S::Future, permit: Option<Permit>, sent_at: Instant },
        Done,
    }
}

/// A place in the queue; leaving it (by drop) hands it to the next waiter.
pub(crate) struct Wait {
    partition: Arc<Partition>,
    id: Option<u64>,
    cost: u64,
    timer: Option<Pin<Box<Sleep>>>,
    /// The store's answer on its way, when the quota is shared.
    asking: Option<StoreFuture<Grant>>,
    since: Instant,
}

impl Wait {
    pub(crate) fn new(partition: Arc<Partition>, id: u64, cost: u64, since: Instant) -> Self {
        Wait {
            partition,
            id: Some(id),
            cost,
            timer: None,
            asking: None,
            since,
        }
    }

    /// Polls for admission; `Ready(Ok(permit taken))` when admitted.
    fn poll_admit(
        &mut self,
        cx: &mut Context<'_>,
        max_wait: Option<Duration>,
    ) -> Poll<Result<bool, Refusal>> {
        loop {
            let Some(id) = self.id else {
                return Poll::Ready(Ok(false));
            };
            if let Some(asking) = &mut self.asking {
                let answer = ready!(asking.as_mut().poll(cx));
                self.asking = None;
                let now = Instant::now();
                let Some(shared) = self.partition.shared.clone() else {
                    continue;
                };
                match answer {
                    Ok(Grant::Admitted) => {
                        shared.store.answered(now);
                        let permit = self.partition.lock().admit_head(id);
                        self.id = None;
                        return Poll::Ready(Ok(permit));
                    }
                    Ok(Grant::Wait { wait, which }) => {
                        shared.store.answered(now);
                        if let Some(max_wait) = max_wait.filter(|max| wait > *max) {
                            self.leave();
                            return Poll::Ready(Err(Refusal::WouldWait {
                                limit: which,
                                wait,
                                max_wait,
                            }));
                        }
                        ready!(self.sleep_until(now + wait, cx));
                    }
                    Err(error) => {
                        shared.store.failed(&error, now);
                        if shared.store.on_error == OnStoreError::FailClosed {
                            self.leave();
                            return Poll::Ready(Err(Refusal::StoreUnavailable));
                        }
                        // Failing open: the next turn of the loop goes through the local buckets.
                    }
                }
                continue;
            }
            let now = Instant::now();
            let mut state = self.partition.lock();
            // Only the head of the queue asks the store (and takes a probe while it is down).
            let route = match &self.partition.shared {
                Some(shared) if state.is_head(id) => Some(shared.store.route(now)),
                Some(_) => Some(Route::Store),
                None => None,
            };
            if route == Some(Route::Refuse) {
                drop(state);
                self.leave();
                return Poll::Ready(Err(Refusal::StoreUnavailable));
            }
            let result = state.poll_queued(id, cx.waker(), route == Some(Route::Store), now);
            match result {
                Ok(Admit::Taken(permit)) => {
                    self.id = None;
                    return Poll::Ready(Ok(permit));
                }
                Ok(Admit::AskStore) => {
                    if let Some(SharedQuota { store, quota }) = &self.partition.shared {
                        let charge = state.charge(quota, self.cost);
                        self.asking = Some(store.store.acquire(charge));
                    }
                }
                // Behind others, or waiting for a permit: a wake-up will come.
                Err(None) | Err(Some(Blocked::Concurrency)) => return Poll::Pending,
                Err(Some(Blocked::For(wait, _))) => {
                    drop(state);
                    ready!(self.sleep_until(now + wait, cx));
                }
            }
        }
    }

    /// Sleeps until `at` on the one timer this waiter keeps.
    fn sleep_until(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        timer.as_mut().reset(at);
        timer.as_mut().poll(cx)
    }

    /// Leaves the queue, handing the place to the next waiter.
    fn leave(&mut self) {
        if let Some(id) = self.id.take() {
            self.partition.lock().cancel(id);
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.leave();
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn rejected(
        settings: Settings,
        partition: Arc<Partition>,
        error: RateLimitError,
    ) -> Self {
        ResponseFuture {
            settings,
            partition,
            state: State::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn waiting(
        settings: Settings,
        partition: Arc<Partition>,
        wait: Wait,
        service: S,
        request: Request<B>,
    ) -> Self {
        ResponseFuture {
            settings,
            partition,
            state: State::Waiting {
                wait,
                admitted: false,
                permit: None,
                service,
                request: Some(request),
            },
        }
    }

    /// Admitted at once at `sent_at`: the call is on its way.
    pub(crate) fn calling(
        settings: Settings,
        partition: Arc<Partition>,
        future: S::Future,
        permit: Option<Permit>,
        sent_at: Instant,
    ) -> Self {
        ResponseFuture {
            settings,
            partition,
            state: State::Calling {
                future,
                permit,
                sent_at,
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<RateLimitBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Rejected { error } => {
                    let error = error.take();
                    this.state.set(State::Done);
                    return Poll::Ready(Err(match error {
                        Some(error) => Box::new(error),
                        None => crate::polled_after_completion("rate limit"),
                    }));
                }
                StateProj::Waiting {
                    wait,
                    admitted,
                    permit,
                    service,
                    request,
                } => {
                    if !*admitted {
                        let took_permit = match ready!(wait.poll_admit(cx, this.settings.max_wait))
                        {
                            Ok(took_permit) => took_permit,
                            Err(error) => {
                                this.state.set(State::Done);
                                let reason = match error {
                                    Refusal::StoreUnavailable => "store_unavailable",
                                    _ => "would_wait",
                                };
                                crate::telemetry::limiter_rejection(&this.partition.name, reason);
                                return Poll::Ready(Err(Box::new(RateLimitError::new(error))));
                            }
                        };
                        *admitted = true;
                        *permit = took_permit.then(|| Permit(Arc::clone(this.partition)));
                        let waited = wait.since.elapsed();
                        crate::telemetry::limiter_wait(&this.partition.name, waited);
                        let queued = this.partition.lock().queue_len();
                        crate::telemetry::limiter_queue(&this.partition.name, queued);
                        if waited >= this.settings.slow_wait {
                            tracing::debug!(
                                waited_ms = waited.as_millis() as u64,
                                "request waited for the rate limit"
                            );
                        }
                    }
                    // Readiness is asked for after the wait, not held across it.
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    let Some(request) = request.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(crate::polled_after_completion("rate limit")));
                    };
                    let sent_at = Instant::now();
                    if let Some(clock) = request.extensions().get::<AttemptClock>() {
                        clock.left(sent_at);
                    }
                    let future = service.call(request);
                    let permit = permit.take();
                    this.state.set(State::Calling {
                        future,
                        permit,
                        sent_at,
                    });
                }
                StateProj::Calling {
                    future,
                    permit,
                    sent_at,
                } => {
                    let result = ready!(future.poll(cx));
                    let (permit, sent_at) = (permit.take(), *sent_at);
                    this.state.set(State::Done);
                    let response = result.map_err(Into::into)?;
                    if this.settings.learn {
                        learn(this.settings, this.partition, &response, sent_at);
                    }
                    return Poll::Ready(Ok(response.map(|body| RateLimitBody::new(body, permit))));
                }
                StateProj::Done => {
                    return Poll::Ready(Err(crate::polled_after_completion("rate limit")))
                }
            }
        }
    }
}

/// A provider's `remaining` at or below 1/this of the burst is told to a shared store.
const LOW_REMAINING: u64 = 4;

/// Reacts to the provider's answer to a request sent at `sent_at`: a 429 about our rate lowers
/// the adaptive rate, or pauses (or drains) a fixed quota, and rate-limit headers correct it.
fn learn<B>(settings: &Settings, partition: &Partition, response: &Response<B>, sent_at: Instant) {
    let verdict = response_verdict(response);
    let limited = verdict.kind() == Kind::RateLimited;
    if limited {
        crate::telemetry::rate_limited_response(&partition.name);
    }
    let server = match response.extensions().get::<RateLimitState>() {
        Some(state) => Some(*state),
        None => RateLimitState::from_headers_with(response.headers(), SystemTime::now),
    };
    // A hint longer than the retry layer honours (a daily quota's "retry in 10 hours") neither
    // pauses the quota nor says anything about the rate: the retry layer gives up on it.
    let hint = verdict.retry_after();
    let over_ceiling = hint.is_some_and(|wait| wait > settings.max_pause);
    // A 429 about tokens is the token bucket's when there is one (it empties; the headers
    // correct it), else the request rate is the only lever. One while the provider says
    // requests remain is not about our request rate (load shedding).
    let about_tokens = limited
        && verdict.limit() == Some(LimitKind::Tokens)
        && partition.charges_tokens.load(Ordering::Relaxed);
    let about_requests =
        !about_tokens && server.is_none_or(|s| s.requests.remaining.is_none_or(|r| r == 0));
    let refused = limited && about_requests && !over_ceiling;
    if partition.adaptive {
        // The rate adapts instead of everyone pausing: the refused request's own retry waits
        // for the hint, the others go on at the lowered rate.
        // A success on a settled rate changes nothing: no lock on the success path.
        let changed = if refused || about_tokens || !partition.settled.load(Ordering::Relaxed) {
            let mut state = partition.lock();
            let now = Instant::now();
            if about_tokens && !over_ceiling {
                state.drain_tokens(now);
            }
            let changed = state.answered(refused, sent_at, now);
            partition
                .settled
                .store(state.adaptive_settled(), Ordering::Relaxed);
            changed
        } else {
            None
        };
        if let Some(change) = changed {
            crate::telemetry::limiter_adaptive_rate(&partition.name, change.rate());
            tracing::info!(
                rate_per_sec = change.rate(),
                ?change,
                "adaptive rate limit changed"
            );
        }
    } else if limited && !over_ceiling {
        let now = Instant::now();
        let mut state = partition.lock();
        match hint {
            Some(wait) => {
                state.pause_until(now + wait);
                // One process's 429 pauses every process that shares the quota.
                if let Some(shared) = &partition.shared {
                    shared.pause(wait);
                }
            }
            None => {
                state.drain_requests(now);
                if let (Some(shared), Some(rate)) = (&partition.shared, state.charged().requests) {
                    shared.lower(LimitKind::Requests, rate, 0);
                }
            }
        }
    }
    if let (Some(server), Some(shared)) = (server, &partition.shared) {
        let charged = partition.lock().charged();
        let windows = [
            (
                LimitKind::Requests,
                charged.requests,
                server.requests.remaining,
            ),
            (LimitKind::Tokens, charged.tokens, server.tokens.remaining),
        ];
        for (which, rate, remaining) in windows {
            // Only a quota running low is worth a round trip: the store is already right unless
            // someone outside it spends from the same key.
            if let (Some(rate), Some(remaining)) = (rate, remaining) {
                if remaining.saturating_mul(LOW_REMAINING) <= rate.capacity {
                    shared.lower(which, rate, remaining);
                }
            }
        }
    } else if let Some(server) = server {
        let mut state = partition.lock();
        let changed = state.adapt(&server, settings.adopt_limits, Instant::now());
        partition
            .settled
            .store(state.adaptive_settled(), Ordering::Relaxed);
        if state.has_token_limit() {
            // A token limit adopted from the headers: requests are costed from now on.
            partition.charges_tokens.store(true, Ordering::Relaxed);
        }
        drop(state);
        if changed {
            tracing::info!(
                remaining_requests = server.requests.remaining,
                remaining_tokens = server.tokens.remaining,
                "rate limiter adjusted to the provider's headers"
            );
        }
    }
}
