//! The [`RateLimit`] service.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::body::{Admission, RateLimitBody, Settlement};
use super::cost::Cost;
use super::error::{RateLimitError, Refusal};
use super::future::{ResponseFuture, Wait};
use super::lanes::{Priority, Tenant};
use super::limiter::Limiter;
use super::quota::Demand;
use crate::attempt::AttemptClock;
use crate::key::{KeyFor, KeyType};
use crate::BoxError;

/// The service built by [`RateLimitLayer`](crate::rate_limit::RateLimitLayer): see there.
pub struct RateLimit<S, C, K: KeyType> {
    inner: S,
    cost: C,
    key: K,
    limiter: Arc<Limiter<K::Key>>,
}

impl<S: Clone, C: Clone, K: KeyType + Clone> Clone for RateLimit<S, C, K> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            cost: self.cost.clone(),
            key: self.key.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S: std::fmt::Debug, C, K: KeyType> std::fmt::Debug for RateLimit<S, C, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, C, K: KeyType> RateLimit<S, C, K> {
    pub(crate) fn new(inner: S, cost: C, key: K, limiter: Arc<Limiter<K::Key>>) -> Self {
        RateLimit {
            inner,
            cost,
            key,
            limiter,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, C, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    C: Cost<ReqBody>,
    K: KeyFor<ReqBody>,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The quota is checked per request in `call`, because a request's cost (its tokens) is
        // only known from the request itself.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let settings = self.limiter.settings;
        let now = Instant::now();
        let partition = self.limiter.partition(self.key.key(&request), now);
        let estimate = partition
            .charges_tokens
            .load(Ordering::Relaxed)
            .then(|| self.cost.cost(&request));
        let mut state = partition.lock();
        let demand = estimate.map_or(Demand::ONE, |estimate| {
            Demand::new(estimate, &state.quota.charged.metering)
        });
        let shared = partition.shared.is_some();
        if let Some((limit, cost, capacity)) = state.quota.too_large(&demand, shared) {
            drop(state);
            crate::telemetry::limiter_rejection(&partition.name, "too_large");
            return ResponseFuture::rejected(
                settings,
                RateLimitError::new(Refusal::TooLarge {
                    limit,
                    cost,
                    capacity,
                }),
            );
        }
        // With a store, every admission is the store's: the request queues and its future asks.
        // With a store, the store counts the daily quotas too: its answer refuses a spent one.
        let admitted = if shared {
            Ok(None)
        } else {
            state.try_admit_now(&demand, now)
        };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err((resets_in, limit)) => {
                drop(state);
                crate::telemetry::limiter_rejection(&partition.name, "daily_quota");
                let error = RateLimitError::new(Refusal::DailyQuotaSpent { limit, resets_in });
                return ResponseFuture::rejected(settings, error);
            }
        };
        if let Some((took_permit, holds)) = admitted {
            drop(state);
            let settlement = Settlement::new(&partition, holds);
            let admission = Admission {
                partition,
                permit: took_permit,
            };
            let future = self.inner.call(request);
            return ResponseFuture::calling(settings, admission, future, settlement, now);
        }
        // The store's wait is known only when it answers; the future applies max_wait then.
        let lane = request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default()
            .0;
        let estimate = if shared {
            None
        } else {
            state.estimated_wait(&demand, lane, now)
        };
        if let Some(max_queue) = settings.max_queue {
            if state.queue_len() >= max_queue {
                drop(state);
                crate::telemetry::limiter_rejection(&partition.name, "queue_full");
                let error = RateLimitError::new(Refusal::QueueFull {
                    max_queue,
                    wait: estimate.map(|(wait, _)| wait),
                });
                return ResponseFuture::rejected(settings, error);
            }
        }
        if let (Some(max_wait), Some((wait, limit))) = (settings.max_wait, estimate) {
            if wait > max_wait {
                drop(state);
                crate::telemetry::limiter_rejection(&partition.name, "would_wait");
                let error = RateLimitError::new(Refusal::WouldWait {
                    limit,
                    wait,
                    max_wait,
                });
                return ResponseFuture::rejected(settings, error);
            }
        }
        // Queue now, so the order of calls is the order of admission; the real waker is
        // registered on the first poll.
        let tenant = request.extensions().get::<Tenant>().map(Tenant::share);
        let id = state.enqueue(demand, lane, tenant, Waker::noop().clone());
        if let Some(clock) = request.extensions().get::<AttemptClock>() {
            // The retry layer's attempt timeout waits until the request leaves the queue.
            clock.queued();
        }
        crate::telemetry::limiter_queue(&partition.name, state.queue_len());
        drop(state);
        let wait = Wait::new(partition, id, demand, now);
        // The service that was polled ready goes with the request; its clone stays for the next.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(settings, wait, service, request)
    }
}
