//! One request's path through the mock: auth, parsing, outage, limits, faults, latency, answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::{HintStyle, MockConfig};
use crate::faults::{draw_fault, Fault};
use crate::meter::{Admission, Ask, Limit, Meter, Refusal};
use crate::stats::{Outcome, Recorder};
use crate::stream::{self, MockBody};

/// The largest request body the mock reads.
const MAX_REQUEST_BODY: usize = 1024 * 1024;

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

/// State shared by every connection of one mock server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) recorder: Recorder,
    start: Instant,
    meter: Mutex<Meter>,
    /// Stream faults drawn so far.
    stream_faults: AtomicU64,
    rng: Mutex<SmallRng>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Shared {
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
            config,
            recorder: Recorder::default(),
            start: Instant::now(),
            meter: Mutex::new(Meter::default()),
            stream_faults: AtomicU64::new(0),
        }
    }
}

type MockResponse = Response<MockBody>;

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

    let streamed = json["stream"] == Value::Bool(true);
    let (fault, jitter, share, stream_fault) = {
        let mut rng = shared.rng.lock().unwrap_or_else(|p| p.into_inner());
        let fault = draw_fault(&mut *rng, &shared.config.faults);
        let jitter_ms = shared.config.latency_jitter.as_millis() as u64;
        let jitter = Duration::from_millis(rng.random_range(0..=jitter_ms));
        let share = shared
            .config
            .output_share
            .map(|(low, high)| rng.random_range(low..=high.max(low)));
        // Only streamed requests draw a stream fault: the others' draws stay as they were.
        let faults = &shared.config.stream_faults;
        let stream_fault = streamed
            .then(|| stream::draw(&mut *rng, faults))
            .flatten()
            .filter(|_| {
                let drawn = shared.stream_faults.fetch_add(1, Ordering::Relaxed);
                faults.max.is_none_or(|max| drawn < max)
            });
        (fault, jitter, share, stream_fault)
    };

    let prompt = prompt_tokens(&json);
    let max_tokens = max_tokens(&json);
    let cached = (prompt as f64 * shared.config.cache_read_share.clamp(0.0, 1.0)) as u64;
    let ask = Ask {
        combined: max_tokens.max(prompt).max(1),
        input: prompt - cached,
        output: max_tokens,
    };
    let admission = lock(&shared.meter).admit(&shared.config, &key, ask, now);
    let mut headers = HeaderMap::new();
    if shared.config.hints == HintStyle::Full {
        rate_headers(&mut headers, api, &admission, SystemTime::now());
    }
    let (status, body) = match admission.refusal {
        Some(Refusal::TooLarge { limit, capacity }) => {
            let message = format!(
                "Request too large on {}: Limit {capacity}, Requested {}.",
                limit.words(),
                match limit {
                    Limit::InputTokens => ask.input,
                    Limit::OutputTokens => ask.output,
                    _ => ask.combined,
                }
            );
            let status = match api {
                Api::OpenAi => StatusCode::TOO_MANY_REQUESTS,
                Api::Anthropic => StatusCode::PAYLOAD_TOO_LARGE,
            };
            (status, error_body(api, "request_too_large", &message))
        }
        Some(Refusal::Limited { wait, limit }) => {
            hint_headers(&mut headers, shared.config.hints, wait);
            let message = format!(
                "Rate limit reached on {}. Please try again in {:.3}s.",
                limit.words(),
                wait.as_secs_f64()
            );
            let code = match limit {
                Limit::Requests | Limit::RequestsPerDay => "requests",
                _ => "tokens",
            };
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
    let charged = if admission.views[1].1.is_some() {
        ask.combined
    } else {
        0
    };
    let output = match share {
        Some(share) => ((max_tokens as f64 * share).round() as u64).clamp(1, max_tokens.max(1)),
        None => COMPLETION_TOKENS,
    };
    let produced = if fault.is_none() || fault == Some(Fault::MalformedHeaders) {
        output
    } else {
        0
    };
    if streamed && produced > 0 {
        // The head now, the tokens as they are generated; the meters settle when it ends.
        let latency = shared.config.latency + jitter;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if fault == Some(Fault::MalformedHeaders) {
            malformed_headers(&mut headers);
        }
        let plan = stream::Plan {
            anthropic: api == Api::Anthropic,
            model: json["model"].as_str().unwrap_or("mock-model").to_owned(),
            prompt,
            cached,
            output,
            per_token: shared.config.per_output_token,
            fault: stream_fault,
            faults: shared.config.stream_faults.clone(),
            include_usage: json["stream_options"]["include_usage"] == Value::Bool(true),
        };
        let (frames, body) = tokio::sync::mpsc::channel(16);
        let ended = Arc::clone(&shared);
        tokio::spawn(async move {
            let sent = plan.run(frames).await;
            let used = if sent > 0 { prompt + sent } else { 0 };
            lock(&ended.meter).settle(&ended.config, &key, ask, sent, used, Instant::now());
            if sent > 0 {
                ended.recorder.used(prompt, sent);
            }
        });
        shared
            .recorder
            .answered(second, Outcome::Status(200), false, charged);
        let mut response = Response::new(MockBody::Stream(body));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        return Ok(with_headers(response, headers));
    }
    let latency = shared.config.latency + jitter + shared.config.per_output_token * produced as u32;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // The output limit gets back what the answer did not use; the day counts what it did.
    let used = if produced > 0 { prompt + produced } else { 0 };
    lock(&shared.meter).settle(&shared.config, &key, ask, produced, used, Instant::now());
    if produced > 0 {
        shared.recorder.used(prompt, produced);
    }
    let usage = Usage {
        prompt,
        cached,
        output,
    };
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
            (StatusCode::OK, completion(api, &json, usage))
        }
        None => (StatusCode::OK, completion(api, &json, usage)),
    };
    record(Outcome::Status(status.as_u16()));
    Ok(with_headers(json_response(status, &body), headers))
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

/// The request's `max_tokens` (or `max_completion_tokens`), 0 when absent.
fn max_tokens(request: &Value) -> u64 {
    ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|field| request.get(*field).and_then(Value::as_u64))
        .unwrap_or(0)
}

/// The output of an answer when no share of `max_tokens` is drawn.
const COMPLETION_TOKENS: u64 = 8;

/// What an answer used.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Every prompt token.
    prompt: u64,
    /// Of which read from the cache.
    cached: u64,
    output: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn completion(api: Api, request: &Value, usage: Usage) -> Value {
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model");
    let text = "This is the mock provider's answer.";
    let Usage {
        prompt: prompt_tokens,
        cached,
        output: completion_tokens,
    } = usage;
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
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached}
            }
        }),
        Api::Anthropic => json!({
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": prompt_tokens - cached,
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0,
                "output_tokens": completion_tokens
            }
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
    for (limit, view) in admission.views {
        let Some(view) = view else { continue };
        let family = limit.family();
        match api {
            // OpenAI has no input and output limits of its own.
            Api::OpenAi if matches!(limit, Limit::InputTokens | Limit::OutputTokens) => {}
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
    let mut response = Response::new(MockBody::Full(Full::new(Bytes::from(body.to_string()))));
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
