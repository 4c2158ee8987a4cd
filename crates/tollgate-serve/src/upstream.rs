//! Where requests go: the provider's base URL, and the stack they go through.

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use tollgate::retry::RetryError;
use tollgate::BoxError;
use tower::Service;

use crate::error::ServeError;

/// A tollgate stack the gateway can forward through: the standard stack (or any stack ending in
/// [`BackoffRetry`](tollgate::retry::BackoffRetry)) over an HTTP client.
pub trait UpstreamStack:
    Service<
        Request<Full<Bytes>>,
        Response = Response<<Self as UpstreamStack>::Body>,
        Error = RetryError,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The answer's body.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> UpstreamStack for S
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = RetryError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static,
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

/// The provider's base URL: scheme, authority and the path that stands for the client's `/v1`.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The endpoint's path without its trailing slash, `/v1` when it has none.
    prefix: String,
}

impl Upstream {
    pub(crate) fn parse(endpoint: &str) -> Result<Self, ServeError> {
        let invalid = |why: &str| {
            ServeError::config(
                "endpoint",
                format!("`{endpoint}` {why}: write the provider's base URL, e.g. https://api.openai.com/v1"),
            )
        };
        let uri: Uri = endpoint.parse().map_err(|_| invalid("is not a URL"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("has no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(invalid("is neither http nor https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("has no host"))?;
        if uri.query().is_some() {
            return Err(invalid("has a query"));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(Upstream {
            scheme,
            authority,
            prefix: if path.is_empty() {
                "/v1".into()
            } else {
                path.into()
            },
        })
    }

    /// The upstream URI for a client's `/v1/...` request URI.
    pub(crate) fn uri_for(&self, client: &Uri) -> Result<Uri, http::Error> {
        let rest = client
            .path_and_query()
            .map_or("", |p| p.as_str())
            .strip_prefix("/v1")
            .unwrap_or("");
        let mut path = String::with_capacity(self.prefix.len() + rest.len());
        path.push_str(&self.prefix);
        path.push_str(rest);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

/// The HTTP client the gateway forwards with: hyper-util's pooled HTTP/1 client, HTTPS through
/// rustls with Mozilla's roots (plain HTTP too, for a local server), `TCP_NODELAY` set so that a
/// request leaves in one go.
pub type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Builds an [`UpstreamClient`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let client = tollgate_serve::upstream_client();
/// # let _ = client;
/// # }
/// ```
pub fn upstream_client() -> UpstreamClient {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_path_stands_for_v1() {
        let map = |endpoint: &str, path: &str| {
            Upstream::parse(endpoint)
                .unwrap()
                .uri_for(&path.parse().unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(
            map("http://127.0.0.1:9000", "/v1/chat/completions"),
            "http://127.0.0.1:9000/v1/chat/completions"
        );
        assert_eq!(
            map("https://api.groq.com/openai/v1/", "/v1/models?x=1"),
            "https://api.groq.com/openai/v1/models?x=1"
        );
        assert_eq!(
            map(
                "https://generativelanguage.googleapis.com/v1beta/openai",
                "/v1/chat/completions"
            ),
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
        );
        for bad in ["api.openai.com", "ftp://x", "http://x/v1?key=1", ""] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
