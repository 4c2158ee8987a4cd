//! [`ServeConfig`]: where the gateway listens, who may call it, and how it guards itself from
//! slow or large requests; from code or from a config file's `[serve]` table.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate::rate_limit::LimitConfig;

use crate::error::ServeError;

/// The gateway's own settings (the provider's policy is the [`tollgate::stack::Policy`]).
///
/// ```
/// use tollgate_serve::{ClientKey, ServeConfig};
///
/// let mut config = ServeConfig::default();
/// config.clients.push(ClientKey::new("web", "gw-web-key")?.weight(3));
/// config.listen = "0.0.0.0:8787".parse().unwrap();
/// config.check()?; // a public address needs client keys: it has one
/// # Ok::<(), tollgate_serve::ServeError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeConfig {
    /// The address to listen on (default `127.0.0.1:8787`). Anything but loopback needs client
    /// keys.
    pub listen: SocketAddr,
    /// The keys clients authenticate with (never the provider's). None: any caller on loopback
    /// is let in, as one client.
    pub clients: Vec<ClientKey>,
    /// The largest request body accepted, in bytes (default 4 MiB; larger gets 413).
    pub max_body: usize,
    /// How long a client may take to send a request's headers, counted from when the
    /// connection starts waiting for them, so it also closes a kept-alive connection idle that
    /// long (default 30 s).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in (default
    /// 30 s; slower gets 408).
    pub body_timeout: Duration,
    /// Connections served at once (default 1,024); more wait in the listen backlog.
    pub max_connections: usize,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish (default 30 s).
    pub drain_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            clients: Vec::new(),
            max_body: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeConfig {
    /// Checks the rules between fields: a non-loopback address needs client keys, names and
    /// keys are unique, bounds are positive.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.clients.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ServeError::config(
                "listen",
                format!(
                    "{} is reachable from other hosts and no client keys are set: anyone could \
                     spend the provider key's quota. Give --client-key (or TOLLGATE_CLIENT_KEYS, \
                     or [[serve.clients]]), or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        for (i, client) in self.clients.iter().enumerate() {
            let earlier = &self.clients[..i];
            if earlier.iter().any(|c| c.name == client.name) {
                return Err(ServeError::config(
                    "clients",
                    format!("two clients are named `{}`", client.name),
                ));
            }
            if earlier.iter().any(|c| c.key == client.key) {
                return Err(ServeError::config(
                    "clients",
                    format!("clients `{}` and another have the same key", client.name),
                ));
            }
        }
        for (field, zero) in [
            ("max_body", self.max_body == 0),
            ("max_connections", self.max_connections == 0),
            ("header_timeout", self.header_timeout.is_zero()),
            ("body_timeout", self.body_timeout.is_zero()),
        ] {
            if zero {
                return Err(ServeError::config(field, "must be more than zero".into()));
            }
        }
        Ok(())
    }
}

/// A client's gateway key: its name (in logs and metrics, never the key), its weight in the fair
/// share of the provider's quota, and optionally limits of its own.
///
/// ```
/// use tollgate::rate_limit::{LimitConfig, Rate};
/// use tollgate_serve::ClientKey;
///
/// let mut own = LimitConfig::default();
/// own.requests = Some(Rate::per_minute(60));
/// let client = ClientKey::new("batch", "gw-batch-key")?.weight(1).limits(own);
/// assert_eq!(client.name(), "batch");
/// assert!(!format!("{client:?}").contains("gw-batch-key"));
/// # Ok::<(), tollgate_serve::ServeError>(())
/// ```
#[derive(Clone)]
pub struct ClientKey {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) weight: u32,
    pub(crate) limits: Option<LimitConfig>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("weight", &self.weight)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ClientKey {
    /// The client `name` with `key`, weight 1, no limits of its own. The key must be a valid
    /// header value of at least 8 characters.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Result<Self, ServeError> {
        let (name, key) = (name.into(), key.into());
        if name.is_empty() {
            return Err(ServeError::config(
                "clients",
                "a client needs a name".into(),
            ));
        }
        if key.len() < 8 || http::HeaderValue::from_str(&key).is_err() || key.contains(' ') {
            return Err(ServeError::config(
                "clients",
                format!(
                    "the key of client `{name}` must be 8 or more visible characters, no spaces"
                ),
            ));
        }
        Ok(ClientKey {
            name,
            key,
            weight: 1,
            limits: None,
        })
    }

    /// Parses `name=key` (or a bare key, named `client-N` by its place `n`), the form of
    /// `--client-key` and `TOLLGATE_CLIENT_KEYS` (comma-separated).
    ///
    /// ```
    /// use tollgate_serve::ClientKey;
    ///
    /// assert_eq!(ClientKey::parse("web=gw-0123456789", 1)?.name(), "web");
    /// assert_eq!(ClientKey::parse("gw-0123456789", 2)?.name(), "client-2");
    /// assert!(ClientKey::parse("web=short", 1).is_err());
    /// # Ok::<(), tollgate_serve::ServeError>(())
    /// ```
    pub fn parse(text: &str, n: usize) -> Result<Self, ServeError> {
        match text.trim().split_once('=') {
            Some((name, key)) => ClientKey::new(name.trim(), key.trim()),
            None => ClientKey::new(format!("client-{n}"), text.trim()),
        }
    }

    /// This client's weight in the fair share (at least 1): competing clients get admissions in
    /// proportion to their weights.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Limits of this client's own, checked before the shared quota (a request over them is
    /// refused with 429 and `Retry-After` unless `max_wait` says to wait).
    pub fn limits(mut self, limits: LimitConfig) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
