//! [`Target`]: one place a request can be served, and [`ServedBy`]: where it was.

use std::sync::Arc;

use bytes::Bytes;
use http::Uri;

use crate::ConfigError;

/// One target of a fallback chain: a name, a base URL, and optionally a model to ask for.
///
/// ```
/// use tollgate::fallback::Target;
///
/// let target = Target::new("azure-east", "https://east.example.com/openai")?.model("gpt-4o");
/// assert_eq!(target.name(), "azure-east");
/// assert!(Target::new("bad", "not a url").is_err());
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Target {
    name: Arc<str>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: Arc<str>,
    model: Option<Arc<str>>,
}

impl Target {
    /// A target called `name` at `base` (`http(s)://host[:port][/prefix]`): a request's path
    /// and query are appended to it.
    pub fn new(name: impl Into<Arc<str>>, base: &str) -> Result<Self, ConfigError> {
        let invalid = || {
            ConfigError::new(
                "target",
                format!("`{base}` is not a base URL: write it like https://api.example.com"),
            )
        };
        let uri: Uri = base.parse().map_err(|_| invalid())?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(invalid());
        };
        let prefix = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(Target {
            name: name.into(),
            scheme,
            authority,
            prefix: prefix.into(),
            model: None,
        })
    }

    /// Asks this target for `model` instead of the one the request names.
    pub fn model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The request's URI at this target.
    pub(crate) fn uri(&self, original: &Uri) -> Option<Uri> {
        let path = original.path_and_query().map_or("/", |p| p.as_str());
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path}", self.prefix))
            .build()
            .ok()
    }

    /// The request's body at this target: the same, or with its `model` replaced.
    pub(crate) fn body(&self, body: &Bytes) -> Bytes {
        let Some(model) = &self.model else {
            return body.clone();
        };
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(mut json)) => {
                json.insert("model".into(), serde_json::Value::String(model.to_string()));
                Bytes::from(serde_json::Value::Object(json).to_string())
            }
            _ => body.clone(),
        }
    }
}

/// Which target served a request, and why the ones before it were skipped: a response
/// extension.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServedBy {
    /// The target's name.
    pub target: Arc<str>,
    /// Its place in the chain (0: the first).
    pub index: usize,
    /// The targets tried before it.
    pub skipped: Vec<Skipped>,
}

/// A target the request moved on from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The target's name.
    pub target: Arc<str>,
    /// Why: `breaker_open`, `quota`, `context_window`, or `gave_up_` and the last verdict
    /// (`gave_up_overloaded`, `gave_up_server_error`...).
    pub reason: &'static str,
}
