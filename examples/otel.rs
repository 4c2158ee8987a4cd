//! The spans of a request through `tollgate serve`'s gateway, exported with OpenTelemetry (here
//! to stdout; swap in the OTLP exporter for a collector): one `gateway.request` span (client,
//! provider, model, estimated tokens, status, attempts) and under it one `tollgate.attempt` span
//! per attempt (its number, the wait before it, its verdict).
//!
//! `cargo run --features otel --example otel`: the mock provider fails the first attempt with a
//! 503, so the trace shows the request, the failed attempt and the retry that succeeded.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tollgate::stack::Policy;
use tollgate::{BoxError, Provider};
use tollgate_mock::{Faults, MockConfig, MockServer};
use tollgate_serve::{ClientKey, Gateway};
use tower::Layer;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tollgate")));
    tracing::subscriber::set_global_default(subscriber)?;

    // Every request fails for the first 100 ms: the first attempt meets the outage.
    let mock = MockServer::spawn(MockConfig {
        faults: Faults {
            outages: vec![(Duration::ZERO, Duration::from_millis(100))],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await?;
    let stack = Policy::preset(Provider::OpenAi)
        .layer()?
        .layer(tollgate_serve::upstream_client());
    let gateway = Gateway::builder(Provider::OpenAi, &mock.url())
        .provider_key("sk-example")
        .client(ClientKey::new("web", "gw-web-0123456789")?)
        .build(stack)?;
    let request = http::Request::post("/v1/chat/completions")
        .header("authorization", "Bearer gw-web-0123456789")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","max_tokens":32,"messages":[{"role":"user","content":"hi"}]}"#,
        )))?;
    let answer = gateway.handle(request).await;
    eprintln!("answer: {}", answer.status());
    provider.shutdown()?;
    Ok(())
}
