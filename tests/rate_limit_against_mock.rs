//! RateLimitLayer over a real hyper-util client against the mock provider enforcing the same
//! limits: no 429 at all, from 64 concurrent tasks.

use std::time::Duration;

use http_body_util::BodyExt;
use tollgate::classify::ClassifyLayer;
use tollgate::rate_limit::Rate;
use tollgate::rate_limit::RateLimitLayer;
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{MockConfig, MockServer};
use tower::{ServiceBuilder, ServiceExt};

async fn run(config: MockConfig, layer: RateLimitLayer, requests: usize) -> tollgate_mock::Stats {
    let server = MockServer::spawn(config).await.unwrap();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(http_client());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (stack, url, next) = (stack.clone(), server.url(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                    let response = stack
                        .clone()
                        .oneshot(chat_request(&url, "k", "hello", 100))
                        .await
                        .unwrap();
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    server.stats()
}

#[tokio::test(start_paused = true)]
async fn two_thousand_requests_from_64_tasks_draw_no_429() {
    let config = MockConfig {
        rpm: Some(30_000),
        burst: Some(50),
        ..MockConfig::default()
    };
    let layer = RateLimitLayer::builder()
        .requests(Rate::per_minute(30_000).with_burst(50))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let stats = run(config, layer, 2_000).await;
    assert_eq!(stats.requests, 2_000);
    assert_eq!(stats.status(429), 0);
    assert_eq!(stats.successes(), 2_000);
    // 50 at once, then 500 per second: (2,000 - 50) / 500 = 3.9 s, plus the headroom.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(3_900),
        "never faster than the limit: {elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn token_limit_draws_no_429_either() {
    let config = MockConfig {
        tpm: Some(600_000),
        token_burst: Some(5_000),
        ..MockConfig::default()
    };
    let layer = RateLimitLayer::builder()
        .tokens(Rate::per_minute(600_000).with_burst(5_000))
        .build()
        .unwrap();
    let stats = run(config, layer, 1_000).await;
    assert_eq!(stats.status(429), 0);
    assert_eq!(stats.successes(), 1_000);
    assert_eq!(
        stats.tokens_charged, 100_000,
        "each request charged its max_tokens"
    );
}
