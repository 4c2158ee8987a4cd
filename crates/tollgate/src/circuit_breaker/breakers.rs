//! The circuits of one [`CircuitBreakerLayer`](super::CircuitBreakerLayer): the default one and
//! one per key, shared by every service the layer builds.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tokio::time::Instant;

use super::circuit::Circuit;
use super::settings::Settings;
use crate::key::Keyed;

pub(crate) struct Breakers<Key> {
    settings: Arc<Settings>,
    pub(crate) circuits: Keyed<Key, Circuit>,
}

impl<Key> fmt::Debug for Breakers<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<Key: Hash + Eq> Breakers<Key> {
    pub(crate) fn new(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        Breakers {
            circuits: Keyed::new(Circuit::new(Arc::clone(&settings), Instant::now())),
            settings,
        }
    }

    /// The circuit of `key` (the default one for `None`), created on first use.
    pub(crate) fn circuit(&self, key: Option<Key>) -> Arc<Circuit> {
        self.circuits.get(
            key,
            |_| Circuit::new(Arc::clone(&self.settings), Instant::now()),
            Circuit::is_idle,
        )
    }
}
