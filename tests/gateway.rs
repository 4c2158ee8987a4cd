//! The axum gateway example's core path, over real sockets: forwards to the mock provider,
//! and answers refusals with its own 429/503 and `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_e2e::{chat_request, gateway, http_client};
use tollgate_mock::{MockConfig, MockServer};
use tower::Layer;

async fn send(gateway: &str) -> (u16, Option<String>, serde_json::Value) {
    let response = http_client()
        .request(chat_request(gateway, "sk-test", "hi", 8))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry_after, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn forwards_through_the_stack_and_refuses_clearly() {
    let mock = MockServer::spawn(MockConfig {
        api_key: Some("sk-test".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.requests = Some(Rate::per_minute(60).with_burst(2));
    policy.limits.max_wait = Some(Duration::from_millis(100));
    policy.retry.deadline = Some(Duration::from_millis(500));
    let layer = policy.layer().unwrap();
    let breaker = layer.breaker_handle();
    let app = gateway::router(layer.layer(http_client()), mock.url().parse().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, _, body) = send(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");

    // A malformed body never reaches the provider: the gateway answers 400 in its shape.
    let mut request = chat_request(&url, "sk-test", "hi", 8);
    *request.body_mut() = Full::new(Bytes::from_static(b"{oops"));
    let response = http_client().request(request).await.unwrap();
    assert_eq!(response.status(), 400);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(mock.stats().requests, 1);
    let (status, _, body) = send(&url).await;
    assert_eq!(status, 200, "{body}");

    // The burst of 2 is spent and one request comes per second: the next would wait a second,
    // more than the 100 ms allowed.
    let (status, retry_after, body) = send(&url).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rate limited on requests"));

    breaker.isolate();
    let (status, _, body) = send(&url).await;
    assert_eq!(status, 503);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("isolated"));
    assert_eq!(
        mock.stats().requests,
        2,
        "refused requests never reached the provider"
    );
}

#[tokio::test]
async fn streams_pass_through_as_they_come_and_refusals_take_the_providers_shape() {
    // 10 tokens, 30 ms apart: a gateway that buffered would hand the first after the last.
    let mock = MockServer::spawn(MockConfig {
        output_share: Some((0.1, 0.1)),
        per_output_token: Duration::from_millis(30),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut policy = Policy::preset(Provider::Anthropic);
    policy.limits.requests = Some(Rate::per_minute(60).with_burst(1));
    policy.limits.adaptive = None;
    policy.limits.max_wait = Some(Duration::from_millis(100));
    // The refusal's hint is longer than the deadline: the retry layer gives up on it at once.
    policy.retry.deadline = Some(Duration::from_millis(200));
    let app = gateway::router(
        policy.layer().unwrap().layer(http_client()),
        mock.url().parse().unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let message = |url: &str| {
        let body = serde_json::json!({"model": "claude-haiku-4-5", "max_tokens": 100,
            "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        http::Request::post(format!("{url}/v1/messages"))
            .header("x-api-key", "sk-test")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    let started = std::time::Instant::now();
    let response = http_client().request(message(&url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut first_token = None;
    let mut tokens = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let text = String::from_utf8_lossy(data);
        tokens += text.matches("tok ").count();
        if tokens > 0 && first_token.is_none() {
            first_token = Some(started.elapsed());
        }
    }
    let whole = started.elapsed();
    let first_token = first_token.unwrap();
    assert_eq!(tokens, 10);
    assert!(
        first_token * 3 < whole,
        "the first token came at {first_token:?}, the end at {whole:?}: passed through, not buffered"
    );

    // A lane the gateway cannot read is the client's error, said in its provider's shape.
    let mut bad = message(&url);
    bad.headers_mut()
        .insert("x-tollgate-priority", "urgent".parse().unwrap());
    let response = http_client().request(bad).await.unwrap();
    assert_eq!(response.status(), 400);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // The burst is spent: refused before the first byte, in Anthropic's error shape.
    let response = http_client().request(message(&url)).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}
