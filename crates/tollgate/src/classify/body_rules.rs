//! What providers put in error bodies that changes the verdict.
//!
//! Status codes alone mislead: OpenAI answers 429 both for "slow down" and for "your billing is
//! exhausted", Anthropic signals overload in the body, and Gemini puts its wait hint in a
//! `RetryInfo` detail rather than a header. Bodies that are not JSON are left alone.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::headers::parse_go_duration;
use super::verdict::{Classification, HintSource, Kind, LimitKind};

/// Refines `verdict` from a (bounded) response body.
pub(crate) fn refine(verdict: Classification, body: &[u8], _now: SystemTime) -> Classification {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return verdict;
    };
    let error = json.get("error").unwrap_or(&json);
    let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or("");
    let (code, kind_field, status, message) = (
        field("code"),
        field("type"),
        field("status"),
        field("message"),
    );

    // Billing and quota exhaustion: waiting does not help, whatever the status or headers say.
    let quota_codes = [
        "insufficient_quota",
        "billing_hard_limit_reached",
        "usage_limit_reached",
    ];
    if quota_codes.contains(&code) || quota_codes.contains(&kind_field) {
        return verdict
            .with_kind(Kind::QuotaExhausted)
            .with_should_retry(None);
    }
    // A prompt too long for the model's context window: a client error a model with a larger
    // window would not make (OpenAI's `context_length_exceeded`, Anthropic's "prompt is too
    // long", Gemini's "exceeds the maximum number of tokens").
    let lowered = message.to_ascii_lowercase();
    if code == "context_length_exceeded"
        || lowered.contains("prompt is too long")
        || lowered.contains("maximum context length")
        || lowered.contains("exceeds the maximum number of tokens")
    {
        return verdict
            .with_kind(Kind::ClientError)
            .with_should_retry(None)
            .with_limit(Some(LimitKind::ContextWindow));
    }
    // OpenAI's "Request too large ... on tokens per min": the request alone exceeds the limit.
    if message.starts_with("Request too large") {
        return verdict
            .with_kind(Kind::ClientError)
            .with_should_retry(None)
            .with_limit(Some(LimitKind::Tokens));
    }
    if kind_field == "overloaded_error"
        || (status == "UNAVAILABLE" && message.to_ascii_lowercase().contains("overloaded"))
    {
        return keep_retry_override(verdict, Kind::Overloaded);
    }
    if status == "RESOURCE_EXHAUSTED" {
        let mut refined = keep_retry_override(verdict, Kind::RateLimited);
        if refined.retry_after().is_none() {
            if let Some(wait) = gemini_retry_delay(error) {
                refined = refined.with_retry_after(wait, Some(HintSource::Body));
            }
        }
        return refined;
    }
    if verdict.kind() == Kind::RateLimited {
        // The message is the most precise word on which limit tripped ("... on tokens per day
        // (TPD)", "... 80,000 output tokens per minute"); OpenAI also says it in `type`.
        let limit = limit_in_message(message).or(match kind_field {
            "tokens" => Some(LimitKind::Tokens),
            "requests" => Some(LimitKind::Requests),
            _ => verdict.limit(),
        });
        return verdict.with_limit(limit);
    }
    verdict
}

/// The limit a provider's 429 message names, when it names one precisely.
pub(crate) fn limit_in_message(message: &str) -> Option<LimitKind> {
    let message = message.to_ascii_lowercase();
    let named = [
        ("tokens per day", LimitKind::TokensPerDay),
        ("(tpd)", LimitKind::TokensPerDay),
        ("requests per day", LimitKind::RequestsPerDay),
        ("(rpd)", LimitKind::RequestsPerDay),
        ("output tokens per minute", LimitKind::OutputTokens),
        ("input tokens per minute", LimitKind::InputTokens),
    ];
    named
        .into_iter()
        .find(|(words, _)| message.contains(words))
        .map(|(_, kind)| kind)
}

/// Changes the kind but keeps the server's `x-should-retry` answer, which still wins.
fn keep_retry_override(verdict: Classification, kind: Kind) -> Classification {
    let should_retry = verdict.should_retry();
    verdict.with_kind(kind).with_should_retry(should_retry)
}

/// Gemini's `details[]` entry of type `google.rpc.RetryInfo` carries `retryDelay: "55s"`.
fn gemini_retry_delay(error: &Value) -> Option<Duration> {
    error
        .get("details")?
        .as_array()?
        .iter()
        .filter(|detail| {
            detail
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|detail| parse_go_duration(detail.get("retryDelay")?.as_str()?))
}
