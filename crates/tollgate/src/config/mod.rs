//! Provider policies from a TOML or JSON file, so they swap per provider without code changes
//! (feature `config`, on by default).
//!
//! Each `[providers.NAME]` table starts from a [`Provider`](crate::Provider) preset
//! (`preset = "anthropic"`, default `openai-compatible`) and overrides what it names, field by
//! field; everything else keeps the preset's value. The tables are the layers' own settings
//! values ([`LimitConfig`](crate::rate_limit::LimitConfig),
//! [`RetryConfig`](crate::retry::RetryConfig),
//! [`BreakerConfig`](crate::circuit_breaker::BreakerConfig)) and their keys are those values'
//! field names, so everything a file sets can be set in code and the other way round.
//! Durations are written `"500ms"`, `"30s"`, `"2m"`; rates `500` (per minute), `"500/min"` or
//! `{ rate = "50/s", burst = 5 }`.
//!
//! ```toml
//! [providers.openai]
//! preset = "openai"
//!
//! [providers.openai.limits]
//! requests = "500/min"   # or 500: a number is per minute
//! tokens = 200000
//! concurrency = 16
//! adaptive = true        # adapt below 500 RPM on refusals (the default; false keeps it fixed)
//!
//! [providers.openai.retry]
//! max_attempts = 4
//! base = "250ms"
//! deadline = "2m"
//! budget = { ratio = 0.1 }  # or false for none
//!
//! [providers.claude]
//! preset = "anthropic"
//! limits = { requests = 50, input_tokens = 40000, output_tokens = 8000 }
//! breaker = { consecutive_failures = 5, break_duration = "20s" }
//!
//! [prices."claude-haiku-4-5"]  # US dollars per million tokens, for run estimates
//! input = 1.0
//! output = 5.0
//! ```
//!
//! # Errors
//!
//! Nothing panics on any input. A syntax error is reported with its line and column. A value of
//! the wrong type or range (a zero rate, an unknown key, an unknown preset, a malformed
//! duration) or one that breaks a rule between fields (a cap below the base, a ratio outside
//! 0..1) names the field by its full config key, such as `providers.openai.retry.cap`, and, in
//! TOML, where it is written.
//!
//! ```
//! use tollgate::config::{Config, ConfigFileError};
//!
//! let error = Config::from_toml("[providers.x.limits]\nrequests = 0\n").unwrap_err();
//! assert!(matches!(&error, ConfigFileError::Invalid { field, .. } if field == "providers.x.limits.requests"));
//! assert!(error.to_string().contains("line 2"), "{error}");
//! ```

mod overlay;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::stack::Policy;

/// Named provider policies, checked and ready to build.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The policies by provider name, as written in the file.
    pub providers: BTreeMap<String, Policy>,
    /// Prices by model name (`[prices.MODEL]`), to estimate what a run costs.
    pub prices: BTreeMap<String, Price>,
    /// The targets to fall back on, in order (`[[fallback]]`): see
    /// [`FallbackLayer`](crate::fallback::FallbackLayer).
    pub fallback: Vec<FallbackEntry>,
    /// The `[serve]` table as written, for the gateway (`tollgate serve`, the `tollgate-serve`
    /// crate), which checks it: the library only keeps it.
    pub serve: Option<serde_json::Value>,
}

/// One target of a fallback chain in a config file (`[[fallback]]`): where, with which
/// provider's policy, asking for which model.
///
/// ```
/// use tollgate::config::Config;
///
/// let config = Config::from_toml(
///     "[providers.openai]\npreset = \"openai\"\n\
///      [[fallback]]\nendpoint = \"https://west.example.com\"\nprovider = \"openai\"\nmodel = \"gpt-4o\"\n",
/// )?;
/// assert_eq!(config.fallback[0].model.as_deref(), Some("gpt-4o"));
/// # Ok::<(), tollgate::config::ConfigFileError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FallbackEntry {
    /// The target's base URL (`https://host[:port][/prefix]`).
    pub endpoint: String,
    /// The provider table whose policy the target's stack is built from (default: the one in
    /// use).
    #[serde(default)]
    pub provider: Option<String>,
    /// The model to ask this target for (default: the request's).
    #[serde(default)]
    pub model: Option<String>,
}

/// What a model's tokens cost, in US dollars per million (`[prices.MODEL]` in a config file).
///
/// ```
/// use tollgate::config::Config;
///
/// let config = Config::from_toml("[prices.\"gpt-4o-mini\"]\ninput = 0.15\noutput = 0.6\n")?;
/// let price = config.prices["gpt-4o-mini"];
/// assert!((price.cost(1_000_000, 500_000) - 0.45).abs() < 1e-9);
/// # Ok::<(), tollgate::config::ConfigFileError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Price {
    /// Dollars per million input tokens.
    pub input: f64,
    /// Dollars per million output tokens.
    pub output: f64,
}

impl Price {
    /// The cost of `input` and `output` tokens, in dollars.
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input + output as f64 * self.output) / 1e6
    }

    fn check(&self) -> Result<(), String> {
        if [self.input, self.output]
            .iter()
            .all(|price| price.is_finite() && *price >= 0.0)
        {
            Ok(())
        } else {
            Err("prices are dollars per million tokens: numbers of zero or more".into())
        }
    }
}

/// Why a config could not be loaded: which file, where, and what was wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid for the format, or a value has the wrong type or range. The
    /// message includes the line and column.
    Parse {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// What the parser said, with the position.
        message: String,
    },
    /// A value is of the wrong type or range, or breaks a rule between fields.
    Invalid {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// The full path of the field, its config key: `providers.openai.retry.cap`.
        field: String,
        /// Where the field is written (line and column, from 1), when the format tells.
        position: Option<(usize, usize)>,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// The file's extension names no format tollgate reads.
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = |path: &Option<PathBuf>| {
            path.as_ref()
                .map(|p| format!("{}: ", p.display()))
                .unwrap_or_default()
        };
        match self {
            ConfigFileError::Io { path, source } => {
                write!(f, "cannot read config {}: {source}", path.display())
            }
            ConfigFileError::Parse { path, message } => {
                write!(f, "{}{}", place(path), message.trim_end())
            }
            ConfigFileError::Invalid {
                path,
                field,
                position,
                message,
            } => {
                let at = position
                    .map(|(line, column)| format!(" (line {line}, column {column})"))
                    .unwrap_or_default();
                write!(f, "{}invalid `{field}`{at}: {message}", place(path))
            }
            ConfigFileError::UnknownFormat { path } => write!(
                f,
                "cannot tell the format of {}: name it *.toml or *.json",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ConfigFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigFileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Config {
    /// Reads a `.toml` or `.json` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let result = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Config::from_toml(&text),
            Some("json") => Config::from_json(&text),
            _ => {
                return Err(ConfigFileError::UnknownFormat {
                    path: path.to_owned(),
                })
            }
        };
        result.map_err(|error| error.in_file(path))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigFileError> {
        let value: serde_json::Value =
            toml::from_str(text).map_err(|error| ConfigFileError::Parse {
                path: None,
                message: error.to_string(),
            })?;
        overlay::config(value, &|path: &[String]| overlay::toml_position(text, path))
    }

    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Config, ConfigFileError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| ConfigFileError::Parse {
                path: None,
                message: error.to_string(),
            })?;
        overlay::config(value, &|_: &[String]| None)
    }

    /// The policy named `name`, or an error listing the names there are.
    pub fn provider(&self, name: &str) -> Result<&Policy, ConfigFileError> {
        self.providers
            .get(name)
            .ok_or_else(|| ConfigFileError::Invalid {
                path: None,
                field: format!("providers.{name}"),
                position: None,
                message: format!(
                    "no such provider in the config; it defines: {}",
                    self.providers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

impl ConfigFileError {
    fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigFileError::Parse { message, .. } => ConfigFileError::Parse {
                path: Some(file.to_owned()),
                message,
            },
            ConfigFileError::Invalid {
                field,
                position,
                message,
                ..
            } => ConfigFileError::Invalid {
                path: Some(file.to_owned()),
                field,
                position,
                message,
            },
            other => other,
        }
    }
}
