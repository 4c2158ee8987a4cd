//! The mock provider over real loopback HTTP: limits, auth, parsing, faults and counters.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tollgate_mock::{FaultMix, Faults, HintStyle, MockConfig, MockServer};

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// One request on a fresh connection; `Err` when the server closed it without an answer.
async fn post(
    server: &MockServer,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Result<Answer, hyper::Error> {
    let stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect to the mock");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::post(path).header("host", "127.0.0.1");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

fn chat(max_tokens: u64) -> String {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test(start_paused = true)]
async fn request_limit_admits_burst_then_refill_rate() {
    let server = MockServer::spawn(MockConfig {
        rpm: Some(600),
        burst: Some(10),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (mut ok, mut limited) = (0, 0);
    // As fast as it can for 2 seconds: one request every 10 ms of virtual time, 201 in all.
    for _ in 0..=200 {
        let answer = post(&server, "/v1/chat/completions", Some("k"), &chat(1))
            .await
            .unwrap();
        match answer.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert!(answer.headers.contains_key("retry-after"));
                assert!(answer.headers.contains_key("retry-after-ms"));
                assert_eq!(answer.body["error"]["code"], "rate_limit_exceeded");
            }
            other => panic!("unexpected status {other}"),
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    assert_eq!(ok, 10 + 20, "burst of 10 plus 10/s for 2 s");
    assert_eq!(limited, 201 - 30);
    let stats = server.stats();
    assert_eq!(stats.requests, 201);
    assert_eq!(stats.limited, 171);
    assert_eq!(stats.successes(), 30);
}

#[tokio::test(start_paused = true)]
async fn token_limit_charges_max_tokens_and_reports_headers() {
    let server = MockServer::spawn(MockConfig {
        tpm: Some(6_000),
        token_burst: Some(1_000),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut ok = 0;
    for _ in 0..=200 {
        let answer = post(&server, "/v1/chat/completions", Some("k"), &chat(100))
            .await
            .unwrap();
        if answer.status == StatusCode::OK {
            ok += 1;
            assert_eq!(
                answer.headers["x-ratelimit-limit-tokens"], "6000",
                "the limit per minute, as OpenAI reports it"
            );
        } else {
            assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(answer.body["error"]["type"], "tokens");
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    // 1,000 tokens of burst is 10 requests; 100 tokens/s refill is one more per second.
    assert_eq!(ok, 10 + 2);
    assert_eq!(server.stats().tokens_charged, 1_200);
}

#[tokio::test(start_paused = true)]
async fn request_larger_than_the_token_bucket_is_refused_as_too_large() {
    let server = MockServer::spawn(MockConfig {
        tpm: Some(1_000),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let answer = post(&server, "/v1/chat/completions", Some("k"), &chat(5_000))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request too large"));
}

#[tokio::test]
async fn keys_and_bodies_are_checked() {
    let server = MockServer::spawn(MockConfig {
        api_key: Some("sk-right".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let none = post(&server, "/v1/chat/completions", None, &chat(1))
        .await
        .unwrap();
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let wrong = post(&server, "/v1/chat/completions", Some("sk-wrong"), &chat(1))
        .await
        .unwrap();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let malformed = post(
        &server,
        "/v1/chat/completions",
        Some("sk-right"),
        "{not json",
    )
    .await
    .unwrap();
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let ok = post(&server, "/v1/chat/completions", Some("sk-right"), &chat(1))
        .await
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["usage"]["prompt_tokens"], 1);
    assert_eq!(ok.body["choices"][0]["message"]["role"], "assistant");
    let stats = server.stats();
    assert_eq!(
        (stats.status(401), stats.status(400), stats.status(200)),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn anthropic_route_answers_with_anthropic_shapes_and_headers() {
    let server = MockServer::spawn(MockConfig {
        rpm: Some(50),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let body = json!({"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}]});
    let answer = post(&server, "/v1/messages", Some("k"), &body.to_string())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["type"], "message");
    assert_eq!(answer.body["usage"]["input_tokens"], 3);
    assert_eq!(answer.headers["anthropic-ratelimit-requests-limit"], "50");
    assert_eq!(
        answer.headers["anthropic-ratelimit-requests-remaining"],
        "49"
    );
    let reset = answer.headers["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap();
    assert!(humantime_like(reset), "RFC 3339 reset, got {reset}");
}

fn humantime_like(value: &str) -> bool {
    value.len() == 20 && value.as_bytes()[10] == b'T' && value.ends_with('Z')
}

async fn statuses(seed: u64, count: usize) -> Vec<Option<u16>> {
    let server = MockServer::spawn(MockConfig {
        seed,
        faults: Faults {
            rate: 0.5,
            mix: FaultMix {
                hang: 0,
                ..FaultMix::default()
            },
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..count {
        let answer = post(&server, "/v1/chat/completions", Some("k"), &chat(1)).await;
        seen.push(answer.ok().map(|a| a.status.as_u16()));
    }
    seen
}

#[tokio::test]
async fn faults_repeat_exactly_from_a_seed() {
    let first = statuses(7, 60).await;
    assert_eq!(first, statuses(7, 60).await);
    assert_ne!(first, statuses(8, 60).await);
    let faults = first.iter().filter(|s| **s != Some(200)).count();
    assert!(
        (15..=45).contains(&faults),
        "about half of 60 are faults, got {faults}"
    );
    assert!(
        first.contains(&None),
        "a reset closes the connection without an answer"
    );
    assert!(first.contains(&Some(529)));
}

#[tokio::test(start_paused = true)]
async fn outage_window_fails_every_request_inside_it() {
    let server = MockServer::spawn(MockConfig {
        faults: Faults {
            outages: vec![(Duration::from_secs(1), Duration::from_secs(2))],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(
            post(&server, "/v1/chat/completions", Some("k"), &chat(1))
                .await
                .unwrap()
                .status
                .as_u16(),
        );
        tokio::time::advance(Duration::from_millis(500)).await;
    }
    assert_eq!(seen, [200, 200, 503, 503, 200, 200]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_only_style_sends_no_rate_limit_headers() {
    let server = MockServer::spawn(MockConfig {
        rpm: Some(60),
        burst: Some(1),
        hints: HintStyle::RetryAfterOnly,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let first = post(&server, "/v1/chat/completions", Some("k"), &chat(1))
        .await
        .unwrap();
    assert!(!first.headers.contains_key("x-ratelimit-remaining-requests"));
    let second = post(&server, "/v1/chat/completions", Some("k"), &chat(1))
        .await
        .unwrap();
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers["retry-after"], "1");
    assert!(!second.headers.contains_key("retry-after-ms"));
}

#[tokio::test]
async fn stats_are_served_as_json() {
    let server = MockServer::spawn(MockConfig::default()).await.unwrap();
    post(&server, "/v1/chat/completions", Some("k"), &chat(1))
        .await
        .unwrap();
    let stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/_mock/stats")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let stats: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["by_status"]["200"], 1);
    assert_eq!(stats["timeline"][0]["ok"], 1);
}

fn messages(max_tokens: u64, prompt_chars: usize) -> String {
    json!({"model": "claude", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "x".repeat(prompt_chars)}]})
    .to_string()
}

#[tokio::test(start_paused = true)]
async fn output_tokens_are_reserved_at_max_tokens_and_given_back_at_the_end() {
    // 800 output tokens per minute, all of it at once; answers use a quarter of max_tokens
    // 400: 100 each.
    let server = MockServer::spawn(MockConfig {
        otpm: Some(800),
        output_share: Some((0.25, 0.25)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut outputs = Vec::new();
    for _ in 0..5 {
        let answer = post(&server, "/v1/messages", Some("k"), &messages(400, 8))
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        outputs.push(answer.body["usage"]["output_tokens"].as_u64().unwrap());
        assert!(answer
            .headers
            .contains_key("anthropic-ratelimit-output-tokens-remaining"));
    }
    assert_eq!(
        outputs, [100; 5],
        "reserving 400 each, 5 fit only if 300 came back"
    );
    // 300 left: a sixth reservation of 400 waits for 100 more, 7.5 s at 13.3 a second.
    let refused = post(&server, "/v1/messages", Some("k"), &messages(400, 8))
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("output tokens per minute"), "{message}");
    let wait: f64 = refused.headers["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((7_450.0..=7_550.0).contains(&wait), "{wait}");
    assert_eq!(server.stats().output_tokens, 500);
}

#[tokio::test(start_paused = true)]
async fn cache_reads_do_not_count_against_the_input_limit() {
    // 1,000 input tokens per minute; prompts of 400 tokens, three quarters read from the cache.
    let server = MockServer::spawn(MockConfig {
        itpm: Some(1_000),
        cache_read_share: 0.75,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for _ in 0..10 {
        let answer = post(&server, "/v1/messages", Some("k"), &messages(10, 1_600))
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "100 uncached tokens each: 10 fit"
        );
        let usage = &answer.body["usage"];
        assert_eq!(usage["input_tokens"], 100);
        assert_eq!(usage["cache_read_input_tokens"], 300);
    }
    let refused = post(&server, "/v1/messages", Some("k"), &messages(10, 1_600))
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("input tokens per minute"));
}

#[tokio::test(start_paused = true)]
async fn a_daily_quota_refuses_until_the_day_ends() {
    let server = MockServer::spawn(MockConfig {
        rpd: Some(3),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for _ in 0..3 {
        let answer = post(&server, "/v1/chat/completions", Some("k"), &chat(5))
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    tokio::time::advance(Duration::from_secs(3600)).await;
    let refused = post(&server, "/v1/chat/completions", Some("k"), &chat(5))
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("requests per day (RPD)"));
    let hint: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(hint, 23 * 3600, "the day ends 23 hours later");
    tokio::time::advance(Duration::from_secs(23 * 3600)).await;
    let next_day = post(&server, "/v1/chat/completions", Some("k"), &chat(5))
        .await
        .unwrap();
    assert_eq!(next_day.status, StatusCode::OK);
}
