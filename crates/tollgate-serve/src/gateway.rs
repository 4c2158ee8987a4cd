//! [`Gateway`]: one request in, one answer out: checked, forwarded through the stack, or refused
//! in the client's provider shape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use metrics_exporter_prometheus::PrometheusHandle;
use tollgate::classify::response_verdict;
use tollgate::fallback::ServedBy;
use tollgate::rate_limit::{EstimateTokens, OnStoreError, RateLimitBody, RateLimitHandle, Store};
use tollgate::retry::{FailFast, RetryInfo};
use tollgate::{BoxError, Provider};
use tower::{Layer, ServiceExt};
use tracing::Instrument;

use crate::clients::{Client, Clients};
use crate::config::{ClientKey, ServeConfig};
use crate::error::ServeError;
use crate::refuse::{gave_up, PRIORITY_HEADER, SERVED_BY_HEADER};
use crate::shape::Shape;
use crate::upstream::{Upstream, UpstreamStack};

/// What the gateway answers with: the provider's answer as it streams in (through the client's
/// own limiter when it has one), or an answer of the gateway's own.
pub type GatewayBody<B> = Either<Either<B, RateLimitBody<B>>, Full<Bytes>>;

/// The gateway: checks a request (path, client key, size, JSON), forwards it upstream through a
/// tollgate stack with the provider's key in place of the client's, and answers with the
/// provider's response or with a refusal in the client's provider shape. Clones share
/// everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tollgate::stack::Policy;
/// use tollgate::Provider;
/// use tollgate_serve::{ClientKey, Gateway};
/// use tower::Layer;
///
/// let mock = tollgate_mock::MockServer::spawn(Default::default()).await?;
/// let stack = Policy::preset(Provider::OpenAi).layer()?.layer(tollgate_e2e::http_client());
/// let gateway = Gateway::builder(Provider::OpenAi, &mock.url())
///     .provider_key("sk-provider")
///     .client(ClientKey::new("web", "gw-web-0123456789")?)
///     .build(stack)?;
/// let request = http::Request::post("/v1/chat/completions")
///     .header("authorization", "Bearer gw-web-0123456789")
///     .body(http_body_util::Full::new(bytes::Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[]}"#)))?;
/// assert_eq!(gateway.handle(request).await.status(), 200);
/// # Ok(())
/// # }
/// ```
pub struct Gateway<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Gateway<S> {
    fn clone(&self) -> Self {
        Gateway {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> std::fmt::Debug for Gateway<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("provider", &self.shared.provider)
            .field("upstream", &self.shared.upstream)
            .field("clients", &self.shared.clients)
            .finish_non_exhaustive()
    }
}

struct Shared<S> {
    stack: S,
    provider: Provider,
    upstream: Upstream,
    /// The provider's key, in the header it goes in (and the headers it requires with it).
    provider_auth: Vec<(HeaderName, HeaderValue)>,
    clients: Clients,
    max_body: usize,
    body_timeout: Duration,
    metrics: Option<PrometheusHandle>,
    limit: Option<RateLimitHandle>,
    answers: Answers,
    /// Whether the caller's key headers are taken off: always when the gateway has client keys
    /// or a provider key; without either it is a transparent proxy for the caller's key.
    strip_caller_keys: bool,
    draining: AtomicBool,
}

/// Builds a [`Gateway`]: see there.
#[derive(Debug)]
pub struct GatewayBuilder {
    provider: Provider,
    endpoint: String,
    key: Option<String>,
    clients: Vec<ClientKey>,
    max_body: usize,
    body_timeout: Duration,
    metrics: Option<PrometheusHandle>,
    limit: Option<RateLimitHandle>,
    client_store: Option<(Arc<dyn Store>, OnStoreError)>,
}

impl Gateway<()> {
    /// A gateway to `provider`'s API at `endpoint`: its base URL as the provider's SDK takes it
    /// (`https://api.openai.com/v1`; with no path, `/v1`). A client's `/v1/chat/completions`
    /// goes to the endpoint's path followed by `/chat/completions`.
    pub fn builder(provider: Provider, endpoint: &str) -> GatewayBuilder {
        let defaults = ServeConfig::default();
        GatewayBuilder {
            provider,
            endpoint: endpoint.to_owned(),
            key: None,
            clients: Vec::new(),
            max_body: defaults.max_body,
            body_timeout: defaults.body_timeout,
            metrics: None,
            limit: None,
            client_store: None,
        }
    }
}

impl GatewayBuilder {
    /// The provider's API key, put on every request upstream the provider's way. Without it,
    /// requests go upstream with no key (a local server that needs none).
    pub fn provider_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// A client key the gateway accepts (see [`ClientKey`]). With none, any caller is let in.
    pub fn client(mut self, client: ClientKey) -> Self {
        self.clients.push(client);
        self
    }

    /// The client keys, body size and body timeout of `config`.
    pub fn config(mut self, config: &ServeConfig) -> Self {
        self.clients.extend(config.clients.iter().cloned());
        self.max_body = config.max_body;
        self.body_timeout = config.body_timeout;
        self
    }

    /// Where `/metrics` renders from (a Prometheus recorder's handle); without it, 404.
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The stack's rate limiter, so that `/readyz` says 503 while its shared store is down.
    pub fn limit_handle(mut self, handle: RateLimitHandle) -> Self {
        self.limit = Some(handle);
        self
    }

    /// Keeps the clients' own limits ([`ClientKey::limits`]) in `store`, shared with every
    /// replica that uses it, as the stack's quota is with `--redis`: without it, each replica
    /// would let a client have its limits once more. Each client's quota is named
    /// `client:NAME` there, apart from the provider's and from each other's; `on_error` says
    /// what they do while the store is down. A client's concurrency bound stays each replica's
    /// own, as the stack's does (see [`Store`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tollgate::rate_limit::{LimitConfig, OnStoreError, Rate};
    /// use tollgate::Provider;
    /// use tollgate_serve::{ClientKey, Gateway};
    ///
    /// // The store the stack's limiter uses too (connected on first use).
    /// let store = tollgate_redis::RedisStore::builder("redis://127.0.0.1:6379/").build()?;
    /// let mut own = LimitConfig::default();
    /// own.requests = Some(Rate::per_minute(60));
    /// let builder = Gateway::builder(Provider::OpenAi, "https://api.openai.com/v1")
    ///     .client(ClientKey::new("batch", "gw-batch-0123456789")?.limits(own))
    ///     .client_store(store, OnStoreError::FailClosed);
    /// # let _ = builder;
    /// # Ok(())
    /// # }
    /// ```
    pub fn client_store(mut self, store: impl Store, on_error: OnStoreError) -> Self {
        self.client_store = Some((Arc::new(store), on_error));
        self
    }

    /// The gateway over `stack` (a tollgate stack over an HTTP client).
    pub fn build<S>(self, stack: S) -> Result<Gateway<S>, ServeError> {
        let upstream = Upstream::parse(&self.endpoint)?;
        let provider_auth = match &self.key {
            None => Vec::new(),
            Some(key) => {
                let mut probe = Request::new(());
                self.provider.authorize(&mut probe, key).map_err(|_| {
                    ServeError::config(
                        "provider key",
                        "the provider's API key is not a valid header value (a stray newline \
                         or quote?)"
                            .into(),
                    )
                })?;
                probe
                    .headers()
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            }
        };
        let strip_caller_keys = !self.clients.is_empty() || self.key.is_some();
        Ok(Gateway {
            shared: Arc::new(Shared {
                strip_caller_keys,
                stack,
                provider: self.provider,
                upstream,
                provider_auth,
                clients: Clients::new(&self.clients, self.client_store.as_ref())?,
                max_body: self.max_body,
                body_timeout: self.body_timeout,
                metrics: self.metrics,
                limit: self.limit,
                answers: Answers::default(),
                draining: AtomicBool::new(false),
            }),
        })
    }
}

/// What the gateway reads of a JSON request body: enough to name the span, while checking the
/// whole body is JSON.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
}

impl<S> Gateway<S> {
    /// From now on `/readyz` answers 503, so that a load balancer sends new work elsewhere
    /// while the requests in flight finish.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// An answer of the gateway's own in the client's `shape`, counted.
    fn refuse<B>(
        &self,
        shape: Shape,
        status: StatusCode,
        retry_after: Option<Duration>,
        message: &str,
    ) -> Response<Either<B, Full<Bytes>>> {
        self.shared.answers.count(status);
        shape.error(status, retry_after, message).map(Either::Right)
    }

    /// Whether it lets any caller in (no client keys).
    pub fn is_open(&self) -> bool {
        matches!(self.shared.clients, Clients::Open(_))
    }

    fn ready(&self) -> bool {
        !self.shared.draining.load(Ordering::Relaxed)
            && !self.shared.limit.as_ref().is_some_and(|l| l.store_down())
    }
}

impl<S> Gateway<S>
where
    S: UpstreamStack,
{
    /// Answers `request`. Every request ends in an answer: the provider's, or the gateway's own
    /// in the client's provider shape.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<GatewayBody<S::Body>>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let shared = &*self.shared;
        let path = request.uri().path();
        let shape = Shape::of(path);
        match path {
            "/healthz" => return plain(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready() => return plain(StatusCode::OK, "ready\n"),
            "/readyz" => return plain(StatusCode::SERVICE_UNAVAILABLE, "draining or store down\n"),
            "/metrics" => {
                return match &shared.metrics {
                    Some(handle) => plain(StatusCode::OK, handle.render()),
                    None => plain(StatusCode::NOT_FOUND, "metrics are off\n"),
                }
            }
            _ => {}
        }
        if !path.starts_with("/v1/") {
            return self.refuse(
                shape,
                StatusCode::NOT_FOUND,
                None,
                "unknown path: the gateway serves the provider API under /v1/ \
                 (/v1/chat/completions, /v1/messages, ...) and /healthz, /readyz, /metrics",
            );
        }
        let Some(client) = shared.clients.find(request.headers()) else {
            return self.refuse(
                shape,
                StatusCode::UNAUTHORIZED,
                None,
                "invalid API key: give one of the gateway's client keys (the gateway holds \
                 the provider's key)",
            );
        };
        let client = Arc::clone(client);
        let (parts, body) = request.into_parts();
        let body = match self.read_body(&parts, body).await {
            Ok(body) => body,
            Err((status, message)) => return self.refuse(shape, status, None, &message),
        };
        // The body is read for the span (and checked to be JSON) once.
        let mut peek = Peek {
            model: None,
            stream: None,
        };
        if !body.is_empty() && (is_json_route(parts.uri.path()) || is_json(&parts.headers)) {
            match serde_json::from_slice::<Peek<'_>>(&body) {
                Ok(read) => peek = read,
                Err(error) => {
                    return self.refuse(
                        shape,
                        StatusCode::BAD_REQUEST,
                        None,
                        &format!("the request body is not valid JSON: {error}"),
                    )
                }
            }
        }
        // What the request may cost, for its span: estimated (as the limiter does) only when
        // spans are recorded.
        let tokens = tracing::enabled!(tracing::Level::INFO)
            .then(|| EstimateTokens::new().estimate(&body))
            .flatten();
        let span = tracing::info_span!(
            "gateway.request",
            client = client.name(),
            provider = shared.provider.name(),
            path = parts.uri.path(),
            model = peek.model.as_deref().unwrap_or(""),
            stream = peek.stream.unwrap_or(false),
            input_tokens = tokens.map(|t| t.input),
            max_output_tokens = tokens.map(|t| t.output),
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
            verdict = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        let upstream = match self.upstream_request(parts, body, &client) {
            Ok(request) => request,
            Err((status, message)) => return self.refuse(shape, status, None, &message),
        };
        self.forward(upstream, &client, shape)
            .instrument(span)
            .await
    }

    async fn forward(
        &self,
        request: Request<Full<Bytes>>,
        client: &Client,
        shape: Shape,
    ) -> Response<GatewayBody<S::Body>> {
        let stack = self.shared.stack.clone();
        let result = match &client.limit {
            None => stack
                .oneshot(request)
                .await
                .map(|r| r.map(Either::Left))
                .map_err(BoxError::from),
            Some(limit) => limit
                .layer(stack)
                .oneshot(request)
                .await
                .map(|r| r.map(Either::Right)),
        };
        let span = tracing::Span::current();
        match result {
            Ok(mut response) => {
                let info = response.extensions().get::<RetryInfo>();
                if let Some(info) = info {
                    span.record("attempts", info.attempts);
                    span.record("elapsed_ms", info.elapsed.as_millis() as u64);
                }
                span.record("verdict", response_verdict(&response).kind().as_str());
                span.record("status", response.status().as_u16());
                if response.status() == StatusCode::UNAUTHORIZED
                    && !self.shared.provider_auth.is_empty()
                {
                    // The provider refused the gateway's own key: the client's is fine, and
                    // the provider's message may quote part of the gateway's key.
                    tracing::error!("the provider refused the gateway's API key (401)");
                    return self.refuse(
                        shape,
                        StatusCode::BAD_GATEWAY,
                        None,
                        "the provider refused the gateway's API key; its operator must fix it",
                    );
                }
                strip_hop_by_hop(response.headers_mut());
                // Behind a fallback chain, which target answered.
                let served = response
                    .extensions()
                    .get::<ServedBy>()
                    .map(|s| s.target.clone());
                if let Some(value) = served.and_then(|t| HeaderValue::from_str(&t).ok()) {
                    response.headers_mut().insert(SERVED_BY_HEADER, value);
                }
                self.shared.answers.count(response.status());
                response.map(Either::Left)
            }
            Err(error) => {
                let answer = gave_up(shape, &error);
                span.record("status", answer.status().as_u16());
                tracing::info!(error = %error, "refused or gave up");
                self.shared.answers.count(answer.status());
                answer.map(Either::Right)
            }
        }
    }

    /// The whole request body, within the size limit and the body timeout.
    async fn read_body<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Bytes, (StatusCode, String)>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let max = self.shared.max_body;
        let too_large = || {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over the gateway's limit of {max} bytes"),
            )
        };
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max as u64) {
            return Err(too_large());
        }
        let read = Limited::new(body, max).collect();
        match tokio::time::timeout(self.shared.body_timeout, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(error)) => Err((
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {error}"),
            )),
            Err(_) => Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}",
                    self.shared.body_timeout
                ),
            )),
        }
    }

    /// The request to send upstream: the provider's URL and key, the client's headers without
    /// its key or the gateway's own headers, and its tenant and priority.
    fn upstream_request(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        client: &Arc<Client>,
    ) -> Result<Request<Full<Bytes>>, (StatusCode, String)> {
        let shared = &*self.shared;
        let uri: Uri = shared.upstream.uri_for(&parts.uri).map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "the request path does not make a valid upstream URI".to_owned(),
            )
        })?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        *headers = parts.headers;
        headers.remove(http::header::HOST);
        strip_hop_by_hop(headers);
        // The client's key stays here: the provider gets the gateway's.
        if shared.strip_caller_keys {
            for name in ["authorization", "x-api-key", "api-key"] {
                headers.remove(name);
            }
        }
        let priority = headers.remove(PRIORITY_HEADER);
        for (name, value) in &shared.provider_auth {
            if !headers.contains_key(name) || is_key_header(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let extensions = request.extensions_mut();
        extensions.insert(client.tenant.clone());
        // A local refusal (the quota past `max_wait`, an open breaker) goes back to the client
        // at once with its `Retry-After`: its SDK waits it out, holding nothing here meanwhile.
        extensions.insert(FailFast);
        if let Some(priority) = priority {
            match priority
                .to_str()
                .ok()
                .map(str::parse::<tollgate::rate_limit::Priority>)
            {
                Some(Ok(priority)) => {
                    extensions.insert(priority);
                }
                _ => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "x-tollgate-priority must be low, normal, high or 0 to 255".to_owned(),
                    ))
                }
            }
        }
        if request.method() == Method::GET {
            request.headers_mut().remove(http::header::CONTENT_LENGTH);
        }
        Ok(request)
    }
}

fn is_key_header(name: &HeaderName) -> bool {
    matches!(name.as_str(), "authorization" | "x-api-key" | "api-key")
}

/// The provider APIs whose requests are JSON whatever their content type says (curl's `-d`
/// says a form).
fn is_json_route(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/responses"
            | "/v1/messages"
            | "/v1/messages/count_tokens"
    )
}

/// Whether the body says it is JSON (or says nothing, as many clients do).
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.contains("json"))
}

/// Headers about one connection, not the message (RFC 9110, 7.6.1).
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// `tollgate_gateway_answers_total{class}`: registered on the first answer (with the recorder
/// installed then) and kept, so that an answer costs an atomic add, not a key looked up.
#[derive(Default)]
struct Answers(std::sync::OnceLock<[metrics::Counter; 4]>);

impl Answers {
    fn count(&self, status: StatusCode) {
        let counters = self.0.get_or_init(|| {
            ["2xx", "4xx", "5xx", "other"]
                .map(|class| metrics::counter!("tollgate_gateway_answers_total", "class" => class))
        });
        let class = match status.as_u16() {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => 3,
        };
        counters[class].increment(1);
    }
}

fn plain<B>(status: StatusCode, text: impl Into<Bytes>) -> Response<Either<B, Full<Bytes>>> {
    let mut response = Response::new(Either::Right(Full::new(text.into())));
    *response.status_mut() = status;
    response
}
