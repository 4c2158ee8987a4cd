//! An axum gateway: forwards OpenAI-style requests upstream through a tollgate stack, and
//! answers with the upstream's response, or with a clear 429/503 of its own (with `Retry-After`)
//! when the stack refuses or gives up.

use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tollgate::circuit_breaker::CircuitOpen;
use tollgate::classify::Kind;
use tollgate::rate_limit::RateLimitError;
use tollgate::retry::RetryError;
use tollgate::BoxError;
use tower::{Service, ServiceExt};

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
    let Ok(body) = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
    else {
        return refusal(
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
    tollgate::redact_secrets(upstream.headers_mut());
    match gateway.stack.oneshot(upstream).await {
        Ok(response) => response.map(AxumBody::new),
        Err(error) => gave_up(&error),
    }
}

/// The gateway's own answer when the stack refused or gave up.
fn gave_up(error: &RetryError) -> Response {
    let last = error.last_error();
    if let Some(open) = last.downcast_ref::<CircuitOpen>() {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            open.retry_after(),
            &open.to_string(),
        );
    }
    if let Some(limited) = last.downcast_ref::<RateLimitError>() {
        return refusal(
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
    refusal(status, verdict.retry_after(), &error.to_string())
}

fn refusal(status: StatusCode, retry_after: Option<Duration>, message: &str) -> Response {
    let body = serde_json::json!({"error": {"type": "gateway_error", "message": message}});
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
