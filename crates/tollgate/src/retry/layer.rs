//! [`BackoffRetryLayer`].

use std::sync::Arc;

use tower_layer::Layer;

use super::policy::{BackoffRetryBuilder, RetryPolicy};
use super::service::BackoffRetry;

/// Retries attempts that can succeed, with jittered exponential backoff and the server's hints.
///
/// The policy (and its retry budget) lives in an `Arc` owned by the layer: every service it
/// builds, and every clone of those, shares one budget.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{BackoffRetryLayer, ClassifyLayer};
/// use tower::ServiceBuilder;
///
/// let retry = BackoffRetryLayer::builder().max_attempts(3).deadline(Duration::from_secs(60)).build()?;
/// let stack = ServiceBuilder::new().layer(retry).layer(ClassifyLayer::new());
/// # let _ = stack;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BackoffRetryLayer {
    policy: Arc<RetryPolicy>,
}

impl BackoffRetryLayer {
    /// A layer with the default policy (see [`BackoffRetryBuilder`]).
    pub fn new() -> Self {
        Self::from_policy(Self::builder().into_policy())
    }

    /// A builder starting from the defaults.
    pub fn builder() -> BackoffRetryBuilder {
        BackoffRetryBuilder::default()
    }

    pub(crate) fn from_policy(policy: RetryPolicy) -> Self {
        BackoffRetryLayer {
            policy: Arc::new(policy),
        }
    }
}

impl Default for BackoffRetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for BackoffRetryLayer {
    type Service = BackoffRetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BackoffRetry::new(inner, Arc::clone(&self.policy))
    }
}
