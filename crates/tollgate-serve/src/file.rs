//! The `[serve]` table of a config file.

use std::time::Duration;

use serde::Deserialize;
use tollgate::rate_limit::LimitConfig;

use crate::config::{ClientKey, ServeConfig};
use crate::error::ServeError;

/// What a config file's `[serve]` table says: the gateway's settings, and which provider table
/// and endpoint it serves.
///
/// ```
/// use tollgate::config::Config;
/// use tollgate_serve::ServeFile;
///
/// let config = Config::from_toml(r#"
/// [providers.openai]
/// preset = "openai"
///
/// [serve]
/// listen = "127.0.0.1:9000"
/// provider = "openai"
/// endpoint = "https://api.openai.com"
/// body_timeout = "10s"
///
/// [[serve.clients]]
/// name = "web"
/// key = "gw-web-0123456789"
/// weight = 3
/// limits = { requests = 60 }
/// "#)?;
/// let serve = ServeFile::from_table(config.serve.as_ref().unwrap())?;
/// assert_eq!(serve.config.listen.port(), 9000);
/// assert_eq!(serve.config.clients[0].name(), "web");
/// assert_eq!(serve.provider.as_deref(), Some("openai"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeFile {
    /// The gateway's settings (defaults where the table is silent).
    pub config: ServeConfig,
    /// The `[providers.NAME]` table to serve (default: the file's first).
    pub provider: Option<String>,
    /// The upstream base URL (default: the provider's own endpoint).
    pub endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    listen: Option<String>,
    provider: Option<String>,
    endpoint: Option<String>,
    max_body: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    drain_timeout: Option<String>,
    max_connections: Option<usize>,
    #[serde(default)]
    clients: Vec<ClientTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientTable {
    name: String,
    /// The key itself (prefer `key_env`: a file is easier to leak than the environment).
    key: Option<String>,
    /// The environment variable holding the key.
    key_env: Option<String>,
    weight: Option<u32>,
    limits: Option<LimitConfig>,
}

impl ServeFile {
    /// Reads a `[serve]` table ([`tollgate::config::Config::serve`]); an error names the field
    /// by its full key (`serve.clients.0.key_env`).
    pub fn from_table(table: &serde_json::Value) -> Result<ServeFile, ServeError> {
        let table: Table = serde_path_to_error::deserialize(table).map_err(|error| {
            let mut field = String::from("serve");
            for segment in error.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        field.push_str(&format!(".{index}"))
                    }
                    serde_path_to_error::Segment::Map { key } => field.push_str(&format!(".{key}")),
                    _ => {}
                }
            }
            ServeError::config(&field, error.into_inner().to_string())
        })?;
        let mut config = ServeConfig::default();
        if let Some(listen) = &table.listen {
            config.listen = listen.parse().map_err(|_| {
                ServeError::config(
                    "serve.listen",
                    format!("`{listen}` is not an address: write IP:PORT, e.g. 127.0.0.1:8787"),
                )
            })?;
        }
        config.max_body = table.max_body.unwrap_or(config.max_body);
        config.max_connections = table.max_connections.unwrap_or(config.max_connections);
        for (field, text, slot) in [
            (
                "serve.header_timeout",
                &table.header_timeout,
                &mut config.header_timeout,
            ),
            (
                "serve.body_timeout",
                &table.body_timeout,
                &mut config.body_timeout,
            ),
            (
                "serve.drain_timeout",
                &table.drain_timeout,
                &mut config.drain_timeout,
            ),
        ] {
            if let Some(text) = text {
                *slot = duration(field, text)?;
            }
        }
        for (i, client) in table.clients.into_iter().enumerate() {
            let key =
                match (client.key, &client.key_env) {
                    (Some(key), None) => key,
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        ServeError::config(
                            &format!("serve.clients.{i}.key_env"),
                            format!("the environment variable {var} is not set"),
                        )
                    })?,
                    _ => return Err(ServeError::config(
                        &format!("serve.clients.{i}"),
                        "give the client's key as `key_env` (an environment variable) or `key`, \
                         one of them"
                            .into(),
                    )),
                };
            let mut key = ClientKey::new(client.name, key)
                .map_err(|e| e.in_field(&format!("serve.clients.{i}")))?
                .weight(client.weight.unwrap_or(1));
            if let Some(limits) = client.limits {
                key = key.limits(limits);
            }
            config.clients.push(key);
        }
        Ok(ServeFile {
            config,
            provider: table.provider,
            endpoint: table.endpoint,
        })
    }
}

fn duration(field: &str, text: &str) -> Result<Duration, ServeError> {
    humantime::parse_duration(text).map_err(|e| {
        ServeError::config(
            field,
            format!("`{text}` is not a duration ({e}): write \"30s\""),
        )
    })
}
