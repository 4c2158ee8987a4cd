//! Which quota a request belongs to: [`KeyFor`], [`NoKey`], [`by_host`], [`key_fn`].

use std::hash::Hash;

use http::Request;

/// Picks the quota (the partition) a request counts against. `None` means the default quota.
///
/// Providers limit per model and per API key; a key extractor gives each its own buckets,
/// created on first use and dropped when idle.
pub trait KeyFor<B>: Clone + Send + Sync + 'static {
    /// The key type.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of `request`, or `None` for the default quota.
    fn key(&self, request: &Request<B>) -> Option<Self::Key>;
}

/// One quota for every request (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<B> KeyFor<B> for NoKey {
    type Key = ();

    fn key(&self, _: &Request<B>) -> Option<()> {
        None
    }
}

/// A quota per host (the URI's authority), for one client that talks to several providers.
///
/// ```
/// use tollgate::rate_limit::{by_host, KeyFor};
/// let request = http::Request::get("https://api.openai.com/v1/models").body(()).unwrap();
/// assert_eq!(by_host().key(&request).as_deref(), Some("api.openai.com"));
/// ```
pub fn by_host() -> ByHost {
    ByHost
}

/// See [`by_host`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ByHost;

impl<B> KeyFor<B> for ByHost {
    type Key = String;

    fn key(&self, request: &Request<B>) -> Option<String> {
        request.uri().host().map(str::to_owned)
    }
}

/// A quota per whatever a closure returns (a model name from a header, an API key's hash...).
///
/// ```
/// use tollgate::rate_limit::{key_fn, KeyFor};
///
/// let by_model = key_fn(|request: &http::Request<String>| {
///     request.headers().get("x-model").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// });
/// let request = http::Request::builder().header("x-model", "gpt-4o").body(String::new()).unwrap();
/// assert_eq!(by_model.key(&request).as_deref(), Some("gpt-4o"));
/// ```
pub fn key_fn<F>(f: F) -> KeyFn<F> {
    KeyFn(f)
}

/// See [`key_fn`].
#[derive(Debug, Clone, Copy)]
pub struct KeyFn<F>(F);

impl<B, K, F> KeyFor<B> for KeyFn<F>
where
    F: Fn(&Request<B>) -> Option<K> + Clone + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn key(&self, request: &Request<B>) -> Option<K> {
        (self.0)(request)
    }
}
