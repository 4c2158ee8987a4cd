//! Provider policies from a TOML or JSON file, so they swap per provider without code changes.
//!
//! Each `[providers.NAME]` table starts from a [`Provider`] preset (`preset = "anthropic"`) and
//! overrides what it names; everything else keeps the preset's value. The result is a
//! [`Policy`] per provider, the same value code builds, so the config is a thin layer over the
//! builders and everything it sets can be set in code.
//!
//! ```toml
//! [providers.openai]
//! preset = "openai"
//!
//! [providers.openai.limits]
//! rpm = 500
//! tpm = 200000
//! concurrency = 16
//! adaptive = true     # adapt below 500 RPM on refusals (the default; false keeps it fixed)
//!
//! [providers.openai.retry]
//! max_attempts = 4
//! base = "250ms"
//! deadline = "2m"
//!
//! [providers.claude]
//! preset = "anthropic"
//! limits = { rpm = 50, tpm = 40000 }
//! breaker = { consecutive_failures = 5, break_duration = "20s" }
//! ```
//!
//! # Errors
//!
//! Nothing panics on any input. A value of the wrong type or range (a zero rate, an unknown key,
//! an unknown preset, a malformed duration) is reported with its line and column by the parser.
//! Rules between fields (a cap below the base, a ratio outside 0..1) are checked when the
//! policies are built and name the field's full path, such as
//! `providers.openai.retry.cap`.
//!
//! ```
//! use tollgate::config::Config;
//!
//! let error = Config::from_toml("[providers.x.limits]\nrpm = 0\n").unwrap_err();
//! assert!(error.to_string().contains("line 2"), "{error}");
//! ```

mod model;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use model::{
    BreakerSection, BudgetSection, ConfigFile, LimitsSection, ProviderSection, RetrySection,
};

use crate::circuit_breaker::{SlowCalls, Trip, Window};
use crate::rate_limit::Rate;
use crate::stack::Policy;
use crate::{ConfigError, Provider};

/// Named provider policies, checked and ready to build.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The policies by provider name, as written in the file.
    pub providers: BTreeMap<String, Policy>,
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
    /// A value breaks a rule between fields.
    Invalid {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// The full path of the field, such as `providers.openai.retry.cap`.
        field: String,
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
                message,
            } => write!(f, "{}invalid `{field}`: {message}", place(path)),
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
        let file: ConfigFile = toml::from_str(text).map_err(|error| ConfigFileError::Parse {
            path: None,
            message: error.to_string(),
        })?;
        Config::from_file(file)
    }

    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Config, ConfigFileError> {
        let file: ConfigFile =
            serde_json::from_str(text).map_err(|error| ConfigFileError::Parse {
                path: None,
                message: error.to_string(),
            })?;
        Config::from_file(file)
    }

    /// Applies every section to its preset and checks the result by building it.
    pub fn from_file(file: ConfigFile) -> Result<Config, ConfigFileError> {
        let mut providers = BTreeMap::new();
        for (name, section) in file.providers {
            let policy = section
                .to_policy()
                .map_err(|error| ConfigFileError::Invalid {
                    path: None,
                    field: format!("providers.{name}.{}", config_key(error.field())),
                    message: error.message().to_owned(),
                })?;
            providers.insert(name, policy);
        }
        Ok(Config { providers })
    }

    /// The policy named `name`, or an error listing the names there are.
    pub fn provider(&self, name: &str) -> Result<&Policy, ConfigFileError> {
        self.providers
            .get(name)
            .ok_or_else(|| ConfigFileError::Invalid {
                path: None,
                field: format!("providers.{name}"),
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

/// The config key of a builder field named in a [`ConfigError`].
fn config_key(field: &str) -> String {
    let renamed = match field {
        "trip.ratio" => "breaker.failure_ratio",
        "trip.consecutive_failures" => "breaker.consecutive_failures",
        "trip.min_calls" => "breaker.min_calls",
        "trip.window" => "breaker.window",
        "slow_calls.ratio" => "breaker.slow_call_ratio",
        "slow_calls.threshold" => "breaker.slow_call_threshold",
        "grow_break.factor" => "breaker.break_growth",
        "grow_break.cap" => "breaker.break_cap",
        "break_duration" | "probes" => return format!("breaker.{field}"),
        "requests" => "limits.rpm",
        "tokens" => "limits.tpm",
        "concurrency" | "max_queue" | "limits" => return format!("limits.{field}"),
        other
            if other.starts_with("limits.")
                || other.starts_with("breaker.")
                || other.starts_with("retry.") =>
        {
            return other.to_owned()
        }
        other => return format!("retry.{other}"),
    };
    renamed.to_owned()
}

impl ConfigFileError {
    fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigFileError::Parse { message, .. } => ConfigFileError::Parse {
                path: Some(file.to_owned()),
                message,
            },
            ConfigFileError::Invalid { field, message, .. } => ConfigFileError::Invalid {
                path: Some(file.to_owned()),
                field,
                message,
            },
            other => other,
        }
    }
}

impl ProviderSection {
    /// The preset's policy with this section's overrides, checked by building its layers.
    pub fn to_policy(&self) -> Result<Policy, ConfigError> {
        let mut policy = Policy::preset(self.preset.unwrap_or(Provider::OpenAiCompatible));
        if let Some(hosts) = &self.hosts {
            policy.hosts = hosts.clone();
        }
        self.limits.apply(&mut policy)?;
        self.retry.apply(&mut policy)?;
        self.breaker.apply(&mut policy)?;
        policy.layer()?;
        Ok(policy)
    }
}

impl LimitsSection {
    fn apply(&self, policy: &mut Policy) -> Result<(), ConfigError> {
        let settings = &mut policy.limits;
        let rate = |per_minute: u64, burst: Option<std::num::NonZeroU64>| {
            let rate = Rate::per_minute(per_minute);
            burst.map_or(rate, |b| rate.with_burst(b.get()))
        };
        if let Some(rpm) = self.rpm {
            settings.limits.requests = Some(rate(rpm.get(), self.burst));
        } else if self.burst.is_some() {
            return Err(ConfigError::new(
                "limits.burst",
                "a burst needs `rpm` to go with it",
            ));
        }
        if let Some(tpm) = self.tpm {
            settings.limits.tokens = Some(rate(tpm.get(), self.token_burst));
        } else if self.token_burst.is_some() {
            return Err(ConfigError::new(
                "limits.token_burst",
                "a token burst needs `tpm` to go with it",
            ));
        }
        if let Some(concurrency) = self.concurrency {
            settings.limits.concurrency = Some(concurrency.get());
        }
        if let Some(headroom) = self.headroom {
            settings.limits.headroom = headroom;
        }
        settings.max_wait = self.max_wait.or(settings.max_wait);
        if let Some(max_queue) = self.max_queue {
            settings.max_queue = Some(usize::try_from(max_queue.get()).unwrap_or(usize::MAX));
        }
        if let Some(adopt) = self.adopt_provider_limits {
            settings.adopt_provider_limits = adopt;
        }
        match self.adaptive {
            Some(true) => {
                settings.limits.adaptive = Some(crate::rate_limit::Adaptive::default());
            }
            Some(false) => settings.limits.adaptive = None,
            None => {}
        }
        if let Some(sum) = self.sum_token_estimate {
            settings.sum_token_estimate = sum;
        }
        Ok(())
    }
}

impl RetrySection {
    fn apply(&self, policy: &mut Policy) -> Result<(), ConfigError> {
        let retry = &mut policy.retry;
        if let Some(attempts) = self.max_attempts {
            retry.max_attempts = attempts.get();
        }
        retry.base = self.base.unwrap_or(retry.base);
        retry.factor = self.factor.unwrap_or(retry.factor);
        retry.cap = self.cap.unwrap_or(retry.cap);
        retry.ceiling = self.ceiling.unwrap_or(retry.ceiling);
        if let Some(jitter) = self.jitter {
            retry.jitter = jitter.into();
        }
        if let Some(over) = self.over_ceiling {
            retry.over_ceiling = over.into();
        }
        retry.deadline = self.deadline.or(retry.deadline);
        retry.attempt_timeout = self.attempt_timeout.or(retry.attempt_timeout);
        match &self.budget {
            None | Some(BudgetSection::Enabled(true)) => {}
            Some(BudgetSection::Enabled(false)) => retry.budget = None,
            Some(BudgetSection::Settings {
                ttl,
                min_per_sec,
                ratio,
            }) => {
                retry.budget = Some((*ttl, *min_per_sec, *ratio));
            }
        }
        Ok(())
    }
}

impl BreakerSection {
    fn apply(&self, policy: &mut Policy) -> Result<(), ConfigError> {
        let breaker = &mut policy.breaker;
        let ratio_fields = self.failure_ratio.is_some()
            || self.window_calls.is_some()
            || self.window.is_some()
            || self.min_calls.is_some();
        match (self.consecutive_failures, ratio_fields) {
            (Some(_), true) => {
                return Err(ConfigError::new(
                    "breaker.consecutive_failures",
                    "choose consecutive_failures or failure_ratio (with its window), not both",
                ))
            }
            (Some(n), false) => breaker.trip = Trip::ConsecutiveFailures(n.get()),
            (None, true) => {
                let (ratio, window, min_calls) = match breaker.trip {
                    Trip::FailureRatio {
                        ratio,
                        window,
                        min_calls,
                    } => (ratio, window, min_calls),
                    _ => (0.5, Window::Count(100), 20),
                };
                if self.window_calls.is_some() && self.window.is_some() {
                    return Err(ConfigError::new(
                        "breaker.window",
                        "give window_calls or window (a duration), not both",
                    ));
                }
                let window = match (self.window_calls, self.window) {
                    (Some(calls), _) => Window::Count(calls.get()),
                    (_, Some(duration)) => Window::time(duration),
                    _ => window,
                };
                breaker.trip = Trip::FailureRatio {
                    ratio: self.failure_ratio.unwrap_or(ratio),
                    window,
                    min_calls: self.min_calls.map_or(min_calls, |m| m.get()),
                };
            }
            (None, false) => {}
        }
        match (self.slow_call_threshold, self.slow_call_ratio) {
            (Some(threshold), Some(ratio)) => {
                breaker.slow_calls = Some(SlowCalls { threshold, ratio })
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::new(
                    "breaker.slow_call_threshold",
                    "slow_call_threshold and slow_call_ratio go together",
                ))
            }
        }
        breaker.break_duration = self.break_duration.unwrap_or(breaker.break_duration);
        match (self.break_growth, self.break_cap) {
            (Some(factor), cap) => {
                breaker.growth = Some((factor, cap.unwrap_or(breaker.break_duration * 10)))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "breaker.break_cap",
                    "a cap needs break_growth",
                ))
            }
            (None, None) => {}
        }
        if let Some(probes) = self.probes {
            breaker.probes = probes.get();
        }
        Ok(())
    }
}
