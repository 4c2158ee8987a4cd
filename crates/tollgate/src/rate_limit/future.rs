//! The [`ResponseFuture`] of [`RateLimit`](super::RateLimit): waiting in the queue, calling the
//! provider, and learning from its answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;

use super::body::{Permit, RateLimitBody};
use super::error::RateLimitError;
use super::limiter::Settings;
use super::partition::{Blocked, Partition};
use crate::classify::{response_verdict, Kind, RateLimitState};
use crate::BoxError;

/// Longest pause a provider's 429 hint imposes on the shared quota; a longer hint (a daily
/// quota's "retry in 10 hours") is the retry layer's to refuse, not a reason to freeze.
const MAX_PAUSE: Duration = Duration::from_secs(60);

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
        Calling { #[pin] future: S::Future, permit: Option<Permit> },
        Done,
    }
}

/// A place in the queue; leaving it (by drop) hands it to the next waiter.
pub(crate) struct Wait {
    partition: Arc<Partition>,
    id: Option<u64>,
    timer: Option<Pin<Box<Sleep>>>,
    since: Instant,
}

impl Wait {
    pub(crate) fn new(partition: Arc<Partition>, id: u64, since: Instant) -> Self {
        Wait {
            partition,
            id: Some(id),
            timer: None,
            since,
        }
    }

    /// Polls for admission; `Ready(permit taken)` when admitted.
    fn poll_admit(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            let Some(id) = self.id else {
                return Poll::Ready(false);
            };
            let now = Instant::now();
            let result = self.partition.lock().poll_queued(id, cx.waker(), now);
            match result {
                Ok(permit) => {
                    self.id = None;
                    return Poll::Ready(permit);
                }
                // Behind others, or waiting for a permit: a wake-up will come.
                Err(None) | Err(Some(Blocked::Concurrency)) => return Poll::Pending,
                Err(Some(Blocked::For(wait, _))) => {
                    let at = now + wait;
                    match &mut self.timer {
                        Some(timer) => timer.as_mut().reset(at),
                        None => self.timer = Some(Box::pin(sleep_until(at))),
                    }
                    if let Some(timer) = &mut self.timer {
                        ready!(timer.as_mut().poll(cx));
                    }
                }
            }
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.partition.lock().cancel(id);
        }
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

    pub(crate) fn calling(
        settings: Settings,
        partition: Arc<Partition>,
        future: S::Future,
        permit: Option<Permit>,
    ) -> Self {
        ResponseFuture {
            settings,
            partition,
            state: State::Calling { future, permit },
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
                        None => "rate limit future polled after completion".into(),
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
                        let took_permit = ready!(wait.poll_admit(cx));
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
                        return Poll::Ready(
                            Err("rate limit future polled after completion".into()),
                        );
                    };
                    let future = service.call(request);
                    let permit = permit.take();
                    this.state.set(State::Calling { future, permit });
                }
                StateProj::Calling { future, permit } => {
                    let result = ready!(future.poll(cx));
                    let permit = permit.take();
                    this.state.set(State::Done);
                    let response = result.map_err(Into::into)?;
                    if this.settings.learn {
                        learn(this.settings, this.partition, &response);
                    }
                    return Poll::Ready(Ok(response.map(|body| RateLimitBody::new(body, permit))));
                }
                StateProj::Done => panic!("rate limit future polled after completion"),
            }
        }
    }
}

/// Reacts to the provider's answer: a 429 pauses (or drains) the shared quota, and rate-limit
/// headers correct it.
fn learn<B>(settings: &Settings, partition: &Partition, response: &Response<B>) {
    let verdict = response_verdict(response);
    let refused = matches!(verdict.kind(), Kind::RateLimited | Kind::Overloaded);
    if verdict.kind() == Kind::RateLimited {
        crate::telemetry::rate_limited_response(&partition.name);
    }
    if partition.adaptive {
        // The rate adapts instead of everyone pausing: the refused request's own retry waits
        // for the hint, the others go on at the lowered rate.
        let now = Instant::now();
        let changed = if refused {
            partition.lock().throttled(now)
        } else {
            partition.lock().succeeded(now)
        };
        if let Some(rate) = changed {
            tracing::info!(rate_per_sec = rate, refused, "adaptive rate limit changed");
        }
    } else if verdict.kind() == Kind::RateLimited {
        let now = Instant::now();
        let mut state = partition.lock();
        match verdict.retry_after() {
            Some(wait) => state.pause_until(now + wait.min(MAX_PAUSE)),
            None => state.drain_requests(now),
        }
    }
    let server = match response.extensions().get::<RateLimitState>() {
        Some(state) => Some(*state),
        None => RateLimitState::from_headers_with(response.headers(), SystemTime::now),
    };
    if let Some(server) = server {
        let changed = partition
            .lock()
            .adapt(&server, settings.adopt_limits, Instant::now());
        if changed {
            tracing::info!(
                remaining_requests = server.requests.remaining,
                remaining_tokens = server.tokens.remaining,
                "rate limiter adjusted to the provider's headers"
            );
        }
    }
}
