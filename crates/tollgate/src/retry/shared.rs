//! [`Shared`]: what the clones of one [`BackoffRetry`](super::BackoffRetry) and the calls through
//! them share.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::policy::RetryPolicy;

/// The layer's policy, and a copy of the inner service that a retry clones its own from.
///
/// A call's first attempt goes to the service polled ready; only a retry needs a service of its
/// own, so the success path clones no service (and touches none of its reference counts).
pub(crate) struct Shared<S> {
    pub(crate) policy: Arc<RetryPolicy>,
    // Made on the first call (the layer does not ask its service to be `Clone`); behind a lock
    // so that the service need not be `Sync`. Locked only to clone, on a retry.
    template: OnceLock<Mutex<S>>,
}

impl<S> Shared<S> {
    pub(crate) fn new(policy: Arc<RetryPolicy>) -> Self {
        Shared {
            policy,
            template: OnceLock::new(),
        }
    }
}

impl<S: Clone> Shared<S> {
    /// Keeps a copy of `service` for retries, on the first call.
    pub(crate) fn keep_first(&self, service: &S) {
        self.template.get_or_init(|| Mutex::new(service.clone()));
    }

    /// A service for a later attempt, to be polled ready (`None` before any call).
    pub(crate) fn service(&self) -> Option<S> {
        let template = self.template.get()?;
        let template = template.lock().unwrap_or_else(PoisonError::into_inner);
        Some(template.clone())
    }
}
