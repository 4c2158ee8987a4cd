//! One request's path through the mock: auth, parsing, outage, limits, faults, latency, answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::bucket::Bucket;
use crate::config::{HintStyle, MockConfig};
use crate::faults::{draw_fault, Fault};
use crate::stats::{Outcome, Recorder};

/// The largest request body the mock reads.
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Keys the mock keeps buckets for; past this, new keys share an overflow bucket.
const MAX_KEYS: usize = 10_000;

/// The error a handler returns to make hyper close the connection without an answer.
#[derive(Debug)]
pub(crate) struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for InjectedReset {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
struct KeyBuckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// State shared by every connection of one mock server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) recorder: Recorder,
    start: Instant,
    keys: Mutex<HashMap<String, KeyBuckets>>,
    rng: Mutex<SmallRng>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Shared {
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
            config,
            recorder: Recorder::default(),
            start: Instant::now(),
            keys: Mutex::new(HashMap::new()),
        }
    }
}

type MockResponse = Response<Full<Bytes>>;

pub(crate) async fn handle<B>(
    shared: Arc<Shared>,
    request: Request<B>,
) -> Result<MockResponse, InjectedReset>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let api = match (request.method(), request.uri().path()) {
        (&Method::GET, "/_mock/stats") => {
            let stats = serde_json::to_value(shared.recorder.snapshot()).unwrap_or(Value::Null);
            return Ok(json_response(StatusCode::OK, &stats));
        }
        (&Method::POST, "/v1/messages") => Api::Anthropic,
        // OpenAI's path and the OpenAI-compatible ones under other prefixes (Groq's
        // `/openai/v1/`, Gemini's `/v1beta/openai/`); Gemini's native `:generateContent` is
        // answered in OpenAI's shape too, so that every preset meets the same limits and faults.
        (&Method::POST, path)
            if path.ends_with("/chat/completions") || path.ends_with(":generateContent") =>
        {
            Api::OpenAi
        }
        _ => {
            let body = error_body(
                Api::OpenAi,
                "not_found",
                "no such route on the mock provider",
            );
            return Ok(json_response(StatusCode::NOT_FOUND, &body));
        }
    };
    let now = Instant::now();
    let second = now.saturating_duration_since(shared.start).as_secs() as usize;
    shared.recorder.received(second);
    let answer = |status: StatusCode, body: Value| {
        shared
            .recorder
            .answered(second, Outcome::Status(status.as_u16()), false, 0);
        Ok(json_response(status, &body))
    };

    let Some(key) = api_key(request.headers(), request.uri().query()) else {
        let body = error_body(api, "authentication_error", "no API key was given");
        return answer(StatusCode::UNAUTHORIZED, body);
    };
    if shared.config.api_key.as_deref().is_some_and(|k| k != key) {
        let body = error_body(api, "authentication_error", "invalid API key");
        return answer(StatusCode::UNAUTHORIZED, body);
    }
    let key = key.to_owned();
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let body = error_body(
                api,
                "invalid_request_error",
                "request body unreadable or too large",
            );
            return answer(StatusCode::BAD_REQUEST, body);
        }
    };
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        let body = error_body(
            api,
            "invalid_request_error",
            "request body is not valid JSON",
        );
        return answer(StatusCode::BAD_REQUEST, body);
    };

    let elapsed = now.saturating_duration_since(shared.start);
    if shared
        .config
        .faults
        .outages
        .iter()
        .any(|(from, to)| *from <= elapsed && elapsed < *to)
    {
        let body = error_body(api, "api_error", "the service is temporarily unavailable");
        return answer(StatusCode::SERVICE_UNAVAILABLE, body);
    }

    let (fault, jitter) = {
        let mut rng = shared.rng.lock().unwrap_or_else(|p| p.into_inner());
        let fault = draw_fault(&mut *rng, &shared.config.faults);
        let jitter_ms = shared.config.latency_jitter.as_millis() as u64;
        let jitter = Duration::from_millis(rng.random_range(0..=jitter_ms));
        (fault, jitter)
    };

    let prompt_tokens = prompt_tokens(&json);
    let cost = token_cost(&json, prompt_tokens);
    let admission = admit(&shared, &key, cost, now);
    let mut headers = HeaderMap::new();
    if shared.config.hints == HintStyle::Full {
        rate_headers(&mut headers, api, &admission, SystemTime::now());
    }
    let (status, body) = match admission.refusal {
        Some(Refusal::TooLarge) => {
            let message = format!(
                "Request too large on tokens per min (TPM): Limit {}, Requested {cost}.",
                admission.tokens.map_or(0, |t| t.limit)
            );
            let status = match api {
                Api::OpenAi => StatusCode::TOO_MANY_REQUESTS,
                Api::Anthropic => StatusCode::PAYLOAD_TOO_LARGE,
            };
            (status, error_body(api, "request_too_large", &message))
        }
        Some(Refusal::Limited { wait, tokens }) => {
            hint_headers(&mut headers, shared.config.hints, wait);
            let message = format!(
                "Rate limit reached on {} per min. Please try again in {:.3}s.",
                if tokens { "tokens" } else { "requests" },
                wait.as_secs_f64()
            );
            let code = if tokens { "tokens" } else { "requests" };
            (
                StatusCode::TOO_MANY_REQUESTS,
                rate_limit_body(api, code, &message),
            )
        }
        None => (StatusCode::OK, Value::Null),
    };
    if status != StatusCode::OK {
        let limited = status == StatusCode::TOO_MANY_REQUESTS && admission.refusal.is_some();
        shared
            .recorder
            .answered(second, Outcome::Status(status.as_u16()), limited, 0);
        return Ok(with_headers(json_response(status, &body), headers));
    }

    // Admitted: the quota is charged whatever happens next, as providers count failed requests.
    let charged = if admission.tokens.is_some() { cost } else { 0 };
    let latency = shared.config.latency + jitter;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let record = |outcome| shared.recorder.answered(second, outcome, false, charged);
    let (status, body) = match fault {
        Some(Fault::Reset) => {
            record(Outcome::Reset);
            return Err(InjectedReset);
        }
        Some(Fault::Hang) => {
            record(Outcome::Hang);
            tokio::time::sleep(shared.config.faults.hang).await;
            let body = error_body(api, "timeout", "the mock hung on purpose");
            return Ok(json_response(StatusCode::GATEWAY_TIMEOUT, &body));
        }
        Some(Fault::ServerError(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                error_body(api, "api_error", "injected server error"),
            )
        }
        Some(Fault::Overloaded) => (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        Some(Fault::RateLimited { hint }) => {
            if hint {
                hint_headers(&mut headers, HintStyle::Full, Duration::from_millis(250));
            }
            let body = rate_limit_body(api, "requests", "Rate limit reached (injected).");
            (StatusCode::TOO_MANY_REQUESTS, body)
        }
        Some(Fault::MalformedHeaders) => {
            malformed_headers(&mut headers);
            (StatusCode::OK, completion(api, &json, prompt_tokens))
        }
        None => (StatusCode::OK, completion(api, &json, prompt_tokens)),
    };
    record(Outcome::Status(status.as_u16()));
    Ok(with_headers(json_response(status, &body), headers))
}

#[derive(Debug, Clone, Copy)]
struct BucketView {
    limit: u64,
    remaining: u64,
    reset: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    TooLarge,
    Limited { wait: Duration, tokens: bool },
}

#[derive(Debug, Clone, Copy)]
struct Admission {
    refusal: Option<Refusal>,
    requests: Option<BucketView>,
    tokens: Option<BucketView>,
}

/// Checks both buckets and charges both, or neither.
fn admit(shared: &Shared, key: &str, cost: u64, now: Instant) -> Admission {
    let config = &shared.config;
    let mut keys = shared.keys.lock().unwrap_or_else(|p| p.into_inner());
    let key = if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
        "\u{0}overflow"
    } else {
        key
    };
    let buckets = keys.entry(key.to_owned()).or_insert_with(|| KeyBuckets {
        requests: config
            .rpm
            .map(|rpm| Bucket::new(config.request_burst().unwrap_or(rpm), rpm, now)),
        tokens: config
            .tpm
            .map(|tpm| Bucket::new(config.token_capacity().unwrap_or(tpm), tpm, now)),
    });
    let cost_f = cost as f64;
    for bucket in [&mut buckets.requests, &mut buckets.tokens]
        .into_iter()
        .flatten()
    {
        bucket.refill(now);
    }
    let mut refusal = None;
    if buckets.tokens.as_ref().is_some_and(|b| !b.fits(cost_f)) {
        refusal = Some(Refusal::TooLarge);
    } else {
        let request_wait = buckets
            .requests
            .as_ref()
            .map_or(Duration::ZERO, |b| b.wait_for(1.0));
        let token_wait = buckets
            .tokens
            .as_ref()
            .map_or(Duration::ZERO, |b| b.wait_for(cost_f));
        if request_wait.is_zero() && token_wait.is_zero() {
            if let Some(b) = buckets.requests.as_mut() {
                b.take(1.0);
            }
            if let Some(b) = buckets.tokens.as_mut() {
                b.take(cost_f);
            }
        } else {
            refusal = Some(Refusal::Limited {
                wait: request_wait.max(token_wait),
                tokens: token_wait > request_wait,
            });
        }
    }
    let view = |b: &Bucket| BucketView {
        limit: b.per_minute(),
        remaining: b.remaining(),
        reset: b.time_to_full(),
    };
    Admission {
        refusal,
        requests: buckets.requests.as_ref().map(view),
        tokens: buckets.tokens.as_ref().map(view),
    }
}

/// The API key, in any provider's way: a bearer token, Anthropic's `x-api-key`, Azure's
/// `api-key`, Gemini's `x-goog-api-key` or its `?key=` query parameter.
fn api_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let in_query = || query?.split('&').find_map(|pair| pair.strip_prefix("key="));
    bearer
        .or_else(|| header("x-api-key"))
        .or_else(|| header("api-key"))
        .or_else(|| header("x-goog-api-key"))
        .or_else(in_query)
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Characters of the prompt / 4, rounded up, as OpenAI estimates at admission.
fn prompt_tokens(request: &Value) -> u64 {
    fn text_len(content: &Value) -> usize {
        match content {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    p.get("text")
                        .and_then(Value::as_str)
                        .map_or(0, |t| t.chars().count())
                })
                .sum(),
            _ => 0,
        }
    }
    let messages = request.get("messages").and_then(Value::as_array);
    let chars: usize = messages
        .into_iter()
        .flatten()
        .map(|m| m.get("content").map_or(0, text_len))
        .sum::<usize>()
        + request.get("system").map_or(0, text_len)
        + request.get("prompt").map_or(0, text_len);
    (chars as u64).div_ceil(4)
}

/// The greater of `max_tokens` and the prompt estimate: OpenAI's documented admission rule.
fn token_cost(request: &Value, prompt_tokens: u64) -> u64 {
    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|field| request.get(*field).and_then(Value::as_u64))
        .unwrap_or(0);
    max_tokens.max(prompt_tokens).max(1)
}

fn completion(api: Api, request: &Value, prompt_tokens: u64) -> Value {
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model");
    let text = "This is the mock provider's answer.";
    let completion_tokens = 8u64;
    match api {
        Api::OpenAi => json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        }),
        Api::Anthropic => json!({
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
        }),
    }
}

fn error_body(api: Api, kind: &str, message: &str) -> Value {
    match api {
        Api::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": kind}})
        }
        Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    }
}

fn rate_limit_body(api: Api, limit: &str, message: &str) -> Value {
    match api {
        Api::OpenAi => json!({"error": {
            "message": message, "type": limit, "param": null, "code": "rate_limit_exceeded"
        }}),
        Api::Anthropic => error_body(api, "rate_limit_error", message),
    }
}

fn hint_headers(headers: &mut HeaderMap, style: HintStyle, wait: Duration) {
    match style {
        HintStyle::Full => {
            insert(
                headers,
                "retry-after-ms",
                wait.as_millis().max(1).to_string(),
            );
            insert(
                headers,
                "retry-after",
                wait.as_secs_f64().ceil().max(1.0).to_string(),
            );
        }
        HintStyle::RetryAfterOnly => {
            insert(
                headers,
                "retry-after",
                wait.as_secs_f64().ceil().max(1.0).to_string(),
            );
        }
        HintStyle::RetryAfterMs => {
            insert(
                headers,
                "retry-after-ms",
                wait.as_millis().max(1).to_string(),
            );
        }
        HintStyle::None => {}
    }
}

fn rate_headers(headers: &mut HeaderMap, api: Api, admission: &Admission, now: SystemTime) {
    let families = [
        ("requests", admission.requests),
        ("tokens", admission.tokens),
    ];
    for (family, view) in families {
        let Some(view) = view else { continue };
        match api {
            Api::OpenAi => {
                insert(
                    headers,
                    &format!("x-ratelimit-limit-{family}"),
                    view.limit.to_string(),
                );
                insert(
                    headers,
                    &format!("x-ratelimit-remaining-{family}"),
                    view.remaining.to_string(),
                );
                insert(
                    headers,
                    &format!("x-ratelimit-reset-{family}"),
                    go_duration(view.reset),
                );
            }
            Api::Anthropic => {
                let reset = humantime::format_rfc3339_seconds(now + view.reset).to_string();
                insert(
                    headers,
                    &format!("anthropic-ratelimit-{family}-limit"),
                    view.limit.to_string(),
                );
                insert(
                    headers,
                    &format!("anthropic-ratelimit-{family}-remaining"),
                    view.remaining.to_string(),
                );
                insert(
                    headers,
                    &format!("anthropic-ratelimit-{family}-reset"),
                    reset,
                );
            }
        }
    }
}

fn malformed_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        ("retry-after", "soon"),
        ("retry-after-ms", "-5"),
        ("x-ratelimit-remaining-requests", "lots"),
        ("x-ratelimit-reset-requests", "1h2x"),
        ("x-ratelimit-limit-tokens", "-1"),
        ("anthropic-ratelimit-requests-reset", "tomorrow"),
        ("x-should-retry", "perhaps"),
    ] {
        insert(headers, name, value.to_owned());
    }
}

/// Formats a duration as Go does for OpenAI's reset headers: `6m0s`, `1.5s`, `20ms`.
pub(crate) fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let secs = duration.as_secs_f64();
    let minutes = (secs / 60.0).floor();
    let rest = secs - minutes * 60.0;
    let rest = (rest * 1000.0).round() / 1000.0;
    if minutes > 0.0 {
        format!("{minutes}m{rest}s")
    } else {
        format!("{rest}s")
    }
}

fn insert(headers: &mut HeaderMap, name: &str, value: String) {
    if let (Ok(name), Ok(value)) = (
        http::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(&value),
    ) {
        headers.insert(name, value);
    }
}

fn json_response(status: StatusCode, body: &Value) -> MockResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn with_headers(mut response: MockResponse, headers: HeaderMap) -> MockResponse {
    response.headers_mut().extend(headers);
    response
}
