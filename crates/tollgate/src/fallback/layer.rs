//! [`FallbackLayer`].

use std::sync::Arc;

use tower_layer::Layer;

use super::service::Fallback;
use super::target::Target;
use crate::ConfigError;

/// Builds a [`Fallback`] over a client: each target's own layer (a
/// [`StandardLayer`](crate::stack::StandardLayer), usually) applied to a clone of the client.
/// See the [module](super) for when a request moves on.
#[derive(Debug, Clone)]
pub struct FallbackLayer<L> {
    targets: Arc<[Target]>,
    layers: Vec<L>,
    context_fallback: bool,
}

impl<L> FallbackLayer<L> {
    /// A chain over `targets`, tried in order; at least one.
    pub fn new(targets: Vec<(Target, L)>) -> Result<Self, ConfigError> {
        if targets.is_empty() {
            return Err(ConfigError::new(
                "targets",
                "a fallback chain needs at least one target",
            ));
        }
        let (targets, layers): (Vec<_>, Vec<_>) = targets.into_iter().unzip();
        Ok(FallbackLayer {
            targets: targets.into(),
            layers,
            context_fallback: true,
        })
    }

    /// Whether a prompt too long for a target's context window moves on to the next target
    /// (default true: list models by growing context to use it).
    pub fn context_fallback(mut self, on: bool) -> Self {
        self.context_fallback = on;
        self
    }
}

impl<S: Clone, L: Layer<S>> Layer<S> for FallbackLayer<L> {
    type Service = Fallback<L::Service>;

    fn layer(&self, client: S) -> Self::Service {
        let services = self
            .layers
            .iter()
            .map(|l| l.layer(client.clone()))
            .collect();
        Fallback::new(Arc::clone(&self.targets), services, self.context_fallback)
    }
}
