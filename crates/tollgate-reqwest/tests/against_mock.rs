//! Both adapters end to end against the mock provider over loopback: a failure retried to a
//! success, the quota waited for, an open breaker refusing without sending, the key never in the
//! error's text.

use std::time::Duration;

use bytes::Bytes;
use tollgate::classify::Kind;
use tollgate::retry::RetryError;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_mock::{Faults, MockConfig, MockServer};
use tollgate_reqwest::{ReqwestService, TollgateMiddleware};
use tower::{Layer, ServiceExt};

const BODY: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;

/// Every request fails (503) for the first 300 ms.
async fn mock_with_an_outage() -> MockServer {
    MockServer::spawn(MockConfig {
        faults: Faults {
            outages: vec![(Duration::ZERO, Duration::from_millis(300))],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn policy() -> Policy {
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.retry.max_attempts = 8;
    policy
}

#[tokio::test]
async fn the_middleware_retries_an_outage_to_a_success() {
    let mock = mock_with_an_outage().await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(TollgateMiddleware::new(&policy()).unwrap())
        .build();
    let response = client
        .post(format!("{}/v1/chat/completions", mock.url()))
        .bearer_auth("sk-test")
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    let stats = mock.stats();
    assert!(
        stats.requests >= 2,
        "the outage was met, then retried: {stats:?}"
    );
    assert_eq!(stats.by_status.get(&200), Some(&1));
}

#[tokio::test]
async fn the_middleware_waits_for_the_quota_and_refuses_while_the_breaker_is_open() {
    // One request a second, no burst: the second at once would be refused.
    let mock = MockServer::spawn(MockConfig {
        rpm: Some(60),
        burst: Some(1),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let middleware = TollgateMiddleware::new(&policy()).unwrap();
    let breaker = middleware.layer().breaker_handle();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    let send = || {
        client
            .post(format!("{}/v1/chat/completions", mock.url()))
            .bearer_auth("sk-test-SECRET")
            .body(BODY)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let started = std::time::Instant::now();
    assert_eq!(send().await.unwrap().status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // The first answer's rate-limit headers said the key had nothing left for a second: the
    // stack waited that out instead of drawing the 429.
    assert_eq!(mock.stats().limited, 0);

    breaker.isolate();
    let error = send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("{error:?}")
    };
    let retry = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(retry.last_verdict().kind(), Kind::Rejected);
    assert!(!format!("{error:?} {error}").contains("SECRET"));
    assert_eq!(mock.stats().requests, 2, "refused without sending");
}

#[tokio::test]
async fn reqwest_is_the_transport_under_a_tollgate_stack() {
    let mock = mock_with_an_outage().await;
    let stack = policy()
        .layer()
        .unwrap()
        .layer(ReqwestService::new(reqwest::Client::new()));
    let request = http::Request::post(format!("{}/v1/chat/completions", mock.url()))
        .header("authorization", "Bearer sk-test")
        .body(Bytes::from_static(BODY.as_bytes()))
        .unwrap();
    let response = stack.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(mock.stats().requests >= 2);

    // Nothing listens there: a connection failure, retried, then given up with its verdict.
    let mut policy = policy();
    policy.retry.max_attempts = 2;
    let stack = policy
        .layer()
        .unwrap()
        .layer(ReqwestService::new(reqwest::Client::new()));
    let request = http::Request::post("http://127.0.0.1:9/v1/chat/completions")
        .body(Bytes::from_static(BODY.as_bytes()))
        .unwrap();
    let error = stack.oneshot(request).await.unwrap_err();
    assert_eq!(error.attempts(), 2);
    assert_eq!(error.last_verdict().kind(), Kind::Connection);
}
