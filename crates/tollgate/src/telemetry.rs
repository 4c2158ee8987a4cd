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
//! | `tollgate_tokens_reserved_total` | counter | `provider`, `limit` (`input`, `output`) |
//! | `tollgate_tokens_used_total` | counter | `provider`, `direction` (`input`, `output`; from `usage`) |
//! | `tollgate_token_corrections_total` | counter | `provider`, `limit`, `sign` (`refund`, `excess`) |
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

/// A counter counted on every call, registered once (on first use, with the recorder installed
/// then) and kept: registering costs a key built and looked up, an increment one atomic add.
#[derive(Debug, Default)]
pub(crate) struct CachedCounter {
    #[cfg(feature = "metrics")]
    counter: std::sync::OnceLock<metrics::Counter>,
}

impl CachedCounter {
    /// Counts an attempt as `tollgate_attempts_total{provider}`.
    #[inline]
    pub(crate) fn attempt(&self, name: &Option<Arc<str>>) {
        #[cfg(feature = "metrics")]
        self.counter
            .get_or_init(
                || metrics::counter!("tollgate_attempts_total", "provider" => provider(name)),
            )
            .increment(1);
    }
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
pub(crate) fn tokens_reserved(name: &Option<Arc<str>>, limit: &'static str, tokens: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_tokens_reserved_total", "provider" => provider(name), "limit" => limit)
        .increment(tokens);
}

#[inline]
pub(crate) fn tokens_used(name: &Option<Arc<str>>, direction: &'static str, tokens: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_tokens_used_total", "provider" => provider(name), "direction" => direction)
        .increment(tokens);
}

#[inline]
pub(crate) fn token_correction(name: &Option<Arc<str>>, limit: &'static str, tokens: i64) {
    #[cfg(feature = "metrics")]
    if tokens != 0 {
        let sign = if tokens < 0 { "refund" } else { "excess" };
        metrics::counter!(
            "tollgate_token_corrections_total",
            "provider" => provider(name),
            "limit" => limit,
            "sign" => sign
        )
        .increment(tokens.unsigned_abs());
    }
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
