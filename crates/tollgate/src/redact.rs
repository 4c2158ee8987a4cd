//! Keeping API keys out of logs, errors and debug output.

use http::HeaderMap;

use crate::Provider;

/// The request headers that carry credentials: every preset's [`Auth::header`]
/// (OpenAI-style bearer tokens, Anthropic's `x-api-key`, Azure OpenAI's `api-key`, Gemini's
/// `x-goog-api-key`), derived from [`Provider::auth`], and proxy credentials; each once.
///
/// [`Auth::header`]: crate::Auth::header
///
/// ```
/// for provider in tollgate::Provider::ALL {
///     assert!(tollgate::SECRET_HEADERS.contains(&provider.auth().header));
/// }
/// assert_eq!(
///     tollgate::SECRET_HEADERS,
///     ["authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"]
/// );
/// ```
pub const SECRET_HEADERS: [&str; UNIQUE] = unique_secret_headers();

/// Every preset's key header, then the proxy's: duplicates included.
const ALL: [&str; Provider::ALL.len() + 1] = {
    let mut headers = ["proxy-authorization"; Provider::ALL.len() + 1];
    let mut i = 0;
    while i < Provider::ALL.len() {
        headers[i] = Provider::ALL[i].auth().header;
        i += 1;
    }
    headers
};

/// How many distinct names [`ALL`] holds.
const UNIQUE: usize = {
    let mut count = 0;
    let mut i = 0;
    while i < ALL.len() {
        if first_of_its_name(i) {
            count += 1;
        }
        i += 1;
    }
    count
};

/// The distinct names of [`ALL`], in order: each header is marked once per request.
const fn unique_secret_headers() -> [&'static str; UNIQUE] {
    let mut headers = [""; UNIQUE];
    let (mut i, mut next) = (0, 0);
    while i < ALL.len() {
        if first_of_its_name(i) {
            headers[next] = ALL[i];
            next += 1;
        }
        i += 1;
    }
    headers
}

/// Whether `ALL[i]` is the first entry with its name.
const fn first_of_its_name(i: usize) -> bool {
    let mut j = 0;
    while j < i {
        if same(ALL[j], ALL[i]) {
            return false;
        }
        j += 1;
    }
    true
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut k = 0;
    while k < a.len() {
        if a[k] != b[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// The query parameters that carry credentials (Gemini's `key`), derived from
/// [`Provider::auth`].
fn secret_query_parameters() -> impl Iterator<Item = &'static str> {
    Provider::ALL.into_iter().filter_map(|p| p.auth().query)
}

/// `uri` with the value of every credential query parameter (Gemini's `?key=`) replaced by
/// `REDACTED`, for writing it out.
///
/// ```
/// let uri: http::Uri = "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?alt=sse&key=AIza-secret".parse().unwrap();
/// assert_eq!(
///     tollgate::redact_uri(&uri),
///     "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?alt=sse&key=REDACTED"
/// );
/// ```
pub fn redact_uri(uri: &http::Uri) -> String {
    let text = uri.to_string();
    let Some((before, query)) = text.split_once('?') else {
        return text;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret_query_parameters().any(|secret| secret == name) => {
                format!("{name}=REDACTED")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{before}?{}", pairs.join("&"))
}

/// Marks every credential header in `headers` as sensitive, so that `Debug` output of the
/// request (and of anything that prints its headers) shows `Sensitive` instead of the key.
///
/// [`ClassifyLayer`](crate::classify::ClassifyLayer) does this to every request it sends.
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
    // One pass over the request's few headers, comparing names, costs less than looking up
    // each secret name (which parses and hashes it) on every request.
    for (name, value) in headers.iter_mut() {
        if SECRET_HEADERS.contains(&name.as_str()) {
            value.set_sensitive(true);
        }
    }
}
