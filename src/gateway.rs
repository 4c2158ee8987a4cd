//! An axum gateway: forwards OpenAI- and Anthropic-style requests upstream through a tollgate
//! stack, and answers with the upstream's response (streams passed through chunk by chunk, as
//! they arrive), or with a clear 429/503 of its own (with `Retry-After`, in the provider's error
//! shape) when the stack refuses or gives up before the first byte.

use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tollgate::circuit_breaker::CircuitOpen;
use tollgate::classify::Kind;
use tollgate::fallback::ServedBy;
use tollgate::rate_limit::{Priority, RateLimitError};
use tollgate::retry::RetryError;
use tollgate::BoxError;
use tower::{Service, ServiceExt};

/// The header a client names its priority lane with (`low`, `normal`, `high`, 0 to 255).
pub const PRIORITY_HEADER: &str = "x-tollgate-priority";

/// The header naming the target of a fallback chain that answered.
pub const SERVED_BY_HEADER: &str = "x-tollgate-served-by";

/// The largest request body the gateway forwards.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A tollgate stack the gateway can forward through.
pub trait Upstream<B>:
    Service<Request<Full<Bytes>>, Response = http::Response<B>, Error = RetryError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> Upstream<B> for S where
    S: Service<
            Request<Full<Bytes>>,
            Response = http::Response<B>,
            Error = RetryError,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

#[derive(Clone)]
struct Gateway<S> {
    stack: S,
    upstream: Uri,
}

/// A router that forwards `POST /v1/*` to `upstream` (a base URL) through `stack`.
pub fn router<S, B>(stack: S, upstream: Uri) -> axum::Router
where
    S: Upstream<B>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    axum::Router::new()
        .route("/v1/{*path}", axum::routing::post(forward::<S, B>))
        .with_state(Gateway { stack, upstream })
}

async fn forward<S, B>(State(gateway): State<Gateway<S>>, request: Request<AxumBody>) -> Response
where
    S: Upstream<B>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let shape = Shape::of(parts.uri.path());
    let Ok(body) = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
    else {
        return refusal(
            shape,
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            "request body unreadable or over 4 MiB",
        );
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!(
        "{}{}",
        gateway.upstream.to_string().trim_end_matches('/'),
        path
    )
    .parse::<Uri>() else {
        return refusal(
            shape,
            StatusCode::BAD_REQUEST,
            None,
            "the request path does not make a valid upstream URI",
        );
    };
    let mut upstream = Request::new(Full::new(body));
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = parts.headers;
    upstream.headers_mut().remove(http::header::HOST);
    // The client's lane in the quota's queue; the header is the gateway's, not the provider's.
    if let Some(priority) = upstream.headers_mut().remove(PRIORITY_HEADER) {
        let parsed = priority.to_str().ok().map(str::parse::<Priority>);
        match parsed {
            Some(Ok(priority)) => {
                upstream.extensions_mut().insert(priority);
            }
            _ => {
                return refusal(
                    shape,
                    StatusCode::BAD_REQUEST,
                    None,
                    "x-tollgate-priority must be low, normal, high or 0 to 255",
                )
            }
        }
    }
    tollgate::redact_secrets(upstream.headers_mut());
    match gateway.stack.oneshot(upstream).await {
        // A stream goes on as it arrives: axum's body polls the stack's, frame by frame.
        Ok(mut response) => {
            // Behind a fallback chain, which target answered.
            let served = response
                .extensions()
                .get::<ServedBy>()
                .map(|s| s.target.clone());
            if let Some(value) = served.and_then(|t| HeaderValue::from_str(&t).ok()) {
                response.headers_mut().insert(SERVED_BY_HEADER, value);
            }
            response.map(AxumBody::new)
        }
        Err(error) => gave_up(shape, &error),
    }
}

/// Which provider's error shape the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    OpenAi,
    Anthropic,
}

impl Shape {
    fn of(path: &str) -> Self {
        if path.ends_with("/messages") {
            Shape::Anthropic
        } else {
            Shape::OpenAi
        }
    }
}

/// The gateway's own answer when the stack refused or gave up.
fn gave_up(shape: Shape, error: &RetryError) -> Response {
    let last = error.last_error();
    if let Some(open) = last.downcast_ref::<CircuitOpen>() {
        return refusal(
            shape,
            StatusCode::SERVICE_UNAVAILABLE,
            open.retry_after(),
            &open.to_string(),
        );
    }
    if let Some(limited) = last.downcast_ref::<RateLimitError>() {
        return refusal(
            shape,
            StatusCode::TOO_MANY_REQUESTS,
            limited.retry_after(),
            &limited.to_string(),
        );
    }
    let verdict = error.last_verdict();
    let status = match verdict.kind() {
        Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Kind::Overloaded | Kind::Rejected => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    refusal(shape, status, verdict.retry_after(), &error.to_string())
}

/// An error answer in the shape the client's SDK reads: OpenAI's `{"error": {...}}` or
/// Anthropic's `{"type": "error", "error": {...}}`, with the type each uses for the status.
fn refusal(
    shape: Shape,
    status: StatusCode,
    retry_after: Option<Duration>,
    message: &str,
) -> Response {
    let body = match shape {
        Shape::OpenAi => {
            let (kind, code) = match status {
                StatusCode::TOO_MANY_REQUESTS => ("requests", "rate_limit_exceeded"),
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                    ("invalid_request_error", "invalid_request")
                }
                _ => ("server_error", "gateway_error"),
            };
            serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Shape::Anthropic => {
            let kind = match status {
                StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
                StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
                StatusCode::BAD_REQUEST => "invalid_request_error",
                StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
                _ => "api_error",
            };
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
    }
    response
}
