//! [`RedisStore`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::connection::{Cluster, Connection};
use redis::Script;
use tollgate::classify::LimitKind;
use tollgate::rate_limit::{Charge, Grant, Rate, Store, StoreError, StoreFuture, StoreHold};
use tollgate::ConfigError;

/// A rate-limit [`Store`] on Redis: see the [crate documentation](crate).
///
/// Cloning it is cheap and shares the connection.
///
/// ```
/// use std::time::Duration;
/// use tollgate_redis::RedisStore;
///
/// # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # let _guard = runtime.enter();
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .prefix("batch-jobs")
///     .timeout(Duration::from_millis(200))
///     .build()?;
/// assert!(format!("{store:?}").contains("batch-jobs"));
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    acquire: Script,
    pause: Script,
    lower: Script,
    settle: Script,
    settle_day: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL is left out: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A builder for the Redis server at `url`: `redis://[user:password@]host:port/[db]`, or
    /// `rediss://` for TLS (rustls, with Mozilla's roots or
    /// [`root_certificate`](RedisStoreBuilder::root_certificate)). For a Redis Cluster, see
    /// [`cluster`](RedisStoreBuilder::cluster).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "tollgate".into(),
            timeout: Duration::from_millis(250),
            cluster: false,
            root_certificate: None,
        }
    }

    /// Asks Redis for a `PONG`: whether the store answers now, within the builder's timeout
    /// (for a check before a run: the limiter itself finds out on the first admission).
    ///
    /// ```no_run
    /// # async fn check() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tollgate_redis::RedisStore::builder("redis://127.0.0.1:6379/").build()?;
    /// store.ping().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(StoreError::new)
    }

    fn key(&self, quota: &str, part: &str) -> String {
        format!("{}:{{{}}}:{}", self.prefix, quota, part)
    }
}

/// Builds a [`RedisStore`].
///
/// Defaults: prefix `tollgate`, 250 ms timeout for connecting and for each answer (an
/// admission that takes longer counts as Redis being down).
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    cluster: bool,
    root_certificate: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cluster", &self.cluster)
            .field("root_certificate", &self.root_certificate.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The namespace of every key (default `tollgate`): processes share a quota when they use
    /// the same prefix and quota name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long connecting, and each answer, may take before Redis counts as down.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL names the nodes of a Redis Cluster (any of them, comma-separated:
    /// `redis://10.0.0.1:7000,redis://10.0.0.2:7000`), not one server. Every quota's keys
    /// share a hash slot, so each admission is still one script on one node.
    ///
    /// ```
    /// # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let _guard = runtime.enter();
    /// let store = tollgate_redis::RedisStore::builder("redis://127.0.0.1:7000,redis://127.0.0.1:7001")
    ///     .cluster()
    ///     .build()?;
    /// # let _ = store;
    /// # Ok::<(), tollgate::ConfigError>(())
    /// ```
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// With `rediss://`: trust the certificate authority in `pem` (a PEM certificate) instead
    /// of Mozilla's roots, for a Redis whose certificate a private CA signed.
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Checks the settings and builds the store. It connects on first use and reconnects by
    /// itself, so Redis need not be up yet. Must be called within a Tokio runtime.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "prefix",
                "must be non-empty and free of braces, e.g. \"tollgate\"",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                "must be longer than zero, e.g. 250 ms",
            ));
        }
        let invalid = |error: redis::RedisError| {
            ConfigError::new(
                "url",
                format!(
                    "not a Redis URL ({}); expected redis://host:port/ or rediss://host:port/",
                    error
                ),
            )
        };
        let connection = if self.cluster {
            let nodes: Vec<&str> = self.url.split(',').map(str::trim).collect();
            // As for one server: fail within the timeout, so the limiter's fallback takes over.
            let mut client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(self.timeout)
                .response_timeout(self.timeout)
                .retries(1);
            if let Some(pem) = &self.root_certificate {
                client = client.certs(tls_roots(pem));
            }
            let client = client.build().map_err(invalid)?;
            Connection::Cluster(Arc::new(Cluster {
                client,
                connection: tokio::sync::OnceCell::new(),
            }))
        } else {
            let client = match &self.root_certificate {
                Some(pem) => redis::Client::build_with_tls(self.url.as_str(), tls_roots(pem)),
                None => redis::Client::open(self.url.as_str()),
            }
            .map_err(invalid)?;
            // Few reconnection retries: while Redis is down, an admission should fail within
            // the timeout so the limiter's fallback takes over, not wait through a long backoff.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1)
                .set_max_delay(self.timeout);
            let connection =
                ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
                    ConfigError::new("url", format!("cannot set up the Redis connection: {}", e))
                })?;
            Connection::Single(connection)
        };
        Ok(RedisStore {
            connection,
            prefix: self.prefix.into(),
            scripts: Arc::new(Scripts {
                acquire: Script::new(include_str!("lua/acquire.lua")),
                pause: Script::new(include_str!("lua/pause.lua")),
                lower: Script::new(include_str!("lua/lower.lua")),
                settle: Script::new(include_str!("lua/settle.lua")),
                settle_day: Script::new(include_str!("lua/settle_day.lua")),
            }),
        })
    }
}

fn tls_roots(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// A limit's emission interval: microseconds per unit (fractional when the rate does not divide).
fn interval_micros(rate: &Rate) -> f64 {
    rate.interval().as_secs_f64() * 1e6 / rate.amount().max(1) as f64
}

fn part(which: LimitKind) -> &'static str {
    match which {
        LimitKind::Tokens => "tokens",
        LimitKind::InputTokens => "input",
        LimitKind::OutputTokens => "output",
        LimitKind::RequestsPerDay => "day:requests",
        LimitKind::TokensPerDay => "day:tokens",
        _ => "requests",
    }
}

/// The key of what refunds have moved a bucket's schedule.
fn refunds(part: &str) -> String {
    format!("{part}:refunded")
}

/// Runs `script` by its SHA (loading it again if Redis answers `NOSCRIPT`).
async fn invoke<T: redis::FromRedisValue>(
    mut connection: Connection,
    scripts: Arc<Scripts>,
    script: fn(&Scripts) -> &Script,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<T, StoreError> {
    let mut invocation = script(&scripts).prepare_invoke();
    for key in keys {
        invocation.key(key);
    }
    for arg in args {
        invocation.arg(arg);
    }
    invocation
        .invoke_async(&mut connection)
        .await
        .map_err(StoreError::new)
}

impl Store for RedisStore {
    fn acquire(&self, charge: Charge) -> StoreFuture<Grant> {
        let buckets = [
            charge.requests.map(|rate| (LimitKind::Requests, rate, 1)),
            charge
                .tokens
                .map(|(rate, cost)| (LimitKind::Tokens, rate, cost)),
            charge
                .input_tokens
                .map(|(rate, cost)| (LimitKind::InputTokens, rate, cost)),
            charge
                .output_tokens
                .map(|(rate, cost)| (LimitKind::OutputTokens, rate, cost)),
        ];
        let days = [
            charge
                .requests_per_day
                .map(|allowance| (LimitKind::RequestsPerDay, allowance, 1)),
            charge
                .tokens_per_day
                .map(|(allowance, cost)| (LimitKind::TokensPerDay, allowance, cost)),
        ];
        let buckets: Vec<_> = buckets.into_iter().flatten().collect();
        let days: Vec<_> = days.into_iter().flatten().collect();
        // What settles: the input and output buckets and the daily tokens, when held.
        let holding = charge.held;
        let held = move |which: LimitKind| {
            holding
                && matches!(
                    which,
                    LimitKind::InputTokens | LimitKind::OutputTokens | LimitKind::TokensPerDay
                )
        };
        let mut keys = vec![self.key(&charge.quota, "pause")];
        keys.extend(
            buckets
                .iter()
                .map(|(w, ..)| self.key(&charge.quota, part(*w))),
        );
        keys.extend(
            buckets
                .iter()
                .map(|(w, ..)| self.key(&charge.quota, &refunds(part(*w)))),
        );
        keys.extend(days.iter().map(|(w, ..)| self.key(&charge.quota, part(*w))));
        let mut args = vec![
            buckets.len().to_string(),
            days.len().to_string(),
            charge.day_starts_at.as_secs().to_string(),
        ];
        for (which, rate, cost) in &buckets {
            let interval = interval_micros(rate);
            // As in process: the burst less the headroom, but a request as large as the burst
            // still goes once the bucket is full.
            let tolerance = (rate.burst() as f64 * interval - charge.headroom.as_micros() as f64)
                .max(*cost as f64 * interval);
            args.extend([
                interval.to_string(),
                tolerance.to_string(),
                cost.to_string(),
                u8::from(held(*which)).to_string(),
            ]);
        }
        for (_, allowance, cost) in &days {
            args.extend([allowance.to_string(), cost.to_string()]);
        }
        let call = invoke(
            self.connection.clone(),
            Arc::clone(&self.scripts),
            |s| &s.acquire,
            keys,
            args,
        );
        Box::pin(async move {
            let answer: Vec<i64> = call.await?;
            let (admitted, wait, which) = match answer[..] {
                [admitted, wait, which, ..] => (admitted, wait, which),
                _ => return Err(StoreError::new("the acquire script answered too little")),
            };
            if admitted != 1 {
                let which = which as usize;
                let limit = match which {
                    0 => LimitKind::Paused,
                    i if i <= buckets.len() => buckets[i - 1].0,
                    i => days
                        .get(i - 1 - buckets.len())
                        .map_or(LimitKind::Requests, |day| day.0),
                };
                return Ok(Grant::Wait {
                    wait: Duration::from_micros(wait.max(1) as u64),
                    which: limit,
                });
            }
            let day = answer.get(3).copied().unwrap_or(0).max(0) as u64;
            let mut holds = [None; 3];
            let marks = answer.get(4..).unwrap_or_default().chunks(2);
            for ((which, _, cost), mark) in buckets.iter().zip(marks) {
                let slot = match which {
                    LimitKind::InputTokens => 0,
                    LimitKind::OutputTokens => 1,
                    _ => continue,
                };
                if let ([end, refunded], true) = (mark, held(*which)) {
                    let (end, refunded) = ((*end).max(0) as u64, (*refunded).max(0) as u64);
                    holds[slot] = Some(StoreHold::new(*which, *cost, end, refunded));
                }
            }
            if let Some((which, _, cost)) = days.iter().find(|d| held(d.0)) {
                holds[2] = Some(StoreHold::new(*which, *cost, day, 0));
            }
            Ok(if holds.iter().any(Option::is_some) {
                Grant::Held(holds)
            } else {
                Grant::Admitted
            })
        })
    }

    fn settle(
        &self,
        quota: &str,
        rate: Option<Rate>,
        hold: StoreHold,
        used: u64,
    ) -> StoreFuture<()> {
        let call = match (hold.which, rate) {
            (LimitKind::TokensPerDay, _) => invoke::<i64>(
                self.connection.clone(),
                Arc::clone(&self.scripts),
                |s| &s.settle_day,
                vec![self.key(quota, part(hold.which))],
                vec![
                    hold.mark.to_string(),
                    hold.amount.to_string(),
                    used.to_string(),
                ],
            ),
            (_, Some(rate)) => invoke::<i64>(
                self.connection.clone(),
                Arc::clone(&self.scripts),
                |s| &s.settle,
                vec![
                    self.key(quota, part(hold.which)),
                    self.key(quota, &refunds(part(hold.which))),
                ],
                vec![
                    interval_micros(&rate).to_string(),
                    rate.burst().to_string(),
                    hold.amount.to_string(),
                    used.to_string(),
                    hold.mark.to_string(),
                    hold.refunded.to_string(),
                ],
            ),
            (_, None) => return Box::pin(async { Ok(()) }),
        };
        Box::pin(async move { call.await.map(drop) })
    }

    fn pause(&self, quota: &str, duration: Duration) -> StoreFuture<()> {
        let call = invoke::<i64>(
            self.connection.clone(),
            Arc::clone(&self.scripts),
            |s| &s.pause,
            vec![self.key(quota, "pause")],
            vec![duration.as_millis().max(1).to_string()],
        );
        Box::pin(async move { call.await.map(drop) })
    }

    fn lower(&self, quota: &str, which: LimitKind, rate: Rate, remaining: u64) -> StoreFuture<()> {
        let call = invoke::<i64>(
            self.connection.clone(),
            Arc::clone(&self.scripts),
            |s| &s.lower,
            vec![self.key(quota, part(which))],
            vec![
                interval_micros(&rate).to_string(),
                rate.burst().to_string(),
                remaining.to_string(),
            ],
        );
        Box::pin(async move { call.await.map(drop) })
    }
}
