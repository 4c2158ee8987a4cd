//! The from_config example's core path: the bundled config file loads, and one client routes
//! to two providers with separate quotas over real sockets.

use tollgate::config::Config;
use tollgate::stack::{RouteLayer, RouteTo};
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{MockConfig, MockServer};
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn the_bundled_config_routes_two_providers_with_their_own_limits() {
    let config = Config::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/providers.toml"
    ))
    .unwrap();
    assert_eq!(
        config.providers["claude"].retry.max_attempts, 6,
        "the Anthropic preset underneath"
    );
    let openai = MockServer::spawn(MockConfig {
        rpm: Some(600),
        burst: Some(10),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let claude = MockServer::spawn(MockConfig {
        rpm: Some(300),
        burst: Some(5),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let routes = RouteLayer::from_config(&config).unwrap();
    let client = routes.layer(http_client());
    let started = tokio::time::Instant::now();
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let (route, url) = if i % 2 == 0 {
                ("openai", openai.url())
            } else {
                ("claude", claude.url())
            };
            let mut request = chat_request(&url, "k", "hi", 16);
            request.extensions_mut().insert(RouteTo::new(route));
            tokio::spawn(client.clone().oneshot(request))
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!((openai.stats().requests, claude.stats().requests), (20, 20));
    assert_eq!(
        openai.stats().status(429) + claude.stats().status(429),
        0,
        "each route kept its provider's limit"
    );
    // Claude's 20 at 300/min after a burst of 5 take about 3 s; OpenAI's alone would take 1 s.
    assert!(
        started.elapsed().as_secs_f64() >= 2.9,
        "{:?}",
        started.elapsed()
    );
}
