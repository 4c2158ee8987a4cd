//! One client, two providers, policies from a config file, and JSON logs of every retry and
//! limit event in a file.
//!
//! `cargo run --example from_config [providers.toml]` (default: `examples/providers.toml`). The
//! requests go to two in-process mock providers, picked by the `RouteTo` extension (both listen
//! on 127.0.0.1; against real providers the request's host picks the route). The logs are
//! written to `tollgate-events.jsonl` in the current directory.

use std::time::Duration;

use tollgate::config::Config;
use tollgate::stack::{RouteLayer, RouteTo};
use tollgate::BoxError;
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/providers.toml").to_owned()
    });
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    let log = std::fs::File::create("tollgate-events.jsonl")?;
    // tollgate's events only: retries, limit waits and adaptations, breaker changes.
    use tracing_subscriber::layer::{Layer as _, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let only_tollgate =
        tracing_subscriber::filter::Targets::new().with_target("tollgate", tracing::Level::DEBUG);
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(std::sync::Mutex::new(log));
    tracing_subscriber::registry()
        .with(json.with_filter(only_tollgate))
        .init();

    let faulty = |seed| MockConfig {
        faults: Faults {
            rate: 0.2,
            mix: FaultMix::server_errors_only(),
            ..Faults::default()
        },
        latency: Duration::from_millis(20),
        seed,
        ..MockConfig::default()
    };
    let openai = MockServer::spawn(MockConfig {
        rpm: Some(600),
        burst: Some(10),
        ..faulty(1)
    })
    .await?;
    let claude = MockServer::spawn(MockConfig {
        rpm: Some(300),
        burst: Some(5),
        ..faulty(2)
    })
    .await?;
    let routes = RouteLayer::from_config(&config)?;
    let client = routes.layer(http_client());

    let calls: Vec<_> = (0..60)
        .map(|i| {
            let (route, url) = if i % 2 == 0 {
                ("openai", openai.url())
            } else {
                ("claude", claude.url())
            };
            let mut request = chat_request(&url, "sk-demo", &format!("prompt {i}"), 64);
            request.extensions_mut().insert(RouteTo::new(route));
            let client = client.clone();
            tokio::spawn(async move {
                (
                    route,
                    client.oneshot(request).await.map(|r| r.status().as_u16()),
                )
            })
        })
        .collect();
    let mut ok = std::collections::BTreeMap::<&str, u32>::new();
    for call in calls {
        if let (route, Ok(200)) = call.await? {
            *ok.entry(route).or_default() += 1;
        }
    }
    println!("successes by route: {ok:?}");
    println!(
        "provider saw: openai {} requests, claude {} requests",
        openai.stats().requests,
        claude.stats().requests
    );
    println!("events logged as JSON lines in tollgate-events.jsonl");
    Ok(())
}
