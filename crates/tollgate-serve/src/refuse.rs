//! The gateway's answer when the stack refused a request or gave up on it.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tollgate::circuit_breaker::CircuitOpen;
use tollgate::classify::Kind;
use tollgate::rate_limit::{RateLimitError, Refusal};
use tollgate::retry::RetryError;
use tollgate::BoxError;

use crate::shape::Shape;

/// The header a client names its priority lane with (`low`, `normal`, `high`, 0 to 255); the
/// gateway's, never forwarded.
pub const PRIORITY_HEADER: &str = "x-tollgate-priority";

/// The header naming the target of a fallback chain that answered.
pub const SERVED_BY_HEADER: &str = "x-tollgate-served-by";

/// 429 for a quota (the shared one or the client's own), 503 for an open breaker or an
/// overloaded provider, 504 for a timeout, 502 otherwise; each with `Retry-After` when known.
pub(crate) fn gave_up(shape: Shape, error: &BoxError) -> Response<Full<Bytes>> {
    let (last, verdict, message) = match error.downcast_ref::<RetryError>() {
        Some(retry) => (
            retry.last_error(),
            Some(retry.last_verdict()),
            retry.to_string(),
        ),
        None => (error, None, error.to_string()),
    };
    if let Some(open) = last.downcast_ref::<CircuitOpen>() {
        return shape.error(
            StatusCode::SERVICE_UNAVAILABLE,
            open.retry_after(),
            &open.to_string(),
        );
    }
    if let Some(limited) = last.downcast_ref::<RateLimitError>() {
        let status = match limited.refusal() {
            // It can never pass: retrying would not help.
            Refusal::TooLarge { .. } => StatusCode::BAD_REQUEST,
            Refusal::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        };
        return shape.error(status, limited.retry_after(), &limited.to_string());
    }
    let Some(verdict) = verdict else {
        return shape.error(StatusCode::BAD_GATEWAY, None, &message);
    };
    let status = match verdict.kind() {
        Kind::RateLimited | Kind::QuotaExhausted => StatusCode::TOO_MANY_REQUESTS,
        Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Kind::Overloaded | Kind::Rejected => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    shape.error(status, verdict.retry_after(), &message)
}
