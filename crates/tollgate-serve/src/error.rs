//! [`ServeError`]: why the gateway could not start.

use std::fmt;
use std::net::SocketAddr;

/// Why the gateway could not be built or could not start, saying what to fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// A setting is wrong: `field` is its name (`serve.clients.0.key_env`, `listen`).
    Config {
        /// The setting.
        field: String,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// The address could not be listened on.
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl ServeError {
    pub(crate) fn config(field: &str, message: String) -> Self {
        ServeError::Config {
            field: field.to_owned(),
            message,
        }
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Config { field, message } => write!(f, "invalid `{field}`: {message}"),
            ServeError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Listen { source, .. } => Some(source),
            ServeError::Config { .. } => None,
        }
    }
}

impl ServeError {
    /// The same error about a setting, named `field` in full.
    pub(crate) fn in_field(self, field: &str) -> Self {
        match self {
            ServeError::Config { message, .. } => ServeError::config(field, message),
            other => other,
        }
    }
}
