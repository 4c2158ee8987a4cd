//! Where the batch goes: the policy, the endpoint, the key and the request shape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tollgate::config::{Config, Price};
use tollgate::fallback::FallbackLayer;
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
    /// Send the requests streamed (`--stream`).
    pub(crate) stream: bool,
    /// The requests' lane in the quota's queue (`--priority`).
    priority: Option<tollgate::rate_limit::Priority>,
    /// The targets to fall back on (`[[fallback]]`, `--fallback`), in order, with their policies.
    fallbacks: Vec<(tollgate::fallback::Target, Policy)>,
    /// The endpoint's base URL (no trailing slash).
    base: Arc<str>,
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

/// The attempt timeout when none is set: time to the first byte plus the slowest plausible
/// generation of the largest answer asked. A non-streamed answer arrives whole, so the
/// attempt lasts as long as the generation: providers produce 20 to 100 tokens a second, and
/// 10 a second under load is the slow end; 10 s covers queueing and reading the prompt.
fn default_attempt_timeout(max_tokens: u64) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(max_tokens.saturating_mul(100))
}

/// The whole-request deadline when none is set: the SDKs' 10-minute ceiling, or two attempts'
/// worth when a single attempt may take longer.
fn default_deadline(attempt: Duration) -> Duration {
    Duration::from_secs(600).max(attempt * 2)
}

/// The policy (the config file's provider, or the preset, with the flags over it) and the
/// config file's prices by model.
pub(crate) fn policy(args: &BatchArgs) -> Result<Resolved, String> {
    let (mut policy, prices, fallbacks) = match (&args.config, &args.provider) {
        (Some(path), _) => {
            let config = Config::load(path).map_err(|e| e.to_string())?;
            let policy = provider_policy(&config, args.config_provider.as_deref(), path)?;
            let fallbacks = config
                .fallback
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    let target = fallback_target(i, &entry.endpoint, entry.model.as_deref())?;
                    let policy = entry
                        .provider
                        .as_ref()
                        .and_then(|name| config.providers.get(name).cloned());
                    Ok((target, policy))
                })
                .collect::<Result<Vec<_>, String>>()?;
            (policy, config.prices, fallbacks)
        }
        (None, Some(name)) => (
            Policy::preset(name.parse::<Provider>().map_err(|e| e.to_string())?),
            BTreeMap::new(),
            Vec::new(),
        ),
        (None, None) => (
            Policy::preset(Provider::OpenAi),
            BTreeMap::new(),
            Vec::new(),
        ),
    };
    args.policy.apply(&mut policy)?;
    let mut fallbacks: Vec<(tollgate::fallback::Target, Policy)> = fallbacks
        .into_iter()
        .map(|(target, own)| (target, own.unwrap_or_else(|| policy.clone())))
        .collect();
    for spec in &args.fallbacks {
        let (url, model) = match spec.split_once('#') {
            Some((url, model)) => (url, Some(model)),
            None => (spec.as_str(), None),
        };
        let target = fallback_target(fallbacks.len(), url, model)?;
        fallbacks.push((target, policy.clone()));
    }
    Ok(Resolved {
        policy,
        prices,
        fallbacks,
    })
}

/// The policy of the config file's provider `name`, or of its first.
pub(crate) fn provider_policy(
    config: &Config,
    name: Option<&str>,
    path: &std::path::Path,
) -> Result<Policy, String> {
    match name {
        Some(name) => config.provider(name).cloned().map_err(|e| e.to_string()),
        None => config
            .providers
            .values()
            .next()
            .cloned()
            .ok_or_else(|| format!("{} defines no provider", path.display())),
    }
}

/// What the config file and the flags say, before anything is reached.
pub(crate) struct Resolved {
    pub(crate) policy: Policy,
    pub(crate) prices: BTreeMap<String, Price>,
    /// The targets to fall back on, each with its policy.
    pub(crate) fallbacks: Vec<(tollgate::fallback::Target, Policy)>,
}

/// The `i`th fallback target, at `url`, asking for `model` when given.
fn fallback_target(
    i: usize,
    url: &str,
    model: Option<&str>,
) -> Result<tollgate::fallback::Target, String> {
    let target = tollgate::fallback::Target::new(format!("fallback-{}", i + 1), url)
        .map_err(|e| format!("invalid fallback `{url}`: {}", e.message()))?;
    Ok(match model {
        Some(model) => target.model(model),
        None => target,
    })
}

/// The model `prompt` lines ask for when `--model` is not given: a small current model of the
/// provider (OpenAI's for OpenAI-compatible servers).
pub(crate) fn default_model(provider: Provider) -> &'static str {
    match provider {
        Provider::Anthropic => "claude-haiku-4-5",
        Provider::Groq => "llama-3.1-8b-instant",
        Provider::Gemini | Provider::GeminiOpenAi => "gemini-2.5-flash",
        _ => "gpt-4o-mini",
    }
}

impl Target {
    /// The policy, the endpoint and the key, checked before the first prompt is read for
    /// sending: a bad `--endpoint`, a missing key, a dead endpoint or an unreachable Redis stop
    /// the run here, in seconds, with a message naming what to fix.
    pub(crate) async fn resolve(
        args: &BatchArgs,
        mut policy: Policy,
        fallbacks: Vec<(tollgate::fallback::Target, Policy)>,
        max_tokens: Option<u64>,
    ) -> Result<Target, String> {
        // A hung connection must not hold the batch: safe bounds unless told otherwise.
        let attempt = *policy
            .retry
            .attempt_timeout
            .get_or_insert_with(|| default_attempt_timeout(max_tokens.unwrap_or(args.max_tokens)));
        policy
            .retry
            .deadline
            .get_or_insert_with(|| default_deadline(attempt));
        // The fallbacks get the same bounds unless their own policy sets them.
        let mut fallbacks = fallbacks;
        for (_, fallback) in &mut fallbacks {
            let own = *fallback.retry.attempt_timeout.get_or_insert(attempt);
            fallback
                .retry
                .deadline
                .get_or_insert_with(|| default_deadline(own));
        }
        let (layer, _) = args.redis.layer(&mut policy).await?;
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
            (Some(endpoint), key) => {
                let endpoint = check_endpoint(endpoint).await?;
                if key.is_none() && !args.no_key {
                    return Err(format!(
                        "no API key for --endpoint {}: set {} (or pass --no-key for a server \
                         that needs none)",
                        tollgate::redact_uri(&endpoint),
                        provider.auth().env.join(" or ")
                    ));
                }
                let base = endpoint.to_string();
                (
                    base.trim_end_matches('/').to_owned(),
                    key.unwrap_or_default(),
                    None,
                )
            }
            (None, Some(key)) => {
                let endpoint = provider.default_endpoint().ok_or_else(|| {
                    format!("provider `{provider}` has no default endpoint: give --endpoint")
                })?;
                (endpoint.to_owned(), key, None)
            }
            (None, None) => {
                // The mock enforces the limits the batch was told, so that the run shows them.
                let limits = &policy.limits;
                let per_minute = |rate: Option<tollgate::rate_limit::Rate>| {
                    rate.map(|r| (r.per_sec() * 60.0).min(f64::from(u32::MAX)) as u32)
                };
                let requests = limits.requests;
                let burst = requests.map(|r| r.burst().min(u64::from(u32::MAX)) as u32);
                let mock = MockServer::spawn(MockConfig {
                    rpm: per_minute(requests),
                    burst,
                    tpm: per_minute(limits.tokens),
                    itpm: per_minute(limits.input_tokens),
                    otpm: per_minute(limits.output_tokens),
                    rpd: limits.requests_per_day,
                    tpd: limits.tokens_per_day,
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
            base: url.into(),
            key: Arc::new(Secret(key)),
            policy,
            layer,
            concurrency,
            stream: args.stream,
            priority: args.priority,
            fallbacks,
            _mock: mock,
        })
    }

    /// Whether requests may fall back on other endpoints (`--fallback`).
    pub(crate) fn has_fallbacks(&self) -> bool {
        !self.fallbacks.is_empty()
    }

    /// The stack over the client: the primary endpoint, then each fallback with its own
    /// breaker and limiter built from the same policy.
    pub(crate) fn chain(&self) -> Result<FallbackLayer<StandardLayer>, String> {
        let primary = tollgate::fallback::Target::new("primary", &self.base)
            .map_err(|e| format!("invalid endpoint: {}", e.message()))?;
        let mut targets = vec![(primary, self.layer.clone())];
        for (fallback, policy) in &self.fallbacks {
            let layer = policy
                .layer()
                .map_err(|e| format!("invalid settings of {}: {e}", fallback.name()))?;
            targets.push((fallback.clone(), layer));
        }
        FallbackLayer::new(targets).map_err(|e| e.to_string())
    }

    /// The path a line's request goes to: its own, or the provider's chat path.
    pub(crate) fn path<'a>(&'a self, path: Option<&'a str>) -> &'a str {
        path.unwrap_or(self.policy.provider.chat_path())
    }

    /// A request carrying `body` to `path` (the provider's chat path when the line names
    /// none), authenticated the provider's way.
    pub(crate) fn request(&self, path: Option<&str>, body: Bytes) -> Request<Full<Bytes>> {
        let path = self.path(path);
        let mut request = Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .unwrap_or_default();
        // Checked in `resolve`: a key that is not a valid header value stops the batch there.
        let _ = self.policy.provider.authorize(&mut request, &self.key.0);
        if let Some(priority) = self.priority {
            request.extensions_mut().insert(priority);
        }
        request
    }
}

/// `--endpoint`, parsed and reached: an absolute http(s) URL whose host answers a TCP
/// connection within a few seconds (no request is sent, nothing is billed).
async fn check_endpoint(endpoint: &str) -> Result<http::Uri, String> {
    let invalid = |why: &str| {
        format!("invalid --endpoint `{endpoint}`: {why}; write it like https://api.example.com")
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| invalid(&format!("not a URL ({e})")))?;
    let port = match uri.scheme_str() {
        Some("http") => uri.port_u16().unwrap_or(80),
        Some("https") => uri.port_u16().unwrap_or(443),
        _ => return Err(invalid("it must start with http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| invalid("it has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(uri),
        Ok(Err(error)) => Err(format!(
            "cannot reach --endpoint {}: {error}",
            tollgate::redact_uri(&uri)
        )),
        Err(_) => Err(format!(
            "cannot reach --endpoint {}: no answer within 5 s",
            tollgate::redact_uri(&uri)
        )),
    }
}
