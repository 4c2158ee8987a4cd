//! An axum gateway in front of an AI provider: clients send OpenAI-style requests to it, it
//! forwards them through tollgate's standard stack (one quota, one breaker for all clients), and
//! answers with the provider's response or a clear 429/503 with `Retry-After` of its own.
//!
//! `cargo run --example gateway` serves on 127.0.0.1:8080 in front of the in-process mock
//! provider. Set `TOLLGATE_UPSTREAM=https://api.openai.com` to forward to a real provider (the
//! client's own `Authorization` header is forwarded; with `https` you need a TLS connector,
//! see the README).

use std::time::Duration;

use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::{BoxError, Provider};
use tollgate_e2e::{gateway, http_client};
use tollgate_mock::{MockConfig, MockServer};
use tower::Layer;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (upstream, _mock) = match std::env::var("TOLLGATE_UPSTREAM") {
        Ok(url) => (url, None),
        Err(_) => {
            let mock = MockServer::spawn(MockConfig {
                rpm: Some(600),
                ..MockConfig::default()
            })
            .await?;
            (mock.url(), Some(mock))
        }
    };
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.requests = Some(Rate::per_minute(600));
    policy.limits.max_wait = Some(Duration::from_secs(10));
    policy.retry.deadline = Some(Duration::from_secs(60));
    let stack = policy.layer()?.layer(http_client());
    let app = gateway::router(stack, upstream.parse()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("gateway on http://{} -> {upstream}", listener.local_addr()?);
    println!(
        "try: curl -s http://127.0.0.1:8080/v1/chat/completions -H 'authorization: Bearer sk-test' \
         -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
