//! Metrics of the standard stack, exported for Prometheus: a short batch against the mock
//! provider (with a tight limit and some faults), then the scrape output.
//!
//! `cargo run --example metrics`. tollgate reports through the `metrics` crate's facade (feature
//! `metrics`), so any exporter works; this one renders the Prometheus text format.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::{BoxError, Provider};
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let mock = MockServer::spawn(MockConfig {
        rpm: Some(1_200),
        burst: Some(5),
        faults: Faults {
            rate: 0.2,
            mix: FaultMix::server_errors_only(),
            ..Faults::default()
        },
        seed: 5,
        ..MockConfig::default()
    })
    .await?;
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.requests = Some(Rate::per_minute(1_200).with_burst(5));
    policy.retry.base = Duration::from_millis(50);
    let stack = policy.layer()?.layer(http_client());
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let (stack, url) = (stack.clone(), mock.url());
            tokio::spawn(async move {
                stack
                    .oneshot(chat_request(&url, "sk-demo", &format!("prompt {i}"), 8))
                    .await
            })
        })
        .collect();
    for call in calls {
        let _ = call.await?;
    }
    println!("{}", prometheus.render());
    Ok(())
}
