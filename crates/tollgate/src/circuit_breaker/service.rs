//! The [`CircuitBreaker`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::body::BreakerBody;
use super::breakers::Breakers;
use super::future::ResponseFuture;
use crate::key::{KeyFor, KeyType};
use crate::BoxError;

/// The service built by [`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer): see
/// there.
pub struct CircuitBreaker<S, K: KeyType> {
    inner: S,
    key: K,
    breakers: Arc<Breakers<K::Key>>,
}

impl<S: Clone, K: KeyType + Clone> Clone for CircuitBreaker<S, K> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            key: self.key.clone(),
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<S: fmt::Debug, K: KeyType> fmt::Debug for CircuitBreaker<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K: KeyType> CircuitBreaker<S, K> {
    pub(crate) fn new(inner: S, key: K, breakers: Arc<Breakers<K::Key>>) -> Self {
        CircuitBreaker {
            inner,
            key,
            breakers,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    K: KeyFor<ReqBody>,
{
    type Response = Response<BreakerBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An open circuit refuses in `call`, as a value: readiness reflects only the inner
        // service, so a refusal never poisons the service for tower's readiness contract.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let circuit = self.breakers.circuit(self.key.key(&request));
        match circuit.admit() {
            Ok(ticket) => ResponseFuture::admitted(self.inner.call(request), circuit, ticket),
            Err(refusal) => ResponseFuture::refused(refusal),
        }
    }
}
