//! The `metrics` feature: a batch through the standard stack against the mock provider shows up
//! in a Prometheus scrape, labelled by provider.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::{Layer, ServiceExt};

/// The value of the sample `name{labels}` in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn attempts_retries_429s_waits_and_breaker_state_are_exported() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let mock = MockServer::spawn(MockConfig {
        faults: Faults {
            rate: 0.3,
            mix: FaultMix::server_errors_only(),
            ..Faults::default()
        },
        seed: 9,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut policy = Policy::preset(Provider::Anthropic);
    policy.limits.requests = Some(Rate::per_second(10).with_burst(2));
    policy.retry.base = Duration::from_millis(20);
    let stack = policy.layer().unwrap().layer(http_client());
    for i in 0..20 {
        let response = stack
            .clone()
            .oneshot(chat_request(&mock.url(), "k", &format!("{i}"), 8))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let scrape = handle.render();
    let attempts = sample(&scrape, "tollgate_attempts_total{provider=\"anthropic\"}").unwrap();
    assert_eq!(attempts as u64, mock.stats().requests, "{scrape}");
    assert!(
        sample(
            &scrape,
            "tollgate_retries_total{provider=\"anthropic\",reason=\"server_error\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(
        scrape.contains("tollgate_limiter_wait_seconds"),
        "waits recorded: {scrape}"
    );
    assert!(scrape.contains("tollgate_limiter_queue_length{provider=\"anthropic\"}"));
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_rate_is_exported_as_it_changes() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    // No limit configured: the limiter adapts, starting low and growing while answers succeed.
    let policy = Policy::preset(Provider::OpenAiCompatible);
    let layer = policy.layer().unwrap();
    let limiter = layer.limit_handle();
    let stack = layer.layer(http_client());
    for i in 0..30 {
        let request = chat_request(&mock.url(), "k", &format!("{i}"), 8);
        let response = stack.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let scrape = handle.render();
    let exported = sample(
        &scrape,
        "tollgate_limiter_adaptive_rate{provider=\"openai-compatible\"}",
    )
    .unwrap_or_else(|| panic!("no adaptive rate in {scrape}"));
    let current = limiter.snapshot().adaptive_rate.unwrap();
    assert_eq!(exported, current);
    assert!(current > 10.0, "grew from its initial 10/s: {current}");
}

#[tokio::test(start_paused = true)]
async fn tokens_reserved_used_and_given_back_are_exported() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Answers use a quarter of max_tokens 400.
    let mock = MockServer::spawn(MockConfig {
        output_share: Some((0.25, 0.25)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut policy = Policy::preset(Provider::Anthropic);
    policy.limits.output_tokens = Some(Rate::per_minute(600_000));
    let stack = policy.layer().unwrap().layer(http_client());
    for i in 0..10 {
        let response = stack
            .clone()
            .oneshot(chat_request(&mock.url(), "k", &format!("{i}"), 400))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
    }
    let scrape = handle.render();
    let series = |name: &str| sample(&scrape, name).unwrap_or_else(|| panic!("{name} in {scrape}"));
    assert_eq!(
        series("tollgate_tokens_reserved_total{provider=\"anthropic\",limit=\"output\"}"),
        4_000.0
    );
    assert_eq!(
        series("tollgate_tokens_used_total{provider=\"anthropic\",direction=\"output\"}"),
        1_000.0
    );
    assert_eq!(
        series(
            "tollgate_token_corrections_total{provider=\"anthropic\",limit=\"output\",sign=\"refund\"}"
        ),
        3_000.0
    );
}
