//! Keeping API keys out of logs, errors and debug output.

use http::HeaderMap;

/// The request headers that carry provider credentials: OpenAI-style bearer tokens, Anthropic's
/// `x-api-key`, Azure OpenAI's `api-key`, Gemini's `x-goog-api-key`, and proxy credentials.
pub const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
];

/// Marks every credential header in `headers` as sensitive, so that `Debug` output of the
/// request (and of anything that prints its headers) shows `Sensitive` instead of the key.
///
/// [`ClassifyLayer`](crate::ClassifyLayer) does this to every request it sends.
///
/// ```
/// let mut request = http::Request::new(());
/// request.headers_mut().insert("authorization", "Bearer sk-secret".parse().unwrap());
/// request.headers_mut().insert("x-goog-api-key", "AIza-secret".parse().unwrap());
/// tollgate::redact_secrets(request.headers_mut());
/// let debug = format!("{request:?}");
/// assert!(!debug.contains("sk-secret") && !debug.contains("AIza-secret"));
/// ```
pub fn redact_secrets(headers: &mut HeaderMap) {
    for name in SECRET_HEADERS {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}
