//! `--redis`: the stack's limiter in Redis, so that every process on one API key shares its
//! quota (`tollgate batch` and `tollgate serve` alike).

use std::time::Duration;

use tollgate::rate_limit::OnStoreError;
use tollgate::stack::{Policy, StandardLayer};

/// The flags of `--redis`, shared by `tollgate batch` and `tollgate serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RedisFlags {
    /// Share the quota with every process using this Redis (`redis://host:port/`, `rediss://`
    /// for TLS): batches and gateway replicas on one API key then never exceed its limits
    /// together (nor a gateway client its own). Needs a limit (`--rpm`, `--tpm`, `--itpm`,
    /// `--otpm`, `--rpd`, `--tpd`).
    #[arg(long = "redis", env = "TOLLGATE_REDIS_URL", hide_env_values = true)]
    pub(crate) url: Option<String>,
    /// While Redis is down (or unreachable at the start), go on at this process's share of the
    /// limits (see --processes) instead of refusing requests.
    #[arg(long = "redis-fail-open", requires = "url")]
    fail_open: bool,
    /// The --redis URL lists the nodes of a Redis Cluster, comma-separated
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`).
    #[arg(long = "redis-cluster", requires = "url")]
    cluster: bool,
    /// A PEM certificate authority to trust for a `rediss://` Redis (instead of Mozilla's roots).
    #[arg(long = "redis-ca", requires = "url", value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
    /// How many processes share the quota with `--redis`: with --redis-fail-open, each sends
    /// its share (the limit divided by this) while Redis is down.
    #[arg(long, default_value_t = 1, requires = "url", value_parser = clap::value_parser!(u32).range(1..))]
    processes: u32,
}

/// The Redis store the quota is kept in, and what happens while it is down.
pub(crate) type SharedStore = (tollgate_redis::RedisStore, OnStoreError);

impl RedisFlags {
    /// The standard stack for `policy`: its limiter in Redis with `--redis` (and the store, for
    /// other limits to share), in this process otherwise.
    pub(crate) async fn layer(
        &self,
        policy: &mut Policy,
    ) -> Result<(StandardLayer, Option<SharedStore>), String> {
        match &self.url {
            Some(url) => {
                let (store, on_error) = SharedQuota {
                    url,
                    fail_open: self.fail_open,
                    processes: self.processes,
                    cluster: self.cluster,
                    ca: self.ca.as_deref(),
                }
                .store(policy)
                .await?;
                let layer = StandardLayer::with_store(policy, store.clone(), on_error)
                    .map_err(|e| format!("invalid settings: {e}"))?;
                Ok((layer, Some((store, on_error))))
            }
            None => policy
                .layer()
                .map(|layer| (layer, None))
                .map_err(|e| format!("invalid settings: {e}")),
        }
    }
}

/// How a process reaches the shared quota.
struct SharedQuota<'a> {
    /// The Redis URL (`redis://`, `rediss://` for TLS).
    url: &'a str,
    /// Go on at this process's share while Redis is down.
    fail_open: bool,
    /// How many processes share the quota (for the share while Redis is down).
    processes: u32,
    /// The URL lists the nodes of a Redis Cluster.
    cluster: bool,
    /// A PEM certificate authority to trust for `rediss://` (instead of Mozilla's roots).
    ca: Option<&'a std::path::Path>,
}

impl SharedQuota<'_> {
    /// The Redis store for `policy`'s limits. The policy must say the quota (its limits are the
    /// configured ones, the same in every process: an adaptive rate would be each process's own
    /// guess, so it is turned off); Redis must answer unless `fail_open`.
    async fn store(&self, policy: &mut Policy) -> Result<SharedStore, String> {
        let limits = &mut policy.limits;
        let told = [limits.requests, limits.tokens, limits.input_tokens]
            .iter()
            .chain([&limits.output_tokens])
            .any(Option::is_some)
            || limits.requests_per_day.is_some()
            || limits.tokens_per_day.is_some();
        if !told {
            return Err(
                "--redis shares the key's quota: say what it is with --rpm, --tpm, \
                 --itpm, --otpm, --rpd or --tpd (or the limits in the config file)"
                    .into(),
            );
        }
        limits.adaptive = None;
        let mut store =
            tollgate_redis::RedisStore::builder(self.url).timeout(Duration::from_secs(2));
        if self.cluster {
            store = store.cluster();
        }
        if let Some(path) = self.ca {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --redis-ca {}: {e}", path.display()))?;
            store = store.root_certificate(pem);
        }
        let store = store.build().map_err(|e| format!("invalid --redis: {e}"))?;
        // Never at the full quota without being told: a dead Redis stops the run, unless
        // --redis-fail-open says to go on at this process's share.
        if let Err(error) = store.ping().await {
            if !self.fail_open {
                return Err(format!(
                    "cannot reach --redis: {error}; start it, or pass --redis-fail-open \
                     to run on this process's share (1/--processes) of the limits \
                     while it is down"
                ));
            }
            eprintln!(
                "tollgate: --redis is unreachable ({error}): running on 1/{} of the \
                 limits until it answers (--redis-fail-open)",
                self.processes
            );
        }
        let on_error = if self.fail_open {
            OnStoreError::FailOpen {
                processes: self.processes,
            }
        } else {
            OnStoreError::FailClosed
        };
        Ok((store, on_error))
    }
}
