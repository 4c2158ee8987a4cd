//! `tollgate serve`: the gateway (crate `tollgate-serve`) in front of one provider.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tollgate::config::Config;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_serve::{ClientKey, Gateway, ServeFile};
use tower::Layer;

use crate::batch::flags::{positive, PolicyFlags};
use crate::shared_quota::RedisFlags;

/// The flags of `tollgate serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on (default 127.0.0.1:8787, or the config's `[serve] listen`).
    /// Anything but loopback needs client keys.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Provider preset: openai, anthropic, groq, azure-openai, gemini, gemini-openai,
    /// openai-compatible (default openai).
    #[arg(long, conflicts_with = "config")]
    provider: Option<String>,
    /// Config file (TOML or JSON): `[providers.NAME]` policies and a `[serve]` table (listen,
    /// provider, endpoint, clients, timeouts).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The provider table of the config file to serve (default: `[serve] provider`, else the
    /// first).
    #[arg(long, requires = "config")]
    config_provider: Option<String>,
    /// The provider's base URL as its SDK takes it (`https://api.openai.com/v1`); a client's
    /// `/v1/...` goes to its path. Default: the provider's own.
    #[arg(long)]
    endpoint: Option<String>,
    /// Send no API key upstream: the endpoint needs none (a local server). Otherwise the key
    /// comes from the provider's environment variable (OPENAI_API_KEY, ANTHROPIC_API_KEY...).
    #[arg(long)]
    no_key: bool,
    /// A key clients authenticate with, `NAME=KEY` or `KEY` (repeatable; or
    /// TOLLGATE_CLIENT_KEYS, comma-separated; or `[[serve.clients]]`). Clients share the
    /// provider's quota fairly; their keys are never forwarded.
    #[arg(
        long = "client-key",
        value_name = "[NAME=]KEY",
        env = "TOLLGATE_CLIENT_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    client_keys: Vec<String>,
    /// The largest request body accepted, in bytes (default 4 MiB).
    #[arg(long, value_parser = positive)]
    max_body: Option<u64>,
    /// Connections served at once (default 1024).
    #[arg(long, value_parser = positive)]
    max_connections: Option<u64>,
    /// How long a request may wait for the quota before the client is told 429 with
    /// `Retry-After`, in seconds (default 30; its SDK then retries).
    #[arg(long, value_parser = crate::batch::flags::positive_secs)]
    max_wait: Option<f64>,
    /// The flags that change the policy.
    #[command(flatten)]
    policy: PolicyFlags,
    /// Sharing the quota through Redis, with the other replicas.
    #[command(flatten)]
    redis: RedisFlags,
}

pub(crate) async fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let (mut policy, file) = policy(&args)?;
    args.policy.apply(&mut policy)?;
    // A gateway's caller has an SDK that retries a 429 after its `Retry-After`: better told
    // when to come back than held past its own timeout.
    let max_wait = args.max_wait.map(Duration::from_secs_f64);
    if max_wait.is_some() || policy.limits.max_wait.is_none() {
        policy.limits.max_wait = Some(max_wait.unwrap_or(Duration::from_secs(30)));
    }
    let mut config = file.as_ref().map(|f| f.config.clone()).unwrap_or_default();
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    for (i, text) in args.client_keys.iter().enumerate() {
        config
            .clients
            .push(ClientKey::parse(text, i + 1).map_err(|e| e.to_string())?);
    }
    if let Some(max) = args.max_body {
        config.max_body = usize::try_from(max).unwrap_or(usize::MAX);
    }
    if let Some(max) = args.max_connections {
        config.max_connections = usize::try_from(max).unwrap_or(usize::MAX);
    }
    config.check().map_err(|e| e.to_string())?;
    let provider = policy.provider;
    let endpoint = args
        .endpoint
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.endpoint.clone()))
        .or_else(|| provider.default_endpoint().map(|e| format!("{e}/v1")))
        .ok_or_else(|| format!("provider `{provider}` has no default endpoint: give --endpoint"))?;
    // The key comes from the environment, never a flag (it would show in `ps`).
    let key = provider
        .auth()
        .env
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|k| !k.is_empty()));
    if key.is_none() && !args.no_key {
        return Err(format!(
            "no API key for the provider: set {} (or pass --no-key for a server that needs none)",
            provider.auth().env.join(" or ")
        ));
    }
    let (layer, store) = args.redis.layer(&mut policy).await?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot set up /metrics: {e}"))?;
    let mut gateway = Gateway::builder(provider, &endpoint)
        .config(&config)
        .metrics(metrics)
        .limit_handle(layer.limit_handle());
    if let Some(key) = key.filter(|_| !args.no_key) {
        gateway = gateway.provider_key(key);
    }
    // The replicas share each client's own limits as they share the provider's quota.
    if let Some((store, on_error)) = store {
        gateway = gateway.client_store(store, on_error);
    }
    let gateway = gateway
        .build(layer.layer(tollgate_serve::upstream_client()))
        .map_err(|e| e.to_string())?;
    let listener = tollgate_serve::bind(&config)
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "tollgate serve: {} clients, {provider} at {}, {}",
        if config.clients.is_empty() {
            "any local".to_owned()
        } else {
            config.clients.len().to_string()
        },
        tollgate::redact_uri(&endpoint.parse().map_err(|_| "invalid --endpoint")?),
        args.redis
            .url
            .as_ref()
            .map_or("quota in this process", |_| "quota shared through Redis"),
    );
    // The URL alone on stdout, for scripts (and tests) to read.
    println!("http://{addr}");
    tollgate_serve::serve(listener, gateway, &config, stop_signal())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// The policy (the config file's provider table, or the preset) and the `[serve]` table.
fn policy(args: &ServeArgs) -> Result<(Policy, Option<ServeFile>), String> {
    let Some(path) = &args.config else {
        let provider = match &args.provider {
            Some(name) => name.parse::<Provider>().map_err(|e| e.to_string())?,
            None => Provider::OpenAi,
        };
        return Ok((Policy::preset(provider), None));
    };
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let file = match &config.serve {
        Some(table) => {
            Some(ServeFile::from_table(table).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let name = args
        .config_provider
        .as_deref()
        .or_else(|| file.as_ref().and_then(|f| f.provider.as_deref()));
    let policy = crate::batch::target::provider_policy(&config, name, path)?;
    Ok((policy, file))
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("tollgate serve: draining the requests in flight");
}
