//! The same batch of AI requests, twice, against a mock provider that enforces 20 requests per
//! second and injects faults: once the naive way (retry after a fixed sleep, as the seed
//! articles' first attempt does), once through tollgate's four layers. Prints both side by side.
//!
//! Run it with `cargo run --release --example demo`. No API key or network needed.

use std::time::{Duration, Instant};

use tollgate::circuit_breaker::{Trip, Window};
use tollgate::rate_limit::Rate;
use tollgate::{BackoffRetryLayer, BoxError, CircuitBreakerLayer, ClassifyLayer, RateLimitLayer};
use tollgate_e2e::{chat_request, drive, http_client, naive_send, send_ok};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::ServiceBuilder;

const REQUESTS: u64 = 120;
const WORKERS: usize = 16;
const RPM: u32 = 1_200;
const BURST: u32 = 10;
const KEY: &str = "sk-demo";

fn provider() -> MockConfig {
    MockConfig {
        rpm: Some(RPM),
        burst: Some(BURST),
        latency: Duration::from_millis(30),
        latency_jitter: Duration::from_millis(20),
        faults: Faults {
            rate: 0.1,
            mix: FaultMix {
                reset: 1,
                ..FaultMix::server_errors_only()
            },
            ..Faults::default()
        },
        seed: 7,
        ..MockConfig::default()
    }
}

struct Report {
    name: &'static str,
    completed: u64,
    wall: Duration,
    attempts: u64,
    rate_limited: u64,
}

/// Fire, and on anything but a 200 sleep one second and try again, five attempts at most.
async fn naive(server: &MockServer) -> u64 {
    let (client, url) = (http_client(), server.url());
    drive(REQUESTS, WORKERS, move || {
        naive_send(client.clone(), url.clone(), 5, Duration::from_secs(1))
    })
    .await
    .successes
}

/// The same work through tollgate: four lines of `ServiceBuilder`.
async fn with_tollgate(server: &MockServer) -> Result<u64, BoxError> {
    let stack = ServiceBuilder::new()
        .layer(
            BackoffRetryLayer::builder()
                .max_attempts(6)
                .base(Duration::from_millis(250))
                .build()?,
        )
        .layer(
            CircuitBreakerLayer::builder()
                .trip(Trip::FailureRatio {
                    ratio: 0.5,
                    window: Window::Count(50),
                    min_calls: 20,
                })
                .break_duration(Duration::from_secs(2))
                .build()?,
        )
        .layer(
            RateLimitLayer::builder()
                .requests(Rate::per_minute(u64::from(RPM)).with_burst(u64::from(BURST)))
                .build()?,
        )
        .layer(ClassifyLayer::new())
        .service(http_client());
    let url = server.url();
    let run = drive(REQUESTS, WORKERS, move || {
        send_ok(
            stack.clone(),
            chat_request(&url, KEY, "Classify this email.", 16),
        )
    })
    .await;
    Ok(run.successes)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let ideal =
        Duration::from_secs_f64((REQUESTS - u64::from(BURST)) as f64 / (f64::from(RPM) / 60.0));
    println!(
        "{REQUESTS} requests from {WORKERS} workers to a mock provider allowing {} requests/s (burst {BURST}),\n\
         with 10% injected faults (500/502/503/504/529 and connection resets). Ideal time: {:.1}s.\n",
        RPM / 60,
        ideal.as_secs_f64()
    );
    let mut reports = Vec::new();
    for name in ["naive: fixed 1 s sleep", "tollgate: 4 layers"] {
        let server = MockServer::spawn(provider()).await?;
        let started = Instant::now();
        let completed = if name.starts_with("naive") {
            naive(&server).await
        } else {
            with_tollgate(&server).await?
        };
        let wall = started.elapsed();
        let stats = server.stats();
        reports.push(Report {
            name,
            completed,
            wall,
            attempts: stats.requests,
            rate_limited: stats.status(429),
        });
        server.shutdown().await;
    }
    println!("| approach | completed | lost | 429s drawn | attempts sent | wall time | vs ideal |");
    println!("|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} | {} | {} | {} | {:.1}s | {:.2}x |",
            r.name,
            r.completed,
            REQUESTS - r.completed,
            r.rate_limited,
            r.attempts,
            r.wall.as_secs_f64(),
            r.wall.as_secs_f64() / ideal.as_secs_f64()
        );
    }
    Ok(())
}
