//! [`Provider`] presets: what each AI provider needs from the layers, so that "OpenAI" is a
//! whole policy rather than four layers to learn.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An AI provider whose quirks tollgate knows.
///
/// Each preset knows its hosts and chat path, how its rate-limit headers and errors read (the
/// [`DefaultClassifier`](crate::classify::DefaultClassifier) understands all of them: Anthropic's
/// 529 and `overloaded_error`, Gemini's `RESOURCE_EXHAUSTED` with `RetryInfo`, OpenAI's billing
/// 429s), how it charges tokens at admission, and sensible retry and breaker defaults (see
/// [`Policy::preset`](crate::stack::Policy::preset)). Limits depend on the account's tier, so
/// they are the user's to give; the rate limiter also learns them from the headers.
///
/// ```
/// use tollgate::Provider;
///
/// let provider: Provider = "anthropic".parse().unwrap();
/// assert_eq!(provider.chat_path(), "/v1/messages");
/// assert!(provider.matches_host("api.anthropic.com"));
/// assert!("chatgpt".parse::<Provider>().unwrap_err().to_string().contains("openai"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI (`api.openai.com`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic (`api.anthropic.com`): 529 overloaded, separate input and output token limits.
    Anthropic,
    /// Groq (`api.groq.com`): its request headers report requests per *day*.
    Groq,
    /// Azure OpenAI (`*.openai.azure.com`): `retry-after-ms`, limits checked over 1-10 s windows.
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    /// Google Gemini's native API (`generativelanguage.googleapis.com`).
    Gemini,
    /// Google Gemini's OpenAI-compatible endpoint.
    #[serde(rename = "gemini-openai")]
    GeminiOpenAi,
    /// Any other OpenAI-compatible server (vLLM, Ollama, LiteLLM, OpenRouter, Together...).
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

impl Provider {
    /// Every preset.
    pub const ALL: [Provider; 7] = [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Groq,
        Provider::AzureOpenAi,
        Provider::Gemini,
        Provider::GeminiOpenAi,
        Provider::OpenAiCompatible,
    ];

    /// The name used in config files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Groq => "groq",
            Provider::AzureOpenAi => "azure-openai",
            Provider::Gemini => "gemini",
            Provider::GeminiOpenAi => "gemini-openai",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    /// The hosts its API is served from (`*.` matches any subdomain).
    pub const fn hosts(self) -> &'static [&'static str] {
        match self {
            Provider::OpenAi => &["api.openai.com"],
            Provider::Anthropic => &["api.anthropic.com"],
            Provider::Groq => &["api.groq.com"],
            Provider::AzureOpenAi => &["*.openai.azure.com"],
            Provider::Gemini | Provider::GeminiOpenAi => &["generativelanguage.googleapis.com"],
            Provider::OpenAiCompatible => &[],
        }
    }

    /// The path of a chat request, relative to the base URL.
    pub const fn chat_path(self) -> &'static str {
        match self {
            Provider::Anthropic => "/v1/messages",
            Provider::Groq => "/openai/v1/chat/completions",
            Provider::GeminiOpenAi => "/v1beta/openai/chat/completions",
            Provider::Gemini => "/v1beta/models/gemini-2.0-flash:generateContent",
            _ => "/v1/chat/completions",
        }
    }

    /// How the provider takes an API key: the header (and its form), the query parameter it
    /// also accepts, and where the `tollgate` command reads the key from.
    pub const fn auth(self) -> Auth {
        const BEARER: Auth = Auth {
            header: "authorization",
            bearer: true,
            query: None,
            env: &["TOLLGATE_API_KEY"],
        };
        match self {
            Provider::OpenAi => Auth {
                env: &["OPENAI_API_KEY", "TOLLGATE_API_KEY"],
                ..BEARER
            },
            Provider::Anthropic => Auth {
                header: "x-api-key",
                bearer: false,
                query: None,
                env: &["ANTHROPIC_API_KEY", "TOLLGATE_API_KEY"],
            },
            Provider::Groq => Auth {
                env: &["GROQ_API_KEY", "TOLLGATE_API_KEY"],
                ..BEARER
            },
            Provider::AzureOpenAi => Auth {
                header: "api-key",
                bearer: false,
                query: None,
                env: &["AZURE_OPENAI_API_KEY", "TOLLGATE_API_KEY"],
            },
            Provider::Gemini => Auth {
                header: "x-goog-api-key",
                bearer: false,
                query: Some("key"),
                env: &["GEMINI_API_KEY", "TOLLGATE_API_KEY"],
            },
            Provider::GeminiOpenAi => Auth {
                env: &["GEMINI_API_KEY", "TOLLGATE_API_KEY"],
                ..BEARER
            },
            Provider::OpenAiCompatible => BEARER,
        }
    }

    /// The provider's public base URL (`None` for a server of your own).
    pub const fn default_endpoint(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("https://api.openai.com"),
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::Groq => Some("https://api.groq.com"),
            Provider::Gemini | Provider::GeminiOpenAi => {
                Some("https://generativelanguage.googleapis.com")
            }
            Provider::AzureOpenAi | Provider::OpenAiCompatible => None,
        }
    }

    /// Puts `key` on `request` the provider's way (and the headers it requires with it, such
    /// as `anthropic-version`), marked sensitive so that no `Debug` output shows it.
    ///
    /// ```
    /// use tollgate::Provider;
    ///
    /// let mut request = http::Request::new(());
    /// Provider::Anthropic.authorize(&mut request, "sk-ant-secret").unwrap();
    /// assert_eq!(request.headers()["x-api-key"], "sk-ant-secret");
    /// assert!(!format!("{request:?}").contains("sk-ant-secret"));
    /// ```
    pub fn authorize<B>(
        self,
        request: &mut http::Request<B>,
        key: &str,
    ) -> Result<(), http::header::InvalidHeaderValue> {
        let auth = self.auth();
        let mut value = if auth.bearer {
            http::HeaderValue::from_str(&format!("Bearer {key}"))?
        } else {
            http::HeaderValue::from_str(key)?
        };
        value.set_sensitive(true);
        let headers = request.headers_mut();
        headers.insert(auth.header, value);
        if self == Provider::Anthropic {
            headers.insert(
                "anthropic-version",
                http::HeaderValue::from_static("2023-06-01"),
            );
        }
        Ok(())
    }

    /// Whether `host` is one of this provider's hosts.
    pub fn matches_host(self, host: &str) -> bool {
        self.hosts()
            .iter()
            .any(|pattern| host_matches(pattern, host))
    }
}

/// How a provider takes an API key (see [`Provider::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Auth {
    /// The request header the key goes in (lowercase).
    pub header: &'static str,
    /// Whether the header's value is `Bearer <key>` rather than the key itself.
    pub bearer: bool,
    /// The query parameter the provider also accepts the key in (Gemini's `?key=`): it is
    /// redacted from any URI tollgate writes out.
    pub query: Option<&'static str>,
    /// The environment variables the `tollgate` command reads the key from, the first set wins.
    pub env: &'static [&'static str],
}

/// Whether `host` matches `pattern`: equal (ignoring case), or a subdomain of `*.suffix`.
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A provider name that is not a preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProvider(pub String);

impl fmt::Display for UnknownProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown provider `{}`; known providers: ", self.0)?;
        let names: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
        f.write_str(&names.join(", "))
    }
}

impl std::error::Error for UnknownProvider {}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(name: &str) -> Result<Self, UnknownProvider> {
        Provider::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownProvider(name.to_owned()))
    }
}
