//! The gateway's own answers, in the error shape of the API the client speaks, so that its SDK
//! raises the error it would raise for the provider (and retries what it would retry).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Which provider's API a request speaks, told by its path: Anthropic's `/v1/messages`, OpenAI's
/// for everything else (the shape every OpenAI-compatible server uses).
///
/// ```
/// use tollgate_serve::Shape;
///
/// assert_eq!(Shape::of("/v1/messages"), Shape::Anthropic);
/// assert_eq!(Shape::of("/v1/chat/completions"), Shape::OpenAi);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

impl Shape {
    /// The shape of the API at `path`.
    pub fn of(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Shape::Anthropic
        } else {
            Shape::OpenAi
        }
    }

    /// An error answer with `status` and `message`, and `Retry-After` (whole seconds, rounded
    /// up) plus `retry-after-ms` when `retry_after` is given: the OpenAI and Anthropic SDKs read
    /// both and wait that long before they retry.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::StatusCode;
    /// use tollgate_serve::Shape;
    ///
    /// let answer = Shape::Anthropic.error(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_millis(1500)), "slow down");
    /// assert_eq!(answer.status(), 429);
    /// assert_eq!(answer.headers()["retry-after"], "2");
    /// assert_eq!(answer.headers()["retry-after-ms"], "1500");
    /// ```
    pub fn error(
        self,
        status: StatusCode,
        retry_after: Option<Duration>,
        message: &str,
    ) -> Response<Full<Bytes>> {
        let body = match self {
            Shape::OpenAi => {
                let (kind, code) = match status {
                    StatusCode::TOO_MANY_REQUESTS => ("requests", "rate_limit_exceeded"),
                    StatusCode::UNAUTHORIZED => ("invalid_request_error", "invalid_api_key"),
                    StatusCode::NOT_FOUND => ("invalid_request_error", "unknown_url"),
                    status if status.is_client_error() => {
                        ("invalid_request_error", "invalid_request")
                    }
                    _ => ("server_error", "gateway_error"),
                };
                serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            }
            Shape::Anthropic => {
                let kind = match status {
                    StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
                    StatusCode::UNAUTHORIZED => "authentication_error",
                    StatusCode::NOT_FOUND => "not_found_error",
                    StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
                    StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
                    status if status.is_client_error() => "invalid_request_error",
                    _ => "api_error",
                };
                serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(http::header::RETRY_AFTER, seconds.max(1).into());
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert("retry-after-ms", millis.max(1).into());
        }
        response
    }
}
