//! Metrics through the `metrics` crate's facade (feature `metrics`), so any exporter works.
//! Without the feature every function here is an empty inline function.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `tollgate_attempts_total` | counter | `provider` |
//! | `tollgate_retries_total` | counter | `provider`, `reason` (the failed attempt's kind) |
//! | `tollgate_gave_up_total` | counter | `provider`, `reason` (the stop reason) |
//! | `tollgate_rate_limited_responses_total` | counter | `provider` (429s received) |
//! | `tollgate_limiter_wait_seconds` | histogram | `provider` |
//! | `tollgate_limiter_queue_length` | gauge | `provider` |
//! | `tollgate_limiter_rejections_total` | counter | `provider`, `reason` |
//! | `tollgate_limiter_adaptive_rate` | gauge | `provider` (requests per second, when it adapts) |
//! | `tollgate_breaker_state` | gauge | `provider` (0 closed, 1 open, 2 half-open, 3 isolated) |
//! | `tollgate_breaker_transitions_total` | counter | `provider`, `to` |

#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use std::sync::Arc;
use std::time::Duration;

/// The label value used when a layer was given no name.
#[cfg(feature = "metrics")]
const DEFAULT_NAME: &str = "default";

#[cfg(feature = "metrics")]
fn provider(name: &Option<Arc<str>>) -> metrics::SharedString {
    match name {
        Some(name) => metrics::SharedString::from(Arc::clone(name)),
        None => metrics::SharedString::const_str(DEFAULT_NAME),
    }
}

#[inline]
pub(crate) fn attempt(name: &Option<Arc<str>>) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_attempts_total", "provider" => provider(name)).increment(1);
}

#[inline]
pub(crate) fn retry(name: &Option<Arc<str>>, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_retries_total", "provider" => provider(name), "reason" => reason)
        .increment(1);
}

#[inline]
pub(crate) fn gave_up(name: &Option<Arc<str>>, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_gave_up_total", "provider" => provider(name), "reason" => reason)
        .increment(1);
}

#[inline]
pub(crate) fn rate_limited_response(name: &Option<Arc<str>>) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_rate_limited_responses_total", "provider" => provider(name))
        .increment(1);
}

#[inline]
pub(crate) fn limiter_wait(name: &Option<Arc<str>>, waited: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("tollgate_limiter_wait_seconds", "provider" => provider(name))
        .record(waited.as_secs_f64());
}

#[inline]
pub(crate) fn limiter_queue(name: &Option<Arc<str>>, length: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tollgate_limiter_queue_length", "provider" => provider(name))
        .set(length as f64);
}

#[inline]
pub(crate) fn limiter_adaptive_rate(name: &Option<Arc<str>>, per_sec: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tollgate_limiter_adaptive_rate", "provider" => provider(name)).set(per_sec);
}

#[inline]
pub(crate) fn limiter_rejection(name: &Option<Arc<str>>, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_limiter_rejections_total", "provider" => provider(name), "reason" => reason).increment(1);
}

#[inline]
pub(crate) fn breaker_transition(name: &Option<Arc<str>>, to: &'static str, code: u8) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("tollgate_breaker_transitions_total", "provider" => provider(name), "to" => to).increment(1);
        metrics::gauge!("tollgate_breaker_state", "provider" => provider(name))
            .set(f64::from(code));
    }
}
