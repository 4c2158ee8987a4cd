//! The clients the gateway knows, found by the key a request carries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tollgate::rate_limit::{OnStoreError, RateLimitLayer, Store, Tenant};

use crate::client_store::ClientStore;
use crate::config::ClientKey;
use crate::error::ServeError;

/// A known client: its name, its share of the quota, its own limits.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) tenant: Tenant,
    /// Its own limiter, shared by all its requests whatever connection they come on.
    pub(crate) limit: Option<RateLimitLayer>,
}

impl Client {
    pub(crate) fn name(&self) -> &str {
        self.tenant.name()
    }
}

/// The key → client table, or the one anonymous client when no keys are set.
#[derive(Debug)]
pub(crate) enum Clients {
    Keys(HashMap<Box<str>, Arc<Client>>),
    Open(Arc<Client>),
}

impl Clients {
    /// The table of `keys`; with a `store`, each client's own limits are kept there (shared
    /// with every replica using it) rather than in this process.
    pub(crate) fn new(
        keys: &[ClientKey],
        store: Option<&(Arc<dyn Store>, OnStoreError)>,
    ) -> Result<Self, ServeError> {
        if keys.is_empty() {
            return Ok(Clients::Open(Arc::new(Client {
                tenant: Tenant::new("anonymous"),
                limit: None,
            })));
        }
        let mut table = HashMap::with_capacity(keys.len());
        for key in keys {
            let limit = match key.limits {
                None => None,
                Some(mut limits) => {
                    // A client's own limits are the gateway's rules, not a provider's guess:
                    // fixed, exact (no headroom for another clock: the gateway's is the one
                    // that counts, and headroom would turn the last of a burst into a refusal
                    // to wait ten milliseconds), and over them it is told at once when to come
                    // back.
                    limits.adaptive = None;
                    limits.headroom = Duration::ZERO;
                    limits.adopt_provider_limits = false;
                    limits.learn_from_provider = false;
                    limits.max_wait.get_or_insert(Duration::ZERO);
                    let mut builder = RateLimitLayer::builder()
                        .config(limits)
                        .name(format!("client {}", key.name));
                    if let Some((store, on_error)) = store {
                        let store = ClientStore::new(Arc::clone(store), &key.name);
                        builder = builder.store(store, *on_error);
                    }
                    let layer = builder.build().map_err(|e| {
                        ServeError::config(&format!("clients.{}.limits", key.name), e.to_string())
                    })?;
                    Some(layer)
                }
            };
            let client = Client {
                tenant: Tenant::new(key.name.as_str()).with_weight(key.weight),
                limit,
            };
            table.insert(key.key.clone().into_boxed_str(), Arc::new(client));
        }
        Ok(Clients::Keys(table))
    }

    /// The client whose key `headers` carry (`Authorization: Bearer`, as the OpenAI SDKs send
    /// it, `x-api-key` as Anthropic's, `api-key` as Azure's), if any.
    pub(crate) fn find(&self, headers: &HeaderMap) -> Option<&Arc<Client>> {
        match self {
            Clients::Open(client) => Some(client),
            Clients::Keys(table) => presented_keys(headers).find_map(|key| table.get(key)),
        }
    }
}

/// The keys a request presents, in the headers each SDK uses.
fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let plain = ["x-api-key", "api-key"]
        .into_iter()
        .filter_map(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    bearer.into_iter().chain(plain).map(str::trim)
}
