//! [`BackoffRetryLayer`].

use std::sync::Arc;

use tower_layer::Layer;

use super::config::{BackoffRetryBuilder, RetryConfig};
use super::policy::RetryPolicy;
use super::service::BackoffRetry;
use crate::ConfigError;

/// Retries attempts that can succeed, with jittered exponential backoff and the server's hints.
///
/// The policy (and its retry budget) lives in an `Arc` owned by the layer: every service it
/// builds, and every clone of those, shares one budget. Build it with
/// [`builder`](Self::builder), [`from_config`](Self::from_config) or [`new`](Self::new) (the
/// defaults).
///
/// ```
/// use std::time::Duration;
/// use tollgate::retry::BackoffRetryLayer;
/// use tollgate::classify::ClassifyLayer;
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
    pub(crate) fn from_policy(policy: RetryPolicy) -> Self {
        BackoffRetryLayer {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for BackoffRetryLayer {
    type Service = BackoffRetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BackoffRetry::new(inner, Arc::clone(&self.policy))
    }
}

impl BackoffRetryLayer {
    /// A builder starting from [`RetryConfig::default`].
    pub fn builder() -> BackoffRetryBuilder {
        BackoffRetryBuilder::default()
    }

    /// A layer with `config`'s settings, checked.
    pub fn from_config(config: RetryConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// A layer with the default settings (see [`RetryConfig`]).
    pub fn new() -> Self {
        BackoffRetryLayer::from_policy(RetryPolicy::new(RetryConfig::default(), None, None, None))
    }
}

impl Default for BackoffRetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl BackoffRetryBuilder {
    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<BackoffRetryLayer, ConfigError> {
        self.config.validate()?;
        Ok(BackoffRetryLayer::from_policy(RetryPolicy::new(
            self.config,
            self.seed,
            self.on_retry,
            self.name,
        )))
    }
}
