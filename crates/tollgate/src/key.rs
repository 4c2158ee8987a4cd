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

/// The state of one layer's quotas or circuits: one for requests without a key, and one per key
/// created on first use (see [`Registry`]). The rate limiter and the circuit breaker share it,
/// and so their handles answer alike.
pub(crate) struct Keyed<K, V> {
    default: std::sync::Arc<V>,
    keyed: std::sync::Mutex<Registry<K, V>>,
}

impl<K: Hash + Eq, V> Keyed<K, V> {
    pub(crate) fn new(default: V) -> Self {
        Keyed {
            default: std::sync::Arc::new(default),
            keyed: std::sync::Mutex::new(Registry::new()),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry<K, V>> {
        self.keyed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state for `key` (the default one for `None`), made with `make` on first use; idle
    /// entries nobody holds are swept as the map grows.
    pub(crate) fn get(
        &self,
        key: Option<K>,
        make: impl FnOnce(&K) -> V,
        idle: impl Fn(&V) -> bool,
    ) -> std::sync::Arc<V> {
        match key {
            None => std::sync::Arc::clone(&self.default),
            Some(key) => self.registry().get_or_insert(key, make, idle),
        }
    }

    /// The default state.
    pub(crate) fn default(&self) -> &V {
        &self.default
    }

    /// The state of `key`, if it exists.
    pub(crate) fn find(&self, key: &K) -> Option<std::sync::Arc<V>> {
        self.registry().get(key).cloned()
    }

    /// Calls `f` on the default state and every keyed one (outside the registry's lock).
    pub(crate) fn each(&self, mut f: impl FnMut(&V)) {
        f(&self.default);
        let keyed: Vec<_> = self.registry().values().cloned().collect();
        keyed.iter().for_each(|v| f(v));
    }

    /// How many keyed states are held.
    pub(crate) fn len(&self) -> usize {
        self.registry().len()
    }
}

/// Per-key state (quotas, circuits) created on first use; entries nobody holds and that are
/// idle are swept when the map doubles, so memory follows the keys in use.
struct Registry<K, V> {
    map: std::collections::HashMap<K, std::sync::Arc<V>>,
    sweep_at: usize,
}

/// The first sweep happens at this many keys; later ones at twice the survivors.
const FIRST_SWEEP: usize = 1024;

impl<K: Hash + Eq, V> Registry<K, V> {
    fn new() -> Self {
        Registry {
            map: std::collections::HashMap::new(),
            sweep_at: FIRST_SWEEP,
        }
    }

    /// The entry for `key`, created with `make` on first use. Before creating one, sweeps the
    /// entries for which `idle` holds if the map has reached its sweep size.
    fn get_or_insert(
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

    fn get(&self, key: &K) -> Option<&std::sync::Arc<V>> {
        self.map.get(key)
    }

    fn values(&self) -> impl Iterator<Item = &std::sync::Arc<V>> {
        self.map.values()
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}
