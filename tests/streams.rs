//! Streamed answers through the standard stack over a real hyper-util client, against the mock
//! streaming in Anthropic's and OpenAI's shapes with one fault each, under paused time: the
//! verdict, the retry before the first token (and none after it), the timeouts, the usage
//! settled at the end, and the permit returned when a stream is dropped.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate::classify::{Kind, StreamError};
use tollgate::rate_limit::Rate;
use tollgate::stack::{Policy, StandardLayer};
use tollgate::Provider;
use tollgate_e2e::Body;
use tollgate_mock::{MockConfig, MockServer, StreamFaultMix, StreamFaults};
use tower::{Layer, ServiceExt};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;
type Stack = <StandardLayer as Layer<HttpClient>>::Service;

/// The `provider` preset's stack over the client, and its breaker's handle.
fn preset(provider: Provider) -> (Stack, tollgate::circuit_breaker::CircuitBreakerHandle) {
    let layer = StandardLayer::new(&Policy::preset(provider)).unwrap();
    let breaker = layer.breaker_handle();
    (layer.layer(http_client()), breaker)
}

/// A streamed request of `max_tokens` to `mock` through `stack`, up to its response head.
async fn send(
    stack: Stack,
    mock: &MockServer,
    provider: Provider,
    max_tokens: u64,
) -> http::Response<impl http_body::Body<Data = Bytes, Error = tollgate::BoxError>> {
    stack
        .oneshot(streamed(&mock.url(), provider, max_tokens))
        .await
        .unwrap()
}

/// hyper-util's client without keeping idle connections: a stream dropped before its end leaves
/// a connection that, under the paused clock, the pool could hand to the next attempt before it
/// has read the rest (with real time it never shows); a fresh connection per request keeps the
/// tests about the streams.
fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

fn streamed(url: &str, provider: Provider, max_tokens: u64) -> Request<Body> {
    let (path, model) = match provider {
        Provider::Anthropic => ("/v1/messages", "claude-haiku-4-5"),
        _ => ("/v1/chat/completions", "gpt-4o-mini"),
    };
    let body = serde_json::json!({
        "model": model,
        "max_tokens": max_tokens,
        "stream": true,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    });
    let mut request = Request::post(format!("{url}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    provider.authorize(&mut request, "sk-test").unwrap();
    request
}

/// A mock whose first stream has `fault`, the others none.
async fn mock_with(fault: fn(&mut StreamFaultMix)) -> MockServer {
    let mut mix = StreamFaultMix::none();
    fault(&mut mix);
    MockServer::spawn(MockConfig {
        output_share: Some((0.1, 0.1)),
        stream_faults: StreamFaults {
            rate: 1.0,
            mix,
            max: Some(1),
            ..StreamFaults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// What a stream read to its end gave: its text bytes, or the error it ended with.
async fn read<B>(body: B) -> Result<String, tollgate::BoxError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tollgate::BoxError>,
{
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn stream_error(error: &tollgate::BoxError) -> &StreamError {
    error
        .downcast_ref::<StreamError>()
        .unwrap_or_else(|| panic!("a stream error, not {error}"))
}

#[tokio::test(start_paused = true)]
async fn an_error_event_before_the_first_token_is_retried_transparently() {
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let mock = mock_with(|m| m.error_before_first_token = 1).await;
        let (stack, breaker) = preset(provider);
        let response = send(stack, &mock, provider, 100).await;
        assert_eq!(response.status(), 200);
        let text = read(response.into_body()).await.unwrap();
        assert_eq!(
            text.matches("tok ").count(),
            10,
            "{provider}: the whole answer"
        );
        assert_eq!(
            mock.stats().requests,
            2,
            "{provider}: the failed attempt and its retry {:?}",
            mock.stats()
        );
        let snapshot = breaker.snapshot();
        assert_eq!(
            (snapshot.failures, snapshot.successes),
            (1, 1),
            "{provider}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_error_event_after_the_first_token_ends_the_body_and_is_not_replayed() {
    let mock = mock_with(|m| m.error_after_first_token = 1).await;
    let (stack, breaker) = preset(Provider::Anthropic);
    let response = send(stack, &mock, Provider::Anthropic, 100).await;
    let error = read(response.into_body()).await.unwrap_err();
    let error = stream_error(&error);
    assert_eq!(error.classification().kind(), Kind::Overloaded);
    assert_eq!(error.message(), "Overloaded");
    assert_eq!(mock.stats().requests, 1, "after the first token, no retry");
    assert_eq!(
        breaker.snapshot().failures,
        1,
        "the breaker counts it as the failure it is"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stall_before_the_first_token_times_out_and_is_retried() {
    let mock = mock_with(|m| m.stall_before_first_token = 1).await;
    let (stack, _) = preset(Provider::Anthropic);
    let started = tokio::time::Instant::now();
    let response = send(stack, &mock, Provider::Anthropic, 50).await;
    let text = read(response.into_body()).await.unwrap();
    assert_eq!(text.matches("tok ").count(), 5);
    assert_eq!(mock.stats().requests, 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(70),
        "the preset's first-event timeout, then the retry: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stall_in_the_middle_times_out_on_the_body() {
    let mock = mock_with(|m| m.stall_mid_stream = 1).await;
    let (stack, _) = preset(Provider::OpenAi);
    let response = send(stack, &mock, Provider::OpenAi, 100).await;
    let started = tokio::time::Instant::now();
    let error = read(response.into_body()).await.unwrap_err();
    assert_eq!(stream_error(&error).classification().kind(), Kind::Timeout);
    assert!(started.elapsed() >= Duration::from_secs(60));
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_or_a_truncated_end_is_a_broken_stream() {
    for fault in [
        (|m: &mut StreamFaultMix| m.disconnect_mid_stream = 1) as fn(&mut StreamFaultMix),
        |m| m.truncated_final_event = 1,
    ] {
        let mock = mock_with(fault).await;
        let (stack, breaker) = preset(Provider::Anthropic);
        let response = send(stack, &mock, Provider::Anthropic, 100).await;
        let read = read(response.into_body()).await;
        assert!(read.is_err(), "{read:?} {:?}", mock.stats());
        assert_eq!(breaker.snapshot().failures, 1, "a connection failure");
        assert_eq!(mock.stats().requests, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_within_the_timeout_is_waited_for() {
    let mock = mock_with(|m| m.slow_first_token = 1).await;
    let (stack, _) = preset(Provider::Anthropic);
    let started = tokio::time::Instant::now();
    let response = send(stack, &mock, Provider::Anthropic, 100).await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "held until the first token"
    );
    assert_eq!(
        read(response.into_body())
            .await
            .unwrap()
            .matches("tok ")
            .count(),
        10
    );
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn the_streams_usage_settles_the_output_limit_and_a_dropped_stream_frees_its_permit() {
    let mock = mock_with(|_| {}).await;
    let mut policy = Policy::preset(Provider::Anthropic);
    policy.limits.output_tokens = Some(Rate::per_minute(6_000).with_burst(1_000));
    policy.limits.concurrency = Some(1);
    let layer = StandardLayer::new(&policy).unwrap();
    let limiter = layer.limit_handle();
    let stack = layer.layer(http_client());
    let response = stack
        .clone()
        .oneshot(streamed(&mock.url(), Provider::Anthropic, 400))
        .await
        .unwrap();
    assert_eq!(limiter.snapshot().output_tokens_available, Some(600));
    read(response.into_body()).await.unwrap();
    // 40 tokens really came (a tenth of max_tokens): the other 360 are back.
    assert_eq!(limiter.snapshot().output_tokens_available, Some(960));
    assert_eq!(limiter.snapshot().in_flight, 0);
    // A stream dropped half-way gives its permit back, and keeps its reservation.
    let response = stack
        .clone()
        .oneshot(streamed(&mock.url(), Provider::Anthropic, 400))
        .await
        .unwrap();
    assert_eq!(limiter.snapshot().in_flight, 1);
    drop(response);
    assert_eq!(limiter.snapshot().in_flight, 0);
    let next = tokio::time::timeout(
        Duration::from_secs(1),
        stack.oneshot(streamed(&mock.url(), Provider::Anthropic, 10)),
    )
    .await;
    assert!(next.is_ok(), "the permit is free for the next request");
}
