//! [`ConfigError`]: what is wrong with a layer's configuration, and how to fix it.

use std::borrow::Cow;
use std::fmt;

/// A builder was given a value it cannot work with. Names the field, the value and the rule.
///
/// ```
/// use std::time::Duration;
/// use tollgate::retry::BackoffRetryLayer;
///
/// let error = BackoffRetryLayer::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(error.field(), "max_attempts");
/// assert!(error.to_string().contains("at least 1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    message: String,
}

impl ConfigError {
    /// An error about `field`, with a message that says what was wrong and what is allowed.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            field: Cow::Borrowed(field),
            message: message.into(),
        }
    }

    /// The field that is wrong, as the settings value, the builder method and the config key
    /// name it (`max_attempts`; `retry.max_attempts` from a [`Policy`](crate::stack::Policy)).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The same error about a field of `section` (`retry`, `limits`...).
    pub(crate) fn within(self, section: &str) -> Self {
        ConfigError {
            field: Cow::Owned(format!("{section}.{}", self.field)),
            message: self.message,
        }
    }

    /// What was wrong and what is allowed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `Err` with a [`ConfigError`] about `field` when `wrong` holds: a settings value's checks read
/// as a list of rules.
pub(crate) fn reject_if(
    wrong: bool,
    field: &'static str,
    message: impl Into<String>,
) -> Result<(), ConfigError> {
    if wrong {
        Err(ConfigError::new(field, message))
    } else {
        Ok(())
    }
}
