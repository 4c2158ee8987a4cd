//! The [`ResponseFuture`] of [`RateLimit`](super::RateLimit): waiting in the queue, calling the
//! provider, and learning from its answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;

use super::body::{Admission, RateLimitBody, Settlement, StreamLearner};
use super::error::{RateLimitError, Refusal};
use super::learn::learn;
use super::limiter::Settings;
use super::partition::{Admit, Partition};
use super::quota::{Blocked, Demand, Held, Outcome};
use super::shared::{Route, SharedQuota};
use super::store::{Grant, OnStoreError, StoreFuture};
use crate::attempt::AttemptClock;
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
        Waiting { waiting: Box<Waiting<S, B>> },
        Calling {
            #[pin]
            future: S::Future,
            admission: Option<Admission>,
            settlement: Option<Box<Settlement>>,
            sent_at: Instant,
        },
        Done,
    }
}

/// What a request waiting in the queue holds. Boxed: a request admitted at once (most of them)
/// never builds it, and the future every layer above moves stays small.
struct Waiting<S, B> {
    wait: Wait,
    admitted: bool,
    admission: Option<Admission>,
    settlement: Option<Box<Settlement>>,
    service: S,
    request: Option<Request<B>>,
}

/// A place in the queue; leaving it (by drop) hands it to the next waiter.
pub(crate) struct Wait {
    partition: Arc<Partition>,
    id: Option<u64>,
    demand: Demand,
    timer: Option<Pin<Box<Sleep>>>,
    /// The store's answer on its way, when the quota is shared.
    asking: Option<StoreFuture<Grant>>,
    since: Instant,
}

impl Wait {
    pub(crate) fn new(partition: Arc<Partition>, id: u64, demand: Demand, since: Instant) -> Self {
        Wait {
            partition,
            id: Some(id),
            demand,
            timer: None,
            asking: None,
            since,
        }
    }

    /// Polls for admission; `Ready(Ok((permit taken, holds)))` when admitted.
    fn poll_admit(
        &mut self,
        cx: &mut Context<'_>,
        max_wait: Option<Duration>,
    ) -> Poll<Result<(bool, Held), Refusal>> {
        loop {
            let Some(id) = self.id else {
                return Poll::Ready(Ok((false, None)));
            };
            if let Some(asking) = &mut self.asking {
                let answer = ready!(asking.as_mut().poll(cx));
                self.asking = None;
                let now = Instant::now();
                let Some(shared) = self.partition.shared.clone() else {
                    continue;
                };
                match answer {
                    Ok(grant @ (Grant::Admitted | Grant::Held(_))) => {
                        shared.store.answered(now);
                        let stored = match grant {
                            Grant::Held(stored) => stored,
                            _ => [None; 3],
                        };
                        let admitted = self.partition.lock().admit_head(id, stored, now);
                        self.id = None;
                        return Poll::Ready(Ok(admitted));
                    }
                    Ok(Grant::Wait { wait, which }) if which.is_daily() => {
                        shared.store.answered(now);
                        self.leave();
                        return Poll::Ready(Err(Refusal::DailyQuotaSpent {
                            limit: which,
                            resets_in: wait,
                        }));
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
                Ok(Admit::Taken(permit, holds)) => {
                    self.id = None;
                    return Poll::Ready(Ok((permit, holds)));
                }
                Ok(Admit::AskStore) => {
                    if let Some(SharedQuota { store, quota }) = &self.partition.shared {
                        let charge = state.quota.charge(quota, &self.demand);
                        self.asking = Some(store.store.acquire(charge));
                    }
                }
                Err(Some(Blocked::Daily(resets_in, limit))) => {
                    // The queue let it go already.
                    self.id = None;
                    return Poll::Ready(Err(Refusal::DailyQuotaSpent { limit, resets_in }));
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
    pub(crate) fn rejected(settings: Settings, error: RateLimitError) -> Self {
        ResponseFuture {
            settings,
            state: State::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn waiting(settings: Settings, wait: Wait, service: S, request: Request<B>) -> Self {
        ResponseFuture {
            settings,
            state: State::Waiting {
                waiting: Box::new(Waiting {
                    wait,
                    admitted: false,
                    admission: None,
                    settlement: None,
                    service,
                    request: Some(request),
                }),
            },
        }
    }

    /// Admitted at once at `sent_at`: the call is on its way.
    pub(crate) fn calling(
        settings: Settings,
        admission: Admission,
        future: S::Future,
        settlement: Option<Box<Settlement>>,
        sent_at: Instant,
    ) -> Self {
        ResponseFuture {
            settings,
            state: State::Calling {
                future,
                admission: Some(admission),
                settlement,
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
                StateProj::Waiting { waiting } => {
                    let Waiting {
                        wait,
                        admitted,
                        admission,
                        settlement,
                        service,
                        request,
                    } = &mut **waiting;
                    if !*admitted {
                        let (took_permit, holds) =
                            match ready!(wait.poll_admit(cx, this.settings.max_wait)) {
                                Ok(admitted) => admitted,
                                Err(error) => {
                                    let reason = match error {
                                        Refusal::StoreUnavailable => "store_unavailable",
                                        Refusal::DailyQuotaSpent { .. } => "daily_quota",
                                        _ => "would_wait",
                                    };
                                    crate::telemetry::limiter_rejection(
                                        &wait.partition.name,
                                        reason,
                                    );
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(Box::new(RateLimitError::new(error))));
                                }
                            };
                        *admitted = true;
                        let partition = &wait.partition;
                        *admission = Some(Admission {
                            partition: Arc::clone(partition),
                            permit: took_permit,
                        });
                        *settlement = Settlement::new(partition, holds);
                        let waited = wait.since.elapsed();
                        crate::telemetry::limiter_wait(&partition.name, waited);
                        let queued = partition.lock().queue_len();
                        crate::telemetry::limiter_queue(&partition.name, queued);
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
                    let (admission, settlement) = (admission.take(), settlement.take());
                    this.state.set(State::Calling {
                        future,
                        admission,
                        settlement,
                        sent_at,
                    });
                }
                StateProj::Calling {
                    future,
                    admission,
                    settlement,
                    sent_at,
                } => {
                    let result = ready!(future.poll(cx));
                    let (admission, mut settlement, sent_at) =
                        (admission.take(), settlement.take(), *sent_at);
                    this.state.set(State::Done);
                    // A transport error leaves the charge standing: the provider may have
                    // metered an answer that never arrived.
                    let response = result.map_err(Into::into)?;
                    let status = response.status();
                    if !status.is_success() {
                        // A refused attempt is metered nothing; a failed one produced no output.
                        let outcome = if status == http::StatusCode::TOO_MANY_REQUESTS {
                            Outcome::Refused
                        } else {
                            Outcome::Failed
                        };
                        if let Some(settlement) = settlement.take() {
                            settlement.settle_now(outcome);
                        }
                    }
                    let mut stream = None;
                    if let (true, Some(admission)) = (this.settings.learn, &admission) {
                        let partition = &admission.partition;
                        learn(this.settings, partition, &response, sent_at);
                        let verdict = response
                            .extensions()
                            .get::<crate::classify::Classification>();
                        if verdict.is_some_and(|v| v.is_stream()) {
                            stream = Some(Box::new(StreamLearner {
                                settings: *this.settings,
                                partition: Arc::clone(partition),
                                sent_at,
                            }));
                        }
                    }
                    // The body keeps the admission only to return its permit when it ends.
                    let permit = admission.filter(|admission| admission.permit);
                    return Poll::Ready(Ok(
                        response.map(|body| RateLimitBody::new(body, permit, settlement, stream))
                    ));
                }
                StateProj::Done => {
                    return Poll::Ready(Err(crate::polled_after_completion("rate limit")))
                }
            }
        }
    }
}
