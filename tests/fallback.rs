//! Fallback chains end to end: two mocks over loopback (the primary with an outage, the
//! secondary healthy), the standard stack for each, paused time. Every request succeeds; the
//! served-by records show the switch, the primary probed again and used once it recovers; a
//! model is rewritten for the secondary; a bad key and a too-long prompt behave as they should.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate::fallback::{FallbackLayer, ServedBy, Target};
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_e2e::Body;
use tollgate_mock::{Faults, MockConfig, MockServer};
use tower::{Layer, ServiceExt};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// hyper-util without idle connections (see `tests/streams.rs`).
fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

fn chat(model: &str) -> Request<Body> {
    let body = serde_json::json!({"model": model, "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]});
    Request::post("http://placeholder/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn policy() -> Policy {
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.retry.max_attempts = 2;
    policy.retry.base = Duration::from_millis(20);
    policy.breaker.consecutive_failures = Some(2);
    policy.breaker.break_duration = Duration::from_secs(2);
    policy
}

/// The primary, then the secondary (asked for `model` when given), each with its own stack.
fn chain_of(
    primary: &MockServer,
    secondary: &MockServer,
    model: Option<&str>,
) -> tollgate::fallback::Fallback<<tollgate::stack::StandardLayer as Layer<HttpClient>>::Service> {
    let second = Target::new("secondary", &secondary.url()).unwrap();
    let second = match model {
        Some(model) => second.model(model),
        None => second,
    };
    FallbackLayer::new(vec![
        (
            Target::new("primary", &primary.url()).unwrap(),
            policy().layer().unwrap(),
        ),
        (second, policy().layer().unwrap()),
    ])
    .unwrap()
    .layer(http_client())
}

#[tokio::test(start_paused = true)]
async fn a_batch_rides_out_the_primarys_outage_and_comes_back_to_it() {
    let primary = MockServer::spawn(MockConfig {
        faults: Faults {
            outages: vec![(Duration::ZERO, Duration::from_secs(3))],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let secondary = MockServer::spawn(MockConfig::default()).await.unwrap();
    let chain = chain_of(&primary, &secondary, Some("gpt-4o"));
    let mut served = Vec::new();
    for _ in 0..32 {
        let response = chain.clone().oneshot(chat("gpt-4o-mini")).await.unwrap();
        assert_eq!(response.status(), 200);
        let by = response.extensions().get::<ServedBy>().unwrap().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if by.index == 1 {
            assert_eq!(
                body["model"], "gpt-4o",
                "the secondary is asked for its model"
            );
            assert!(!by.skipped.is_empty());
        }
        served.push(by);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let by_secondary = served.iter().filter(|s| s.index == 1).count();
    assert!(
        by_secondary >= 8,
        "the outage's three seconds went to the secondary: {by_secondary}"
    );
    assert!(
        served[served.len() - 8..].iter().all(|s| s.index == 0),
        "back on the primary once it recovered"
    );
    let reasons: Vec<&str> = served
        .iter()
        .flat_map(|s| s.skipped.iter().map(|k| k.reason))
        .collect();
    assert!(reasons.contains(&"gave_up_server_error"), "{reasons:?}");
    assert!(reasons.contains(&"breaker_open"), "{reasons:?}");
}

#[tokio::test(start_paused = true)]
async fn a_bad_key_is_not_a_reason_to_move_on() {
    let primary = MockServer::spawn(MockConfig {
        api_key: Some("sk-other".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let secondary = MockServer::spawn(MockConfig::default()).await.unwrap();
    let chain = chain_of(&primary, &secondary, None);
    let response = chain.oneshot(chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(secondary.stats().requests, 0);
}

#[tokio::test]
async fn the_gateway_says_which_target_served() {
    let primary = MockServer::spawn(MockConfig {
        faults: Faults {
            outages: vec![(Duration::ZERO, Duration::from_secs(3600))],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let secondary = MockServer::spawn(MockConfig::default()).await.unwrap();
    let chain = chain_of(&primary, &secondary, None);
    let app = tollgate_e2e::gateway::router(chain, "http://unused.invalid".parse().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = http_client()
        .request(tollgate_e2e::chat_request(&url, "sk-test", "hi", 8))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-served-by"], "secondary");
}
