//! Which quota or circuit a request belongs to: [`KeyFor`], [`NoKey`], [`by_host`], [`key_fn`].
//!
//! Providers limit and fail per model, per API key and per host; a key extractor gives each key
//! its own rate-limit quota or circuit, created on first use and dropped when idle.

use std::hash::Hash;

use http::Request;

/// The type of key an extractor produces (named apart from [`KeyFor`] so that a layer's key type
/// is known without knowing the request body type).
pub trait KeyType {
    /// The key type.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
}

/// Picks the quota or circuit a request counts against. `None` means the default one.
pub trait KeyFor<B>: KeyType + Clone + Send + Sync + 'static {
    /// The key of `request`, or `None` for the default quota.
    fn key(&self, request: &Request<B>) -> Option<Self::Key>;
}

/// One quota for every request (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl KeyType for NoKey {
    type Key = ();
}

impl<B> KeyFor<B> for NoKey {
    fn key(&self, _: &Request<B>) -> Option<()> {
        None
    }
}

/// A quota per host (the URI's authority), for one client that talks to several providers.
///
/// ```
/// use tollgate::key::{by_host, KeyFor};
/// let request = http::Request::get("https://api.openai.com/v1/models").body(()).unwrap();
/// assert_eq!(by_host().key(&request).as_deref(), Some("api.openai.com"));
/// ```
pub fn by_host() -> ByHost {
    ByHost
}

/// See [`by_host`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ByHost;

impl KeyType for ByHost {
    type Key = String;
}

impl<B> KeyFor<B> for ByHost {
    fn key(&self, request: &Request<B>) -> Option<String> {
        request.uri().host().map(str::to_owned)
    }
}

/// A quota per whatever a closure returns (a model name from a header, an API key's hash...).
///
/// ```
/// use tollgate::key::{key_fn, KeyFor};
///
/// let by_model = key_fn(|request: &http::Request<String>| {
///     request.headers().get("x-model").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// });
/// let request = http::Request::builder().header("x-model", "gpt-4o").body(String::new()).unwrap();
/// assert_eq!(by_model.key(&request).as_deref(), Some("gpt-4o"));
/// ```
pub fn key_fn<B, K, F>(f: F) -> KeyFn<F, K>
where
    F: Fn(&Request<B>) -> Option<K>,
{
    KeyFn(f, std::marker::PhantomData)
}

/// See [`key_fn`].
pub struct KeyFn<F, K>(F, std::marker::PhantomData<fn() -> K>);

impl<F: Clone, K> Clone for KeyFn<F, K> {
    fn clone(&self) -> Self {
        KeyFn(self.0.clone(), std::marker::PhantomData)
    }
}

impl<F, K> std::fmt::Debug for KeyFn<F, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFn")
    }
}

impl<F, K> KeyType for KeyFn<F, K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;
}

impl<B, K, F> KeyFor<B> for KeyFn<F, K>
where
    F: Fn(&Request<B>) -> Option<K> + Clone + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn key(&self, request: &Request<B>) -> Option<K> {
        (self.0)(request)
    }
}

/// Per-key state (quotas, circuits) created on first use; entries nobody holds and that are
/// idle are swept when the map doubles, so memory follows the keys in use.
pub(crate) struct Registry<K, V> {
    map: std::collections::HashMap<K, std::sync::Arc<V>>,
    sweep_at: usize,
}

/// The first sweep happens at this many keys; later ones at twice the survivors.
const FIRST_SWEEP: usize = 1024;

impl<K: Hash + Eq, V> Registry<K, V> {
    pub(crate) fn new() -> Self {
        Registry {
            map: std::collections::HashMap::new(),
            sweep_at: FIRST_SWEEP,
        }
    }

    /// The entry for `key`, created with `make` on first use. Before creating one, sweeps the
    /// entries for which `idle` holds if the map has reached its sweep size.
    pub(crate) fn get_or_insert(
        &mut self,
        key: K,
        make: impl FnOnce(&K) -> V,
        idle: impl Fn(&V) -> bool,
    ) -> std::sync::Arc<V> {
        if let Some(value) = self.map.get(&key) {
            return std::sync::Arc::clone(value);
        }
        if self.map.len() >= self.sweep_at {
            self.map
                .retain(|_, value| std::sync::Arc::strong_count(value) > 1 || !idle(value));
            self.sweep_at = (self.map.len() * 2).max(FIRST_SWEEP);
        }
        let value = std::sync::Arc::new(make(&key));
        self.map.insert(key, std::sync::Arc::clone(&value));
        value
    }

    pub(crate) fn get(&self, key: &K) -> Option<&std::sync::Arc<V>> {
        self.map.get(key)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &std::sync::Arc<V>> {
        self.map.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
