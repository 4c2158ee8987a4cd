//! One request through the stack, and how its end is written down.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::Value;
use tollgate::classify::LimitKind;
use tollgate::fallback::ServedBy;
use tollgate::rate_limit::{RateLimitError, Refusal};
use tollgate::retry::{RetryError, RetryInfo, StopReason};
use tower::ServiceExt;

use super::input::{Line, LineKind, Request};
use super::output::{Class, Outcome};
use super::stream;
use super::target::Target;
use super::Counters;

/// What a completed request adds to the report, besides its result line: the tokens its
/// answer reported using, and the model that answered (for its price).
#[derive(Debug, Default, Clone)]
pub(crate) struct Usage {
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) model: Option<String>,
}

/// How a request ended.
pub(crate) enum Ended {
    /// With a result to write (boxed: it is moved through a channel, and the other case is
    /// small).
    Done(Box<Outcome>, Usage),
    /// Not sent: a daily quota is spent until it resets, this long from now. Nothing is
    /// written for the line, which the next run sends.
    QuotaSpent(LimitKind, Duration),
}

/// The result of an invalid line.
pub(crate) fn invalid(line: &Line, message: String) -> Outcome {
    Outcome {
        key: line.key.clone(),
        line: line.number,
        fingerprint: line.fingerprint,
        status: None,
        outcome: "invalid_input",
        class: Class::Prompt,
        kind: Some("invalid_input".into()),
        stopped: None,
        message: Some(message),
        body: None,
        attempts: 0,
        latency_ms: 0,
        served_by: None,
    }
}

/// Sends `line`'s request and describes its end. With `--stream`, a stream that breaks after
/// its first token is sent again whole, up to the policy's attempts.
pub(crate) async fn send<S, B>(stack: S, target: &Target, line: Line, counters: &Counters) -> Ended
where
    S: tower::Service<
            http::Request<tollgate_e2e::Body>,
            Response = http::Response<B>,
            Error = RetryError,
        > + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let mut sent = 0;
    loop {
        let (ended, broken) = send_once(stack.clone(), target, &line).await;
        sent += 1;
        let again = broken && target.stream && sent < target.policy.retry.max_attempts.max(1);
        if !again {
            return ended;
        }
        counters.streams_retried.fetch_add(1, Ordering::Relaxed);
    }
}

/// One request through the stack: how it ended, and whether a stream broke after its head.
async fn send_once<S, B>(stack: S, target: &Target, line: &Line) -> (Ended, bool)
where
    S: tower::Service<
        http::Request<tollgate_e2e::Body>,
        Response = http::Response<B>,
        Error = RetryError,
    >,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let line = line.clone();
    let LineKind::Request(Request { path, body, .. }) = &line.kind else {
        return (
            Ended::Done(
                Box::new(invalid(&line, "not a request".into())),
                Usage::default(),
            ),
            false,
        );
    };
    let started = Instant::now();
    let mut outcome = Outcome {
        key: line.key.clone(),
        line: line.number,
        fingerprint: line.fingerprint,
        status: None,
        outcome: "error",
        class: Class::Retryable,
        kind: None,
        stopped: None,
        message: None,
        body: None,
        attempts: 1,
        latency_ms: 0,
        served_by: None,
    };
    let mut usage = Usage::default();
    let mut broken = false;
    let anthropic = target.path(path.as_deref()).ends_with("/messages");
    let body = if target.stream {
        stream::streamed_body(body, anthropic)
    } else {
        body.clone()
    };
    match stack.oneshot(target.request(path.as_deref(), body)).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let info = response.extensions().get::<RetryInfo>().copied();
            if target.has_fallbacks() {
                outcome.served_by = response.extensions().get::<ServedBy>().map(|served| {
                    serde_json::json!({
                        "target": &*served.target,
                        "skipped": served.skipped.iter().map(|skipped| serde_json::json!({
                            "target": &*skipped.target, "reason": skipped.reason,
                        })).collect::<Vec<_>>(),
                    })
                });
            }
            outcome.status = Some(status);
            outcome.attempts = info.map_or(1, |i| i.attempts);
            outcome.stopped = info.and_then(|i| i.stopped).map(StopReason::as_str);
            match response.into_body().collect().await {
                Ok(bytes) => {
                    let bytes = bytes.to_bytes();
                    let answer: Value = if target.stream && (200..300).contains(&status) {
                        stream::assemble(&bytes, anthropic)
                    } else {
                        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&bytes).into_owned())
                        })
                    };
                    if (200..300).contains(&status) {
                        outcome.outcome = "ok";
                        outcome.class = Class::Succeeded;
                        if let Some(used) = tollgate::rate_limit::Usage::from_json(&bytes) {
                            usage.input_tokens = used.input_tokens.unwrap_or(0);
                            usage.output_tokens = used.output_tokens.unwrap_or(0);
                        }
                        usage.model = answer["model"].as_str().map(str::to_owned);
                    } else {
                        outcome.outcome = "http_error";
                        outcome.class = class_of_status(status);
                        let stopped = info.and_then(|i| i.stopped);
                        outcome.kind = Some(error_kind(&format!("http_{status}"), stopped));
                        outcome.message = Some(message_of(&answer, status));
                    }
                    outcome.body = Some(answer);
                }
                Err(error) => {
                    broken = true;
                    outcome.outcome = "error";
                    outcome.kind = Some("connection".into());
                    outcome.message = Some(format!("the answer broke off: {error}"));
                }
            }
        }
        Err(error) => {
            let refusal = error
                .last_error()
                .downcast_ref::<RateLimitError>()
                .map(RateLimitError::refusal);
            if let Some(Refusal::DailyQuotaSpent { limit, resets_in }) = refusal {
                return (Ended::QuotaSpent(limit, resets_in), false);
            }
            let kind = error.last_verdict().kind();
            outcome.attempts = error.attempts();
            outcome.stopped = Some(error.reason().as_str());
            outcome.class = class_of_error(&error);
            outcome.kind = Some(error_kind(kind.as_str(), Some(error.reason())));
            outcome.message = Some(error.to_string());
        }
    }
    outcome.latency_ms = started.elapsed().as_millis() as u64;
    (Ended::Done(Box::new(outcome), usage), broken)
}

/// Whether a rerun should try again by default an answer with `status`: not when the prompt
/// itself is at fault (a request the provider calls malformed or too large), which only a
/// change to the line fixes. Anything else (a key, an endpoint, a quota, an outage) may be
/// fixed by then.
fn class_of_status(status: u16) -> Class {
    match status {
        400 | 413 | 422 => Class::Prompt,
        _ => Class::Retryable,
    }
}

/// The same for an error: a request larger than the token limit allows is the prompt's fault.
fn class_of_error(error: &RetryError) -> Class {
    let too_large = error
        .last_error()
        .downcast_ref::<RateLimitError>()
        .is_some_and(|e| matches!(e.refusal(), Refusal::TooLarge { .. }));
    if too_large {
        Class::Prompt
    } else {
        Class::Retryable
    }
}

/// The message of a provider's error body (`error.message`), else the status.
fn message_of(answer: &Value, status: u16) -> String {
    answer["error"]["message"]
        .as_str()
        .or_else(|| answer["message"].as_str())
        .or_else(|| answer.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {status}"))
}

/// The kind of a failure as the result line says it: what the last attempt met, unless the
/// retry layer stopped for a reason of its own that the operator must see (its budget ran out;
/// the status or the message still says what the last attempt met).
fn error_kind(last: &str, stopped: Option<StopReason>) -> String {
    match stopped {
        Some(StopReason::BudgetExhausted) => "retry_budget_exhausted".to_owned(),
        _ => last.to_owned(),
    }
}
