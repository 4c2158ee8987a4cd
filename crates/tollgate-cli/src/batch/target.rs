//! Where the batch goes: the policy, the endpoint, the key and the request shape.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tollgate::config::Config;
use tollgate::rate_limit::OnStoreError;
use tollgate::stack::{Policy, StandardLayer};
use tollgate::Provider;
use tollgate_mock::{MockConfig, MockServer};

use super::BatchArgs;

/// The resolved destination of a batch.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) policy: Policy,
    /// The stack built from the policy (its limiter in Redis with `--redis`).
    pub(crate) layer: StandardLayer,
    pub(crate) concurrency: usize,
    url: Arc<str>,
    key: Arc<Secret>,
    /// Keeps the embedded mock alive for the run.
    _mock: Option<Arc<MockServer>>,
}

/// An API key: its `Debug` never shows it.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Target {
    pub(crate) async fn resolve(args: &BatchArgs) -> Result<Target, String> {
        let mut policy = match (&args.config, &args.provider) {
            (Some(path), _) => {
                let config = Config::load(path).map_err(|e| e.to_string())?;
                match &args.config_provider {
                    Some(name) => config.provider(name).map_err(|e| e.to_string())?.clone(),
                    None => config
                        .providers
                        .values()
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("{} defines no provider", path.display()))?,
                }
            }
            (None, Some(name)) => {
                Policy::preset(name.parse::<Provider>().map_err(|e| e.to_string())?)
            }
            (None, None) => Policy::preset(Provider::OpenAi),
        };
        args.policy.apply(&mut policy)?;
        let layer = match &args.redis {
            // The quota is shared through Redis: its limits are the ones configured, the same in
            // every process (an adaptive rate would be each process's own guess).
            Some(url) => {
                let limits = &mut policy.limits;
                if limits.requests.is_none() && limits.tokens.is_none() {
                    return Err(
                        "--redis shares the key's quota: say what it is with --rpm or \
                                --tpm (or rpm/tpm in the config file)"
                            .into(),
                    );
                }
                limits.adaptive = None;
                let store = tollgate_redis::RedisStore::builder(url.as_str())
                    .build()
                    .map_err(|e| format!("invalid --redis: {e}"))?;
                let on_error = OnStoreError::FailOpen {
                    processes: args.processes,
                };
                StandardLayer::with_store(&policy, store, on_error)
            }
            None => policy.layer(),
        }
        .map_err(|e| format!("invalid settings: {e}"))?;
        let provider = policy.provider;
        // The key comes from the environment, never a flag (it would show in `ps`).
        let key = provider
            .auth()
            .env
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|k| !k.is_empty()));
        if let Some(key) = &key {
            // Checked once here, so that every request carries it (never printed).
            provider
                .authorize(&mut Request::new(()), key)
                .map_err(|_| {
                    format!(
                        "the API key in {} is not a valid header value (a stray newline or \
                         quote?)",
                        provider.auth().env.join(" or ")
                    )
                })?;
        }
        let (url, key, mock) = match (&args.endpoint, key) {
            (Some(endpoint), key) => (
                endpoint.trim_end_matches('/').to_owned(),
                key.unwrap_or_default(),
                None,
            ),
            (None, Some(key)) => {
                let endpoint = provider.default_endpoint().ok_or_else(|| {
                    format!("provider `{provider}` has no default endpoint: give --endpoint")
                })?;
                (endpoint.to_owned(), key, None)
            }
            (None, None) => {
                let requests = policy.limits.requests;
                let rpm = requests.map(|r| r.amount().min(u64::from(u32::MAX)) as u32);
                let burst = requests.map(|r| r.burst().min(u64::from(u32::MAX)) as u32);
                let mock = MockServer::spawn(MockConfig {
                    rpm,
                    burst,
                    ..MockConfig::default()
                })
                .await
                .map_err(|e| format!("cannot start the embedded mock provider: {e}"))?;
                eprintln!(
                    "tollgate: no --endpoint and no API key in {}: using the embedded mock provider at {}",
                    provider.auth().env.join(" or "),
                    mock.url()
                );
                (
                    mock.url(),
                    "sk-embedded-mock".to_owned(),
                    Some(Arc::new(mock)),
                )
            }
        };
        let concurrency = policy
            .limits
            .concurrency
            .map(|c| c as usize)
            .unwrap_or_else(|| match policy.limits.requests {
                // Enough to keep the rate busy at about a second of latency.
                Some(rate) => (rate.per_sec().ceil() as usize).clamp(4, 64),
                // The rate is found as the batch goes: as many tasks as it may want, so that
                // a few requests waiting out a 429's hint do not stall the others.
                None => 64,
            });
        Ok(Target {
            url: format!("{url}{}", provider.chat_path()).into(),
            key: Arc::new(Secret(key)),
            policy,
            layer,
            concurrency,
            _mock: mock,
        })
    }

    /// A request carrying `body` to the provider, authenticated its way.
    pub(crate) fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::post(&*self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .unwrap_or_default();
        // Checked in `resolve`: a key that is not a valid header value stops the batch there.
        let _ = self.policy.provider.authorize(&mut request, &self.key.0);
        request
    }
}
